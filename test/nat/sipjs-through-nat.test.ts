/**
 * The SIP.js plugin end to end: the example softphone (SIP.js + plugin) registers over WSS
 * through real NATs to keylatch (drachtio-server + edge + relay), with Kamailio as the PBX.
 * alice (plugin) sits behind a symmetric NAT, bob (plugin) and carol (baresip) behind
 * port-preserving ones, and an attacker on the public net sprays the relay's ports.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { rms } from '../../src/codec/g711';
import { loadConfig } from '../../src/config/load';
import type { SipConfig } from '../../src/config/schema';
import { Relay } from '../../src/media/relay';
import { createLogger, silentLogger } from '../../src/log';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { readWav } from '../../plugins/sipjs/src';
import { Baresip, baresipUnavailable, wavRms } from '../helpers/baresip';
import { selfSignedCert, skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { LiveEvents, RELAY_IP, Topology, jsonLines, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor } from '../helpers/peers';
import { Softphone } from '../helpers/softphone';

const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable();
if (why) console.warn(`!!! SKIPPED SIP.js plugin through NAT tests: ${why}`);
const skip = skipUnlessDrachtio('SIP.js plugin through NAT tests') || why !== null;

const PORT_MIN = 35600;
const PORT_MAX = 35699;
const SPRAYER = path.join(__dirname, 'sprayer.ts');
const JSSIP_PHONE = path.join(__dirname, 'jssip-phone.ts');
/** The JsSIP client's NAT forgets an idle TCP flow after this long; its pings must beat it. */
const NAT_TCP_TIMEOUT_S = 10;
const ATTACKER_SSRC = 0xbad;

