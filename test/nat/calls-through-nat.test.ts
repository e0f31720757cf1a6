/**
 * Whole calls between two NATed clients through keylatch and a real PBX (Kamailio):
 * alice, our test phone, behind a symmetric NAT (--random-fully); carol, baresip, behind a
 * port-preserving NAT. Both register through keylatch; the PBX routes each call back through
 * keylatch to the callee (a hairpin, anchored once). Audio must arrive both ways, as a tone and
 * not silence, through hold and resume and a conntrack flush on alice's NAT.
 */
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import type { SipConfig } from '../../src/config/schema';
import { Relay } from '../../src/media/relay';
import { createLogger, silentLogger } from '../../src/log';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { Baresip, baresipUnavailable, wavRms } from '../helpers/baresip';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { LiveEvents, RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor, waitForAsync } from '../helpers/peers';

const PHONE = path.join(__dirname, 'nat-phone.ts');
const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable();
if (why) console.warn(`!!! SKIPPED calls-through-NAT tests: ${why}`);
const skip = skipUnlessDrachtio('calls-through-NAT tests') || why !== null;

type Heard = { packets: number; loudPackets: number; lastRms: number; sources: string[] };

for (const mode of ['contact', 'path'] as const) {
  (skip ? describe.skip : describe)(`calls between NATed clients through keylatch and Kamailio (${mode} mode)`, () => {
    let topo: Topology;
    let drachtio: RunningDrachtio;
    let relay: Relay;
    let edge: SipEdge;
    let pbx: ReturnType<typeof startKamailio>;
    let alice: LiveEvents;
    let carol: Baresip;
    let aliceNet: ReturnType<Topology['addNattedClient']>;
    let carolNet: ReturnType<Topology['addNattedClient']>;

    beforeAll(async () => {
      topo = new Topology(`klc${mode[0]}${process.pid % 1000}`);
      topo.destroy();
      topo.createPublicNet();
      aliceNet = topo.addNattedClient('al', 2, 'symmetric');
      carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
      const pbxHost = topo.addPublicHost('pbx', 5);
      pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { path: mode === 'path' });
      drachtio = await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp,tcp`], adminPort: 7522 + (process.pid % 400) + (mode === 'path' ? 1 : 0) });
      relay = new Relay({ ...loadConfig({ env: {} }).media, interface: RELAY_IP, portMin: 35400, portMax: 35499 });
      const defaults = loadConfig({ env: {} }).sip;
      const sip: SipConfig = {
        ...defaults,
        // Path mode also talks to the PBX over TCP: both transports toward the PBX get a run.
        pbx: `sip:${pbxHost.ip}:5060${mode === 'path' ? ';transport=tcp' : ''}`,
        advertisedAddress: `${RELAY_IP}:5060`,
        registration: { ...defaults.registration, upstreamMode: mode },
      };
      // KEYLATCH_TEST_LOG=debug shows the edge's own log when a scenario fails.
      const logger = process.env.KEYLATCH_TEST_LOG ? createLogger(process.env.KEYLATCH_TEST_LOG) : silentLogger;
      edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip, logger });
      alice = new LiveEvents(topo.spawnTs(aliceNet.clientNs, PHONE, { localIp: aliceNet.privateIp, port: 5060, edge: { address: RELAY_IP, port: 5060 }, user: 'alice', durationMs: 120000 }));
      carol = new Baresip(topo, carolNet.clientNs, { localIp: carolNet.privateIp, user: 'carol', edge: `${RELAY_IP}:5060` });
      await waitFor(() => alice.of('registered').length > 0, 8000);
      await waitForAsync(async () => (await edge.store.byAor('sip:carol@keylatch.test')).length > 0, 8000).catch((err: Error) => {
        throw new Error(`${err.message}\n${carol.tail()}\n${pbx.log()}`);
      });
    }, 40000);

    afterAll(async () => {
      await edge?.close();
      await relay?.close();
      await drachtio?.stop();
      pbx?.stop();
      topo?.destroy();
      carol?.remove();
    });

    const heard = async (): Promise<Heard> => {
      const before = alice.of('stats').length;
      alice.command({ cmd: 'stats' });
      await waitFor(() => alice.of('stats').length > before, 2000);
      return alice.last('stats')!.heard as Heard;
    };
    const mediaLegs = () => relay.stats(relay.callIds()[0]!)!;

    it(`registers both clients at the PBX (over ${mode === 'path' ? 'TCP' : 'UDP'}) with keylatch as their way in`, async () => {
      const bindings = [...(await edge.store.byAor('sip:alice@keylatch.test')), ...(await edge.store.byAor('sip:carol@keylatch.test'))];
      expect(bindings.map((b) => [b.source.address, b.natted])).toEqual([[aliceNet.publicIp, true], [carolNet.publicIp, true]]);
      expect(pbx.log()).toMatch(new RegExp(`REGISTER sip:alice@keylatch.test proto=${mode === 'path' ? 'tcp' : 'udp'}`));
      expect(pbx.log()).toMatch(mode === 'path' ? /REGISTER sip:carol@keylatch.test proto=\w+ contact=.* path=<sip:\S+@198\.18\.0\.1:5060;lr>/ : /REGISTER sip:carol@keylatch.test proto=\w+ contact=<sip:\S+@198\.18\.0\.1:5060>/);
    });

    it('alice calls carol: anchored once, a tone both ways, through hold, resume and a NAT flush', async () => {
      const inUse = relay.pool.inUse;
      alice.command({ cmd: 'call', to: 'sip:carol@keylatch.test' });
      await waitFor(() => alice.of('answered').length === 1 || alice.of('call-failed').length > 0, 8000).catch(() => {
        throw new Error(`no answer\n${JSON.stringify(alice.lines.slice(-5))}\n${carol.tail()}\n${pbx.log().slice(-2000)}`);
      });
      expect(alice.of('call-failed')).toEqual([]);
      // Two B2BUA calls (alice-PBX, PBX-carol), one relay call, one pair of streams.
      expect(edge.calls.size).toBe(2);
      expect(relay.callCount).toBe(1);
      expect(relay.pool.inUse - inUse).toBe(2); // one RTP/RTCP pair per leg

      await sleep(2500);
      let h = await heard();
      expect(h.loudPackets).toBeGreaterThan(50); // carol's tone, not silence
      expect(h.sources).toEqual([`${RELAY_IP}:${(alice.last('answered')!.remoteRtp as { port: number }).port}`]);
      const legs = mediaLegs();
      expect(legs.map((l) => l.latched?.address).sort()).toEqual([aliceNet.publicIp, carolNet.publicIp].sort());

      alice.command({ cmd: 'hold' });
      await waitFor(() => alice.of('reinvite-answered').length === 1, 5000);
      expect(alice.last('reinvite-answered')!.status).toBe(200);
      expect(mediaLegs().some((l) => l.streams[0]!.onHold)).toBe(true);
      alice.command({ cmd: 'resume' });
      await waitFor(() => alice.of('reinvite-answered').length === 2, 5000);
      expect(mediaLegs().every((l) => !l.streams[0]!.onHold)).toBe(true);

      // The NAT forgets alice's mappings; her next packets leave from new external ports.
      const aliceLegBefore = mediaLegs().find((l) => l.latched?.address === aliceNet.publicIp)!;
      const loudBefore = (await heard()).loudPackets;
      topo.flushConntrack(aliceNet.natNs);
      alice.command({ cmd: 'register' });
      await sleep(2000);
      h = await heard();
      expect(h.loudPackets - loudBefore).toBeGreaterThan(50);
      const aliceLegAfter = mediaLegs().find((l) => l.legId === aliceLegBefore.legId)!;
      expect(aliceLegAfter.latched?.address).toBe(aliceNet.publicIp);
      expect(aliceLegAfter.latched?.port).not.toBe(aliceLegBefore.latched?.port);
      const packetsToCarol = mediaLegs().find((l) => l.legId !== aliceLegBefore.legId)!.packetsOut;

      alice.command({ cmd: 'bye' });
      await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 5000);
      expect(relay.pool.inUse).toBe(inUse);
      expect(packetsToCarol).toBeGreaterThan(200);
      // What carol heard: alice's 1 kHz tone, recorded by baresip itself.
      await waitFor(() => carol.recordings().length === 1, 3000);
      expect(wavRms(carol.recordings()[0]!, 0.5)).toBeGreaterThan(1000);
    }, 40000);

    it('carol calls alice: the call reaches her learned flow, and audio flows both ways', async () => {
      const before = await heard();
      carol.command(`/dial sip:alice@keylatch.test`);
      await waitFor(() => alice.of('invite').length === 1, 8000).catch(() => {
        throw new Error(`no INVITE at alice\n${carol.tail()}\n${pbx.log().slice(-2000)}`);
      });
      expect(relay.callCount).toBe(1);
      await sleep(2000);
      const after = await heard();
      expect(after.loudPackets - before.loudPackets).toBeGreaterThan(50);
      expect(mediaLegs().every((l) => l.latched !== null && l.packetsIn > 50)).toBe(true);
      carol.command('/hangup');
      await waitFor(() => alice.of('bye').length === 1 && relay.callCount === 0, 5000);
      await waitFor(() => carol.recordings().length === 2, 3000);
      expect(wavRms(carol.recordings()[1]!, 0.5)).toBeGreaterThan(1000);
    }, 30000);
  });
}
