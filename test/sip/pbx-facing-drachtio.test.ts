/**
 * Calls from the PBX through keylatch's PBX-facing drachtio-server (sip.pbxDrachtio), with sipp
 * as PBX and phone on loopback: the PBX's INVITE is answered on the PBX-facing server while the
 * leg toward the phone leaves from the phones' server (bridgeAcross). Early media, UPDATE, BYE
 * from the phone and CANCEL from the PBX must all cross, and every ending frees the relay.
 * test/nat/pbx-setups.test.ts does the same with real phones and a record-routing Kamailio.
 */
import path from 'node:path';
import { newBindingId, type Binding } from '../../src/nat/binding';
import { Peer, waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { exchangeRtp, sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';

const skip = skipSipSuite('PBX-facing drachtio-server tests');

(skip ? describe.skip : describe)('calls from the PBX through a PBX-facing drachtio-server', () => {
  const sipPort = 26060 + (process.pid % 400);
  const pbxSidePort = 26560 + (process.pid % 400);
  const pbxPort = 27060 + (process.pid % 400);
  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp`],
    pbxContacts: [`sip:127.0.0.1:${pbxSidePort};transport=udp`],
    adminPort: 27522 + (process.pid % 200) * 2,
    sip: { pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${pbxSidePort}` },
  });

  const register = async (phonePort: number): Promise<string> => {
    const id = newBindingId();
    const binding: Binding = {
      id, aor: 'sip:bob@keylatch.test', contact: `<sip:bob@127.0.0.9:${phonePort}>`, instance: null,
      source: { address: '127.0.0.1', port: phonePort }, transport: 'udp', localSocket: 'udp', lastSeen: Date.now(),
      expires: Date.now() + 60_000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: Date.now() + 3_600_000, keylatch: false,
    };
    await f.edge.store.put(binding);
    return id;
  };
  const ok = (r: { code: number; out: string }): { code: number; out: string } => ({ code: r.code, out: r.code === 0 ? '' : r.out.slice(-2500) });

  it('carries early media, the answer, an UPDATE hold and the phone\'s BYE; media flows both ways after the 200', async () => {
    const phonePort = 28060 + (process.pid % 400);
    const phoneMedia = await Peer.open('127.0.0.1');
    const pbxMedia = await Peer.open('127.0.0.2');
    try {
      const id = await register(phonePort);
      const phone = runSipp(['-sf', path.join(SCENARIOS, 'phone-early-update.xml'), '-i', '127.0.0.1', '-p', String(phonePort), '-m', '1', '-key', 'mport', String(phoneMedia.port)], { timeoutMs: 20000 });
      await new Promise((r) => setTimeout(r, 300));
      const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-call-early-update.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-s', id,
        '-key', 'mport', String(pbxMedia.port), `127.0.0.1:${pbxSidePort}`], { timeoutMs: 20000 });
      // Past the 200 (the phone answers 500 ms after its 183, and holds 1.5 s after the ACK).
      await waitFor(() => f.relay.callCount === 1 && (f.relay.stats(f.relay.callIds()[0]!)?.every((l) => l.tag) ?? false), 5000);
      await new Promise((r) => setTimeout(r, 700));
      await exchangeRtp(f, phoneMedia, pbxMedia);
      expect(pbxMedia.media().every((m) => m.readUInt32BE(8) === 0xa)).toBe(true);
      const [x, p] = await Promise.all([pbx, phone]);
      expect(ok(x)).toEqual({ code: 0, out: '' });
      expect(ok(p)).toEqual({ code: 0, out: '' });
      await waitFor(() => f.relay.callCount === 0 && f.relay.pool.inUse === 0 && f.edge.calls.size === 0, 3000);
    } finally {
      phoneMedia.close();
      pbxMedia.close();
    }
  }, 30000);

  it('carries the PBX\'s CANCEL to the ringing phone and frees the relay', async () => {
    const phonePort = 28560 + (process.pid % 400);
    const id = await register(phonePort);
    const phone = runSipp(['-sf', path.join(SCENARIOS, 'phone-ring-cancel.xml'), '-i', '127.0.0.1', '-p', String(phonePort), '-m', '1'], { timeoutMs: 15000 });
    await new Promise((r) => setTimeout(r, 300));
    const pbx = await runSipp(['-sf', path.join(SCENARIOS, 'pbx-call-cancel.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-s', id, `127.0.0.1:${pbxSidePort}`], { timeoutMs: 10000 });
    expect(ok(pbx)).toEqual({ code: 0, out: '' });
    expect(ok(await phone)).toEqual({ code: 0, out: '' });
    await waitFor(() => f.relay.callCount === 0 && f.relay.pool.inUse === 0 && f.edge.calls.size === 0, 3000);
  }, 30000);

  it('forwards MESSAGE both ways: a phone\'s for sip:bob@<keylatch> to the PBX, the PBX\'s down the binding\'s flow', async () => {
    const pbxGets = runSipp(['-sf', path.join(SCENARIOS, 'message-recv-pbx.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 10000 });
    await new Promise((r) => setTimeout(r, 300));
    const sent = await runSipp(['-sf', path.join(SCENARIOS, 'message-send.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1', '-s', 'bob', `127.0.0.1:${sipPort}`], { timeoutMs: 10000 });
    expect(ok(sent)).toEqual({ code: 0, out: '' });
    expect(ok(await pbxGets)).toEqual({ code: 0, out: '' });

    const phonePort = 28860 + (process.pid % 100);
    const id = await register(phonePort);
    const phoneGets = runSipp(['-sf', path.join(SCENARIOS, 'message-recv-phone.xml'), '-i', '127.0.0.1', '-p', String(phonePort), '-m', '1'], { timeoutMs: 10000 });
    await new Promise((r) => setTimeout(r, 300));
    const fromPbx = await runSipp(['-sf', path.join(SCENARIOS, 'message-send.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-s', id, `127.0.0.1:${pbxSidePort}`], { timeoutMs: 10000 });
    expect(ok(fromPbx)).toEqual({ code: 0, out: '' });
    expect(ok(await phoneGets)).toEqual({ code: 0, out: '' });
  }, 30000);

  it('refuses anyone but the PBX on the PBX-facing side with 403, even for a real binding', async () => {
    const id = await register(28960 + (process.pid % 30));
    const stranger = await runSipp(['-sf', path.join(SCENARIOS, 'pbx-call.xml'), '-i', '127.0.0.3', '-p', String(pbxPort), '-m', '1', '-s', id,
      '-key', 'mport', '4000', `127.0.0.1:${pbxSidePort}`], { timeoutMs: 5000 });
    expect(stranger.out).toMatch(/403/);
    const message = await runSipp(['-sf', path.join(SCENARIOS, 'message-send.xml'), '-i', '127.0.0.3', '-p', String(pbxPort), '-m', '1', '-s', id, `127.0.0.1:${pbxSidePort}`], { timeoutMs: 5000 });
    expect(message.out).toMatch(/403/);
    expect(f.relay.callCount).toBe(0);
  });

  it('answers the PBX\'s OPTIONS on the PBX-facing side', async () => {
    const r = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', `127.0.0.1:${pbxSidePort}`], { timeoutMs: 5000 });
    expect(ok(r)).toEqual({ code: 0, out: '' });
  });
});