(skip ? describe.skip : describe)('SIP.js + keylatch plugin through real NATs', () => {
  let topo: Topology;
  let drachtio: RunningDrachtio;
  let relay: Relay;
  let edge: SipEdge;
  let pbx: ReturnType<typeof startKamailio>;
  let alice: Softphone;
  let bob: Softphone;
  let carol: Baresip;
  let dir: string;
  let ca: string;
  let attacker: { ns: string };
  let aliceNet: ReturnType<Topology['addNattedClient']>;
  let bobNet: ReturnType<Topology['addNattedClient']>;
  let carolNet: ReturnType<Topology['addNattedClient']>;
  let jssipNet: ReturnType<Topology['addNattedClient']>;

  const phone = (ns: string, user: string, bind: string, extra: string[] = []): Softphone =>
    new Softphone(topo, ns, ['--server', `wss://${RELAY_IP}:5063`, '--aor', `sip:${user}@keylatch.test`, '--ca', ca, '--bind', bind, '--sdp-address', bind,
      '--answer', '--record', path.join(dir, `${user}.wav`), '--stats-ms', '60000', ...extra]);

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kl-sipjs-'));
    topo = new Topology(`kls${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    aliceNet = topo.addNattedClient('al', 2, 'symmetric');
    carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
    bobNet = topo.addNattedClient('bo', 4, 'port-preserving');
    jssipNet = topo.addNattedClient('js', 6, 'symmetric');
    topo.exec(jssipNet.natNs, 'sysctl', ['-qw', `net.netfilter.nf_conntrack_tcp_timeout_established=${NAT_TCP_TIMEOUT_S}`]);
    const pbxHost = topo.addPublicHost('pbx', 5);
    attacker = topo.addPublicHost('atk', 7);
    pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { path: false });
    const cert = selfSignedCert(RELAY_IP);
    ca = cert.cert;
    drachtio = await startDrachtio({
      contacts: [`sip:${RELAY_IP}:5060;transport=udp,tcp`, `sips:${RELAY_IP}:5061;transport=tls`, `sips:${RELAY_IP}:5063;transport=wss`, `sip:${RELAY_IP}:5062;transport=ws`],
      adminPort: 7622 + (process.pid % 300),
      tls: cert,
    });
    const media = loadConfig({ env: {} }).media;
    // Short consent intervals so the hold below outlasts several re-challenges.
    relay = new Relay({ ...media, interface: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX, key: { ...media.key, rechallengeIntervalMs: 1000, consentTimeoutMs: 3000 } });
    const sip: SipConfig = { ...loadConfig({ env: {} }).sip, pbx: `sip:${pbxHost.ip}:5060`, advertisedAddress: `${RELAY_IP}:5060` };
    const logger = process.env.KEYLATCH_TEST_LOG ? createLogger(process.env.KEYLATCH_TEST_LOG) : silentLogger;
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip, logger });
    alice = phone(aliceNet.clientNs, 'alice', aliceNet.privateIp, ['--tone', '1000']);
    bob = phone(bobNet.clientNs, 'bob', bobNet.privateIp, ['--tone', '600']);
    carol = new Baresip(topo, carolNet.clientNs, { localIp: carolNet.privateIp, user: 'carol', edge: `${RELAY_IP}:5060` });
    await Promise.all([alice.next('registered', 10000, 0), bob.next('registered', 10000, 0)]);
    await waitFor(() => pbx.log().includes('REGISTER sip:carol@keylatch.test'), 10000).catch(() => {
      throw new Error(`carol did not register\n${carol.tail()}`);
    });
  }, 60000);

  afterAll(async () => {
    await edge?.close();
    await relay?.close();
    await drachtio?.stop();
    pbx?.stop();
    topo?.destroy();
    carol?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const legs = () => relay.stats(relay.callIds()[0]!)!;
  const hangUpAll = async (who: Softphone) => {
    const ended = who.of('ended').length;
    who.send('hangup');
    await who.next('ended', 5000, ended);
    await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 6000).catch(() => {
      throw new Error(`still up: ${edge.calls.size} edge calls, ${relay.callCount} relay calls\n${who.tail()}`);
    });
  };

  it('registers over WSS through the NAT as a secure, keylatch-capable binding', async () => {
    const [a] = await edge.store.byAor('sip:alice@keylatch.test');
    expect(a).toMatchObject({ transport: 'wss', secure: true, keylatch: true, natted: true });
    expect(a!.source.address).toBe(aliceNet.publicIp);
  });

  it('alice (symmetric NAT) calls carol (baresip): key leg and guarded leg, a tone both ways, a sprayer gets nothing, a NAT flush is an authenticated handover', async () => {
    const sprayer = jsonLines(topo.spawnTs(attacker.ns, SPRAYER, { target: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX, durationMs: 6000 }));
    const calling = alice.mark();
    alice.send('call sip:carol@keylatch.test');
    await alice.next('established', 10000, calling);
    const auth = await alice.next('media-authenticated', 5000, calling);
    const firstMedia = await alice.next('first-media', 5000, calling);
    await sleep(2000);

    let s = await alice.stats();
    const aliceLeg = () => legs().find((l) => l.legId === s.legId)!;
    const carolLeg = () => legs().find((l) => l.legId !== s.legId)!;
    expect(s.state).toBe('authenticated');
    expect(aliceLeg()).toMatchObject({ policy: 'key', authenticated: true });
    expect(carolLeg().policy).toBe('guarded');
    expect(carolLeg().latched?.address).toBe(carolNet.publicIp);
    // The mapping the plugin learned from SUCCESS is the symmetric NAT's, and what the relay latched.
    expect((auth.mapping as { rtp: { address: string } }).rtp.address).toBe(aliceNet.publicIp);
    expect(s.mapping.rtp).toEqual(aliceLeg().latched);
    expect(s.relay.rtp!.address).toBe(RELAY_IP);
    expect(s.received.packets).toBeGreaterThan(80);

    const spray = (await sprayer).find((l) => l.event === 'done')!;
    s = await alice.stats();
    // Nothing of the attacker's reached alice, nothing of alice's reached the attacker, and the
    // relay answered none of its packets (not even with a challenge).
    expect(spray.mediaIn).toBe(0);
    expect(spray.stunIn).toBe(0);
    expect(s.ssrcs).not.toContain(ATTACKER_SSRC);
    expect(Object.keys(s.sources)).toEqual([`${s.relay.rtp!.address}:${s.relay.rtp!.port}`]);

    const before = s.mapping.rtp!;
    const gapBefore = s.received.maxGapMs;
    const packetsBefore = s.received.packets;
    const flushed = alice.mark();
    topo.flushConntrack(aliceNet.natNs);
    await alice.next('mapping-changed', 3000, flushed);
    // The flush took her WebSocket's mapping too: she reconnects and registers the new flow.
    await alice.next('registered', 8000, flushed);
    await sleep(1500);
    s = await alice.stats();
    expect(s.handovers).toBeGreaterThanOrEqual(1);
    expect(s.mapping.rtp!.address).toBe(aliceNet.publicIp);
    expect(s.mapping.rtp!.port).not.toBe(before.port);
    expect(aliceLeg().latched).toEqual(s.mapping.rtp);
    expect(aliceLeg().authenticated).toBe(true);
    // Media came back (≈50 packets a second) and never stopped for as long as a second.
    expect(s.received.packets - packetsBefore).toBeGreaterThan(60);
    expect(s.received.maxGapMs).toBeLessThan(1000);
    console.log(`SIP.js plugin: first media ${firstMedia.ms as number} ms after the 200 OK was applied; ` +
      `max media gap before the flush ${gapBefore} ms, across it ${s.received.maxGapMs} ms; sprayer sent ${spray.sent as number}, got ${spray.mediaIn as number} media and ${spray.stunIn as number} challenges`);

    // Hold for longer than several re-challenges: the key leg keeps proving while silent.
    alice.send('hold');
    await alice.next('held', 5000, alice.of('held').length);
    await sleep(4000);
    expect(aliceLeg().authenticated).toBe(true);
    alice.send('resume');
    await alice.next('resumed', 5000, alice.of('resumed').length);
    const afterResume = (await alice.stats()).received.packets;
    await sleep(1000);
    expect((await alice.stats()).received.packets - afterResume).toBeGreaterThan(30);

    // carol hangs up: the BYE must find alice on the flow she opened after the flush.
    const ending = alice.of('ended').length;
    carol.command('/hangup');
    await alice.next('ended', 8000, ending);
    await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 6000);
    expect(rms(readWav(path.join(dir, 'alice.wav')).subarray(-8000))).toBeGreaterThan(1000); // carol's 440 Hz, not silence
    await waitFor(() => carol.recordings().length >= 1, 3000);
    expect(wavRms(carol.recordings().at(-1)!, 0.5)).toBeGreaterThan(1000); // alice's 1 kHz, heard by baresip
  }, 60000);

  it('carol (baresip) calls alice: the INVITE reaches her WSS flow, her leg proves its key, audio both ways', async () => {
    const recordings = carol.recordings().length;
    const n = alice.of('established').length;
    const na = alice.of('media-authenticated').length;
    carol.command('/dial sip:alice@keylatch.test');
    await alice.next('established', 10000, n);
    await alice.next('media-authenticated', 5000, na);
    await sleep(2000);
    const s = await alice.stats();
    expect(s.state).toBe('authenticated');
    expect(s.received.packets).toBeGreaterThan(60);
    const aliceLeg = legs().find((l) => l.legId === s.legId)!;
    expect(aliceLeg).toMatchObject({ policy: 'key', authenticated: true });
    const ended = alice.of('ended').length;
    carol.command('/hangup');
    await alice.next('ended', 5000, ended);
    await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 6000);
    expect(rms(readWav(path.join(dir, 'alice.wav')).subarray(-8000))).toBeGreaterThan(1000);
    await waitFor(() => carol.recordings().length > recordings, 3000);
    expect(wavRms(carol.recordings().at(-1)!, 0.5)).toBeGreaterThan(1000);
  }, 30000);

  it('alice calls bob, both plugin clients: both legs key-authenticated through the hairpin', async () => {
    const nb = bob.of('media-authenticated').length;
    alice.send('call sip:bob@keylatch.test');
    await bob.next('media-authenticated', 10000, nb);
    await waitFor(() => legs().length === 2 && legs().every((l) => l.authenticated), 5000);
    expect(relay.callCount).toBe(1);
    expect(legs().map((l) => l.policy)).toEqual(['key', 'key']);
    await sleep(1500);
    const [a, b] = [await alice.stats(), await bob.stats()];
    expect(a.received.packets).toBeGreaterThan(40);
    expect(b.received.packets).toBeGreaterThan(40);
    expect(a.mapping.rtp!.address).toBe(aliceNet.publicIp);
    expect(b.mapping.rtp!.address).toBe(bobNet.publicIp);
    await hangUpAll(bob);
    expect(rms(readWav(path.join(dir, 'bob.wav')).subarray(-4000))).toBeGreaterThan(1000);
  }, 30000);

  it('a plugin client over SIP/TLS (not WebSocket) calls bob: both legs key-authenticated', async () => {
    const erin = new Softphone(topo, carolNet.clientNs, ['--server', `tls://${RELAY_IP}:5061`, '--aor', 'sip:erin@keylatch.test', '--ca', ca,
      '--bind', carolNet.privateIp, '--sdp-address', carolNet.privateIp, '--tone', '900', '--require-key', '--stats-ms', '60000']);
    try {
      await erin.next('registered', 10000, 0);
      const [e] = await edge.store.byAor('sip:erin@keylatch.test');
      expect(e).toMatchObject({ transport: 'tls', secure: true, keylatch: true });
      const nb = bob.of('media-authenticated').length;
      erin.send('call sip:bob@keylatch.test');
      await Promise.all([erin.next('media-authenticated', 10000, 0), bob.next('media-authenticated', 10000, nb)]);
      await waitFor(() => legs().length === 2 && legs().every((l) => l.policy === 'key' && l.authenticated), 5000);
      await sleep(1000);
      expect((await erin.stats()).received.packets).toBeGreaterThan(25);
      await hangUpAll(erin);
    } finally {
      erin.send('quit');
    }
  }, 30000);

  it('a client that requires a key but signs in over plain ws:// is told the key is missing, and the call is ended cleanly', async () => {
    const dave = new Softphone(topo, bobNet.clientNs, ['--server', `ws://${RELAY_IP}:5062`, '--aor', 'sip:dave@keylatch.test', '--bind', bobNet.privateIp,
      '--sdp-address', bobNet.privateIp, '--require-key', '--stats-ms', '60000']);
    try {
      await dave.next('registered', 10000, 0);
      const [d] = await edge.store.byAor('sip:dave@keylatch.test');
      expect(d).toMatchObject({ transport: 'ws', secure: false });
      dave.send('call sip:carol@keylatch.test');
      const [failed] = await Promise.all([dave.next('media-failed', 10000, 0), dave.next('ended', 10000, 0)]);
      expect(failed.code).toBe('key-missing');
      await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 6000);
    } finally {
      dave.send('quit');
    }
  }, 30000);

  it('JsSIP over WSS: registers, still receives calls after idling past its NAT\'s TCP timeout, refuses one and answers the next', async () => {
    const jssip = new LiveEvents(topo.spawnTs(jssipNet.clientNs, JSSIP_PHONE, { server: `wss://${RELAY_IP}:5063`, aor: 'sip:judy@keylatch.test', ca, localIp: jssipNet.privateIp, pingMs: 4000 }));
    try {
      await jssip.next('registered', 10000, 0);
      const [j] = await edge.store.byAor('sip:judy@keylatch.test');
      expect(j).toMatchObject({ transport: 'wss', secure: true, keylatch: true });
      expect(j!.source.address).toBe(jssipNet.publicIp);

      // The premise: this NAT really does drop idle TCP state this fast (per-namespace sysctl).
      expect(topo.exec(jssipNet.natNs, 'sysctl', ['-n', 'net.netfilter.nf_conntrack_tcp_timeout_established']).trim()).toBe(String(NAT_TCP_TIMEOUT_S));
      await sleep((NAT_TCP_TIMEOUT_S * 2 + 1) * 1000);
      let before = jssip.mark();
      carol.command('/dial sip:judy@keylatch.test');
      await jssip.next('refused', 10000, before);
      await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 6000);

      jssip.command({ cmd: 'mode', mode: 'answer' });
      before = jssip.mark();
      carol.command('/dial sip:judy@keylatch.test');
      await jssip.next('media-authenticated', 10000, before);
      await sleep(1500);
      before = jssip.mark();
      jssip.command({ cmd: 'stats' });
      const stats = (await jssip.next('stats', 2000, before)).media as { state: string; received: { packets: number }; mapping: { rtp: { address: string } } };
      expect(stats.state).toBe('authenticated');
      expect(stats.received.packets).toBeGreaterThan(40);
      expect(stats.mapping.rtp.address).toBe(jssipNet.publicIp);
      expect(legs().map((l) => l.policy).sort()).toEqual(['guarded', 'key']);
      before = jssip.mark();
      carol.command('/hangup');
      await jssip.next('ended', 6000, before);
      await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 6000);
    } finally {
      jssip.command({ cmd: 'quit' });
    }
  }, 60000);
});
