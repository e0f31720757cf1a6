/**
 * Hostile and broken SIP at the edge: each gets a clear error or is dropped, the process keeps
 * serving, the next valid call works, and no binding is lost.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import { newBindingId } from '../../src/nat/binding';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { testMediaConfig } from '../helpers/peers';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';
import { SipStreamClient } from '../helpers/sip-stream-client';

const noSipp = sippUnavailable();
if (noSipp) console.warn(`!!! SKIPPED SIP bad-input tests: ${noSipp}`);
const skip = skipUnlessDrachtio('SIP bad-input tests') || noSipp !== null;

(skip ? describe.skip : describe)('bad SIP input', () => {
  const udpPort = 10060 + (process.pid % 500);
  const tcpPort = udpPort + 1;
  const pbxPort = 9060 + (process.pid % 500);
  let drachtio: RunningDrachtio;
  let edge: SipEdge;
  let relay: Relay;
  const kept = newBindingId();

  beforeAll(async () => {
    drachtio = await startDrachtio({ contacts: [`sip:127.0.0.1:${udpPort};transport=udp`, `sip:127.0.0.1:${tcpPort};transport=tcp`], adminPort: 8022 + (process.pid % 500) });
    relay = new Relay(testMediaConfig());
    const sip = { ...loadConfig({ env: {} }).sip, pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${udpPort}` };
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip });
    await edge.store.put({
      id: kept, aor: 'sip:erin@keylatch.test', contact: '<sip:erin@127.0.0.9:5060>', instance: null, source: { address: '127.0.0.1', port: 5999 },
      transport: 'udp', localSocket: 'udp', lastSeen: Date.now(), expires: Date.now() + 60_000, natted: true, natTests: [], secure: false, upstreamExpires: Date.now() + 3_600_000, keylatch: false,
    });
  });
  afterAll(async () => {
    await edge?.close();
    await relay?.close();
    await drachtio?.stop();
  });

  async function invite(sdp: string, extra: string[] = []): Promise<{ status: number | null; warning: string | undefined }> {
    const c = await SipStreamClient.connect('tcp', '127.0.0.1', tcpPort);
    try {
      const id = Math.random().toString(36).slice(2);
      c.send(['INVITE sip:bob@keylatch.test SIP/2.0', `Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK${id};rport`, `From: <sip:x@keylatch.test>;tag=${id}`,
        'To: <sip:bob@keylatch.test>', `Call-ID: bad-${id}`, 'CSeq: 1 INVITE', 'Contact: <sip:x@127.0.0.1:5060;transport=tcp>', 'Max-Forwards: 70',
        'Content-Type: application/sdp', ...extra], sdp);
      const res = await c.next();
      return { status: res.status, warning: res.headers.get('warning') };
    } finally {
      c.close();
    }
  }

  it.each([
    ['garbage instead of SDP', 'this is not sdp at all'],
    ['SDP with no m-line', 'v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n'],
    ['SDP with no usable media (every port 0)', 'v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n'],
    ['SDP whose c= is a hostname', 'v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n'],
  ])('answers an INVITE with %s with 488 and says why', async (_n, sdp) => {
    const r = await invite(sdp);
    expect(r.status).toBe(488);
    expect(r.warning).toMatch(/keylatch/);
    expect(relay.callCount).toBe(0);
  });

  it('survives garbage datagrams and an oversized message, keeps its bindings, and serves the next request', async () => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1');
    await once(s, 'listening');
    for (const junk of ['\x00\x01\x02', 'INVITE', 'SIP/2.0 200 OK\r\n\r\n', 'REGISTER sip:x SIP/2.0\r\nVia: broken\r\n\r\n', 'A'.repeat(1400)]) s.send(junk, udpPort, '127.0.0.1');
    s.close();
    const c = await SipStreamClient.connect('tcp', '127.0.0.1', tcpPort);
    c.send(['OPTIONS sip:127.0.0.1 SIP/2.0', 'Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKbig;rport', 'From: <sip:x@y>;tag=1', 'To: <sip:y@z>',
      'Call-ID: big-1', 'CSeq: 1 OPTIONS', 'Max-Forwards: 70', `X-Padding: ${'p'.repeat(200_000)}`]);
    await new Promise((r) => setTimeout(r, 300));
    c.close();
    const ok = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-m', '1', '-i', '127.0.0.1', '-p', '0', `127.0.0.1:${udpPort}`]);
    expect(ok.code).toBe(0);
    expect(await edge.store.get(kept)).not.toBeNull();
  });

  it('refuses a REGISTER it cannot parse and keeps the bindings it has', async () => {
    const bad = await runSipp(['-sf', path.join(SCENARIOS, 'bad-register.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1', `127.0.0.1:${udpPort}`]);
    expect(bad.code).toBe(0);
    expect(await edge.store.get(kept)).not.toBeNull();
  });
});
