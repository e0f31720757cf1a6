/**
 * Calls through keylatch's B2BUA on a real drachtio-server, with sipp as phone and PBX and
 * the test's own UDP sockets as their media: SDP on both legs points at the relay, RTP flows
 * both ways through it, and the BYE frees every port.
 */
import path from 'node:path';
import { newBindingId } from '../../src/nat/binding';
import { Peer, rtp, waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { exchangeRtp, sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';

const skip = skipSipSuite('SIP call tests');

(skip ? describe.skip : describe)('calls through keylatch', () => {
  const sipPort = 24060 + (process.pid % 500);
  const pbxPort = 23060 + (process.pid % 500);

  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`],
    adminPort: 22022 + (process.pid % 500),
    sip: { pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${sipPort}` },
  });

  it('anchors a call from a phone to the PBX on the relay; audio flows both ways; BYE frees the ports', async () => {
    const phoneMedia = await Peer.open('127.0.0.1');
    const pbxMedia = await Peer.open('127.0.0.2');
    try {
      const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-answer.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1',
        '-key', 'mport', String(pbxMedia.port)], { timeoutMs: 20000 });
      await new Promise((r) => setTimeout(r, 300));
      const phone = runSipp(['-sf', path.join(SCENARIOS, 'client-call.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1',
        '-key', 'mport', String(phoneMedia.port), '-d', '1500', `127.0.0.1:${sipPort}`], { timeoutMs: 15000 });

      await waitFor(() => f.relay.callCount === 1 && (f.relay.stats(f.relay.callIds()[0]!)?.every((l) => l.tag) ?? false), 5000);
      const legs = f.relay.stats(f.relay.callIds()[0]!)!;
      const phoneLeg = legs.find((l) => l.tag!.includes('a'))!;
      const pbxLeg = legs.find((l) => l !== phoneLeg)!;
      const toRelayFromPhone = { address: '127.0.0.1', port: phoneLeg.streams[0]!.rtp.port };
      const toRelayFromPbx = { address: '127.0.0.1', port: pbxLeg.streams[0]!.rtp.port };
      for (let i = 0; i < 10; i++) {
        phoneMedia.send(rtp(i, i * 160, 0xa), toRelayFromPhone);
        pbxMedia.send(rtp(i, i * 160, 0xb), toRelayFromPbx);
      }
      await waitFor(() => pbxMedia.media().length >= 8 && phoneMedia.media().length >= 8, 2000);
      expect(pbxMedia.media().every((m) => m.readUInt32BE(8) === 0xa)).toBe(true);
      expect(phoneMedia.media().every((m) => m.readUInt32BE(8) === 0xb)).toBe(true);

      const [p, x] = await Promise.all([phone, pbx]);
      expect({ phone: p.code, out: p.code === 0 ? '' : p.out.slice(-2000) }).toEqual({ phone: 0, out: '' });
      expect({ pbx: x.code, out: x.code === 0 ? '' : x.out.slice(-2000) }).toEqual({ pbx: 0, out: '' });
      await waitFor(() => f.relay.callCount === 0 && f.relay.pool.inUse === 0, 2000);
      expect(f.edge.calls.size).toBe(0);
    } finally {
      phoneMedia.close();
      pbxMedia.close();
    }
  }, 30000);

  it('delivers a PBX call to a registered phone on its learned flow, anchored on the relay', async () => {
    const phonePort = 21060 + (process.pid % 500);
    const phoneMedia = await Peer.open('127.0.0.1');
    const pbxMedia = await Peer.open('127.0.0.2');
    const bindingId = newBindingId();
    await f.edge.store.put({
      id: bindingId, aor: 'sip:bob@keylatch.test', contact: `<sip:bob@127.0.0.9:${phonePort}>`, instance: null,
      source: { address: '127.0.0.1', port: phonePort }, transport: 'udp', localSocket: 'udp', lastSeen: Date.now(),
      expires: Date.now() + 60_000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: Date.now() + 3_600_000, keylatch: false,
    });
    try {
      const phone = runSipp(['-sf', path.join(SCENARIOS, 'phone-answer.xml'), '-i', '127.0.0.1', '-p', String(phonePort), '-m', '1', '-key', 'mport', String(phoneMedia.port)], { timeoutMs: 20000 });
      await new Promise((r) => setTimeout(r, 300));
      const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-call.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-s', bindingId,
        '-key', 'mport', String(pbxMedia.port), '-d', '1500', `127.0.0.1:${sipPort}`], { timeoutMs: 15000 });
      await waitFor(() => f.relay.callCount === 1 && (f.relay.stats(f.relay.callIds()[0]!)?.every((l) => l.tag) ?? false), 5000);
      await exchangeRtp(f, phoneMedia, pbxMedia);
      const [x, p] = await Promise.all([pbx, phone]);
      expect({ pbx: x.code, out: x.code === 0 ? '' : x.out.slice(-2000) }).toEqual({ pbx: 0, out: '' });
      expect({ phone: p.code, out: p.code === 0 ? '' : p.out.slice(-2000) }).toEqual({ phone: 0, out: '' });
      await waitFor(() => f.relay.callCount === 0 && f.relay.pool.inUse === 0, 2000);
    } finally {
      phoneMedia.close();
      pbxMedia.close();
    }
  }, 30000);

  it('refuses a PBX call for a binding it does not know with 404', async () => {
    const pbx = await runSipp(['-sf', path.join(SCENARIOS, 'pbx-call.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-s', 'nobody',
      '-key', 'mport', '4000', `127.0.0.1:${sipPort}`], { timeoutMs: 5000 });
    expect(pbx.out).toMatch(/404/);
    expect(f.relay.callCount).toBe(0);
  });

  it('carries a CANCEL before answer through to the PBX and frees the relay ports', async () => {
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-ring.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 15000 });
    await new Promise((r) => setTimeout(r, 300));
    const phone = await runSipp(['-sf', path.join(SCENARIOS, 'client-cancel.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1', `127.0.0.1:${sipPort}`], { timeoutMs: 10000 });
    const x = await pbx;
    expect({ phone: phone.code, out: phone.code === 0 ? '' : phone.out.slice(-2000) }).toEqual({ phone: 0, out: '' });
    expect({ pbx: x.code, out: x.code === 0 ? '' : x.out.slice(-2000) }).toEqual({ pbx: 0, out: '' });
    await waitFor(() => f.relay.callCount === 0 && f.relay.pool.inUse === 0 && f.edge.calls.size === 0, 3000);
  }, 30000);

  it('carries early media, a 200 with other SDP, hold and resume through the relay', async () => {
    const phoneMedia = await Peer.open('127.0.0.1');
    const early = await Peer.open('127.0.0.2');
    const final = await Peer.open('127.0.0.2');
    const onHold: boolean[] = [];
    try {
      const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-early-hold.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1',
        '-key', 'mport', String(early.port), '-key', 'mport2', String(final.port)], { timeoutMs: 20000 });
      await new Promise((r) => setTimeout(r, 300));
      const phone = runSipp(['-sf', path.join(SCENARIOS, 'client-hold.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1',
        '-key', 'mport', String(phoneMedia.port), '-d', '700', `127.0.0.1:${sipPort}`], { timeoutMs: 15000 });
      await waitFor(() => f.relay.callCount === 1 && (f.relay.stats(f.relay.callIds()[0]!)?.every((l) => l.tag) ?? false), 5000);
      const callId = f.relay.callIds()[0]!;
      const phoneLeg = () => f.relay.stats(callId)!.find((l) => l.tag!.includes('h'))!;
      await new Promise((r) => setTimeout(r, 400)); // past the 200
      for (let i = 0; i < 6; i++) phoneMedia.send(rtp(i, i * 160, 0xa), { address: '127.0.0.1', port: phoneLeg().streams[0]!.rtp.port });
      await waitFor(() => final.media().length >= 4, 2000);
      expect(early.media()).toHaveLength(0); // after the 200, media goes to the answer's address
      const seen = setInterval(() => { const s = f.relay.stats(callId); if (s) onHold.push(phoneLeg().streams[0]!.onHold); }, 50);
      const [p, x] = await Promise.all([phone, pbx]);
      clearInterval(seen);
      expect({ phone: p.code, out: p.code === 0 ? '' : p.out.slice(-2000) }).toEqual({ phone: 0, out: '' });
      expect({ pbx: x.code, out: x.code === 0 ? '' : x.out.slice(-2000) }).toEqual({ pbx: 0, out: '' });
      expect(onHold).toContain(true); // the relay knew the call was held (longer media timeout)...
      expect(onHold.lastIndexOf(false)).toBeGreaterThan(onHold.indexOf(true)); // ...and resumed
      await waitFor(() => f.relay.callCount === 0 && f.relay.pool.inUse === 0, 2000);
    } finally {
      phoneMedia.close();
      early.close();
      final.close();
    }
  }, 30000);
});
