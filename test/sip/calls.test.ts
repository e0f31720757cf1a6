/**
 * Calls through keylatch's B2BUA on a real drachtio-server, with sipp as phone and PBX and
 * the test's own UDP sockets as their media: SDP on both legs points at the relay, RTP flows
 * both ways through it, and the BYE frees every port.
 */
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { Peer, rtp, testMediaConfig, waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';

const noSipp = sippUnavailable();
if (noSipp) console.warn(`!!! SKIPPED SIP call tests: ${noSipp}`);
const skip = skipUnlessDrachtio('SIP call tests') || noSipp !== null;

(skip ? describe.skip : describe)('calls through keylatch', () => {
  const sipPort = 24060 + (process.pid % 500);
  const pbxPort = 23060 + (process.pid % 500);
  let drachtio: RunningDrachtio;
  let edge: SipEdge;
  let relay: Relay;

  beforeAll(async () => {
    drachtio = await startDrachtio({ contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`], adminPort: 22022 + (process.pid % 500) });
    relay = new Relay(testMediaConfig());
    const base = loadConfig({ env: {} }).sip;
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip: { ...base, pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${sipPort}` } });
  });
  afterAll(async () => {
    await edge?.close();
    await relay?.close();
    await drachtio?.stop();
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

      await waitFor(() => relay.callCount === 1 && (relay.stats(relay.callIds()[0]!)?.every((l) => l.tag) ?? false), 5000);
      const legs = relay.stats(relay.callIds()[0]!)!;
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
      await waitFor(() => relay.callCount === 0 && relay.pool.inUse === 0, 2000);
      expect(edge.calls.size).toBe(0);
    } finally {
      phoneMedia.close();
      pbxMedia.close();
    }
  }, 30000);
});
