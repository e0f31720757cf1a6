/**
 * The edge on drachtio's wire protocol when the byte stream goes wrong. A real drachtio-server
 * interleaves two frames under overload (its writes are not queued); drachtio-srf 5.0.29 threw
 * from the socket handler on that and killed the edge. Here a fake drachtio-server feeds the
 * edge frames split at every byte, an interleaved stream, and a frame srf cannot classify; the
 * edge must answer what is well framed, drop and re-establish a connection whose framing is
 * lost, keep its bindings, and never die.
 */
import { randomUUID } from 'node:crypto';
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import { newBindingId } from '../../src/nat/binding';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { wireGuardCounts } from '../../src/sip/wire-guard';
import { FakeDrachtio, frame, sipFrame, type FakeDrachtioConnection } from '../helpers/fake-drachtio';
import { testMediaConfig, waitFor } from '../helpers/peers';

const options = (callId: string): string =>
  [`OPTIONS sip:127.0.0.1:5060 SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.9:5999;branch=z9hG4bK${callId};rport`, 'Max-Forwards: 70',
    `From: <sip:probe@127.0.0.9>;tag=${callId}`, 'To: <sip:127.0.0.1:5060>', `Call-ID: ${callId}`, 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', ''].join('\r\n');

/** The answers the edge sent for a Call-ID on a connection. */
const answers = (c: FakeDrachtioConnection, callId: string): string[] => c.frames.filter((f) => f.includes('SIP/2.0 200') && f.includes(`Call-ID: ${callId}`));

describe('drachtio wire protocol: split, garbled and unknown frames', () => {
  let fake: FakeDrachtio;
  let relay: Relay;
  let edge: SipEdge;
  const kept = newBindingId();

  beforeAll(async () => {
    fake = await FakeDrachtio.start();
    relay = new Relay(testMediaConfig());
    const sip = { ...loadConfig({ env: {} }).sip, pbx: 'sip:127.0.0.2:5070', advertisedAddress: '127.0.0.1:5060' };
    edge = await startSipEdge({ drachtio: fake.admin, relay, sip });
    await edge.store.put({
      id: kept, aor: 'sip:erin@keylatch.test', contact: '<sip:erin@127.0.0.9:5060>', instance: null, source: { address: '127.0.0.9', port: 5999 },
      transport: 'udp', localSocket: 'udp/127.0.0.1:5060', lastSeen: Date.now(), expires: Date.now() + 600_000, natted: true, natTests: [], secure: false,
      upstreamExpires: Date.now() + 3_600_000, keylatch: false,
    });
  });
  afterAll(async () => {
    await edge?.close();
    await relay?.close();
    await fake?.stop();
  });

  it('answers frames split at every byte and several frames in one chunk', async () => {
    const c = await fake.ready('options', 1);
    const ids = [randomUUID(), randomUUID(), randomUUID()];
    const bytes = Buffer.concat(ids.map((id, i) => sipFrame(options(id), { transactionId: `t${i}` })));
    // The first frame a byte at a time, then the other two (and the tail of the first) at once.
    const first = sipFrame(options(ids[0]!), { transactionId: 't0' }).length;
    for (let i = 0; i < first - 1; i++) {
      c.socket.write(bytes.subarray(i, i + 1));
      if (i % 64 === 0) await new Promise((r) => setImmediate(r));
    }
    c.socket.write(bytes.subarray(first - 1));
    await waitFor(() => ids.every((id) => answers(c, id).length === 1), 5000);
    expect(fake.connections).toHaveLength(1);
  });

  it('skips a frame srf cannot handle and answers the next one on the same connection once', async () => {
    const c = await fake.ready('options', 1);
    const before = wireGuardCounts().handlerFailures;
    const id = randomUUID();
    // An unknown message type makes drachtio-srf throw from inside its 'msg' listener.
    c.socket.write(Buffer.concat([frame(`${randomUUID()}|no-such-verb|x`), sipFrame(options(id), { transactionId: 'u1' })]));
    await waitFor(() => answers(c, id).length === 1, 5000);
    await new Promise((r) => setTimeout(r, 200));
    expect(answers(c, id)).toHaveLength(1);
    expect(wireGuardCounts().handlerFailures).toBe(before + 1);
    expect(fake.connections).toHaveLength(1);
  });

  it('drops a connection whose frames interleave, reconnects, and keeps its bindings', async () => {
    const c = await fake.ready('options', 1);
    const before = wireGuardCounts().framingLosses;
    // What drachtio-server writes when its send buffer fills: frame A's start, frame B, A's rest.
    const a = sipFrame(options(randomUUID()), { transactionId: 'a' });
    const b = sipFrame(options(randomUUID()), { transactionId: 'b' });
    c.socket.write(Buffer.concat([a.subarray(0, 200), b, a.subarray(200)]));
    const again = await fake.ready('options', 2, 10_000);
    expect(c.socket.destroyed || c.socket.readableEnded).toBe(true);
    expect(wireGuardCounts().framingLosses).toBe(before + 1);
    // The new connection works, and the binding made before is still there.
    const id = randomUUID();
    again.socket.write(sipFrame(options(id), { transactionId: 'n1' }));
    await waitFor(() => answers(again, id).length === 1, 5000);
    expect(await edge.store.get(kept)).not.toBeNull();
  });

  it('drops a stream of garbage without a length prefix instead of buffering it forever', async () => {
    const c = await fake.ready('options', 2);
    c.socket.write(Buffer.from('this is not a drachtio frame at all, and it has no hash sign'));
    const again = await fake.ready('options', 3, 10_000);
    const id = randomUUID();
    again.socket.write(sipFrame(options(id), { transactionId: 'g1' }));
    await waitFor(() => answers(again, id).length === 1, 5000);
  });
});
