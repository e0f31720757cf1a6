/**
 * DTMF into a room from real phones behind real NATs (docs/rooms.md, "Events and control"):
 * erin, a linphonec behind a symmetric NAT, presses keys that it sends as SIP INFO
 * (application/dtmf-relay); carol, a baresip behind a port-preserving NAT, presses keys that it
 * sends as RFC 4733 telephone-events; dave, a baresip behind a symmetric NAT, only listens. Each
 * plays a tone of its own. The room must report every key once, as the right participant's, with
 * the way it came (`info` or `rtp`), and no key may be heard in anyone's mix.
 * Kamailio is the PBX the phones register with through keylatch; the room INVITEs stay at keylatch.
 */
import fs from 'node:fs';
import { tone } from '../../src/codec/g711';
import { DTMF_TONES, blockToneShare, dtmfKeyPeak } from '../../src/codec/goertzel';
import type { Room } from '../../src/rooms/room';
import { Baresip, baresipUnavailable, recordedSince } from '../helpers/baresip';
import { skipUnlessDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { Linphone, linphoneUnavailable } from '../helpers/linphone';
import { RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor } from '../helpers/peers';
import { sipEdgeFixture } from '../helpers/sip-edge';

const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable() ?? linphoneUnavailable();
if (why) console.warn(`!!! SKIPPED room DTMF through NAT tests: ${why}`);
const skip = skipUnlessDrachtio('room DTMF through NAT tests') || why !== null;

const ROOM = `sip:room-keys@${RELAY_IP}`;
const PBX_IP = '198.18.0.5';
/** Far from every DTMF frequency (697-941 Hz, 1209-1633 Hz), so a key cannot hide in a tone. */
const TONE = { carol: 440, dave: 2400, erin: 2000 } as const;
type Who = keyof typeof TONE;
const WHO = Object.keys(TONE) as Who[];
/** What each presses: erin's go by SIP INFO, carol's by RFC 4733. */
const ERIN_KEYS = ['1', '5', '9', '#'];
const CAROL_KEYS = ['2', '4', '6', '*'];
/** A key in a mix at a phone's level takes a quarter of a 50 ms block per tone (test/unit/goertzel.test.ts). */
const KEY_HEARD = 0.05;

(skip ? describe.skip : describe)('room DTMF from real phones behind NATs: SIP INFO (linphonec) and RFC 4733 (baresip)', () => {
  let topo: Topology;
  let pbx: ReturnType<typeof startKamailio>;
  let carol: Baresip;
  let dave: Baresip;
  let erin: Linphone;
  const nets = {} as Record<Who, ReturnType<Topology['addNattedClient']>>;

  // The namespaces first: the fixture's drachtio-server and relay listen on RELAY_IP.
  beforeAll(() => {
    topo = new Topology(`kld${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    nets.carol = topo.addNattedClient('ca', 3, 'port-preserving');
    nets.dave = topo.addNattedClient('da', 6, 'symmetric');
    nets.erin = topo.addNattedClient('er', 8, 'symmetric');
    const pbxHost = topo.addPublicHost('pbx', 5);
    pbx = startKamailio(topo, pbxHost.ns, `${PBX_IP}:5060`, { path: false });
  });
  const f = sipEdgeFixture({
    contacts: [`sip:${RELAY_IP}:5060;transport=udp`],
    adminPort: 9522 + (process.pid % 300),
    sip: { pbx: `sip:${PBX_IP}:5060`, advertisedAddress: `${RELAY_IP}:5060` },
    media: { interface: RELAY_IP, portMin: 36800, portMax: 36899, allowLoopbackPeers: false },
    rooms: {},
  });
  beforeAll(async () => {
    const edge = `${RELAY_IP}:5060`;
    carol = new Baresip(topo, nets.carol.clientNs, { localIp: nets.carol.privateIp, user: 'carol', edge, toneHz: TONE.carol });
    dave = new Baresip(topo, nets.dave.clientNs, { localIp: nets.dave.privateIp, user: 'dave', edge, toneHz: TONE.dave });
    erin = new Linphone(topo, nets.erin.clientNs, { localIp: nets.erin.privateIp, user: 'erin', edge, toneHz: TONE.erin });
    await erin.useFiles();
    for (const [user, tail] of [['carol', () => carol.tail()], ['dave', () => dave.tail()], ['erin', () => erin.tail()]] as const) {
      await waitFor(() => pbx.log().includes(`REGISTER sip:${user}@keylatch.test`), 15000).catch(() => {
        throw new Error(`${user} did not register\n${tail()}`);
      });
    }
  }, 60000);

  afterAll(() => {
    carol?.remove();
    dave?.remove();
    erin?.remove();
    pbx?.stop();
    topo?.destroy();
  });

  const room = (): Room | undefined => f.rooms!.get('keys');
  const member = (who: Who) => room()?.participants().find((p) => p.who === `sip:${who}@keylatch.test`);
  const recordingOf = (who: Who): string => (who === 'erin' ? erin.recording : (who === 'carol' ? carol : dave).recordings().at(-1)!);
  const sizes = (): Map<Who, number> => new Map(WHO.map((w) => [w, fs.statSync(recordingOf(w)).size]));
  /** What each recorded since `mark`, minus the first 300 ms (what was sent before the mark is still in the buffers). */
  const heardSince = (mark: Map<Who, number>): Map<Who, Int16Array> => new Map([...mark].map(([w, at]) => [w, recordedSince(recordingOf(w), at + 4800)]));
  const tones = (heard: Map<Who, Int16Array>): string =>
    [...heard].map(([w, s]) => `${w}(${(s.length / 8000).toFixed(1)} s): ${WHO.map((t) => `${t}=${blockToneShare(s, TONE[t]).toFixed(2)}`).join(' ')}`).join('; ');
  /** Per recording, the loudest 50 ms of each key (dtmfKeyPeak). */
  const keyPeaks = (heard: Map<Who, Int16Array>, keys: string[]): Record<string, Record<string, number>> =>
    Object.fromEntries([...heard].map(([w, s]) => [w, Object.fromEntries(keys.map((k) => [k, Number(dtmfKeyPeak(s, k).toFixed(3))]))]));

  it('reports each key once, as its sender\'s, by INFO or RTP, and mixes none of them', async () => {
    const established = { carol: carol.count(/Call established/), dave: dave.count(/Call established/), erin: erin.count(/Media streams established/) };
    carol.command(`/dial ${ROOM}`);
    dave.command(`/dial ${ROOM}`);
    await erin.command(`call ${ROOM}`);
    await waitFor(() => carol.count(/Call established/) > established.carol && dave.count(/Call established/) > established.dave && erin.count(/Media streams established/) > established.erin, 15000).catch(() => {
      throw new Error(`not all joined\ncarol: ${carol.tail()}\ndave: ${dave.tail()}\nerin: ${erin.tail()}`);
    });
    await waitFor(() => room()?.size === 3 && room()!.participants().every((p) => p.latched), 10000).catch(() => {
      throw new Error(`room: ${JSON.stringify(f.rooms!.info())}`);
    });
    // Each leg latched on its own NAT's public address; the room INVITEs never reached the PBX.
    for (const who of WHO) expect({ who, latchedOn: member(who)!.info().latched?.split(':')[0] }).toEqual({ who, latchedOn: nets[who].publicIp });
    expect(pbx.log()).not.toMatch(/room-keys/);
    await waitFor(() => fs.existsSync(erin.recording) && carol.recordings().length > 0 && dave.recordings().length > 0, 5000);

    // Before any key: everyone hears the two others' tones (so the recordings hold the mix).
    let mark = sizes();
    await sleep(2000);
    const before = heardSince(mark);
    console.log(`room dtmf: before the keys: ${tones(before)}`);
    console.log(`room dtmf: key peaks before the keys: ${JSON.stringify(keyPeaks(before, [...ERIN_KEYS, ...CAROL_KEYS]))}`);

    const events: Array<{ who: string; key: string; via: string }> = [];
    room()!.on('dtmf', (p, key, via) => events.push({ who: p.who, key, via }));
    mark = sizes();
    // One key at a time, as a user presses them; the two phones at once.
    const pressCarol = (async () => {
      for (const k of CAROL_KEYS) {
        carol.command(`/sndcode ${k}`);
        await sleep(700);
      }
    })();
    for (const k of ERIN_KEYS) await erin.command(k); // linphonec sends one per second
    await pressCarol;
    await waitFor(() => events.length >= ERIN_KEYS.length + CAROL_KEYS.length, 5000).catch(() => undefined);
    await sleep(1000);
    const during = heardSince(mark);
    console.log(`room dtmf: events: ${JSON.stringify(events)}`);
    console.log(`room dtmf: while the keys were pressed: ${tones(during)}`);
    const peaks = keyPeaks(during, [...ERIN_KEYS, ...CAROL_KEYS]);
    console.log(`room dtmf: key peaks while pressed: ${JSON.stringify(peaks)}`);

    // Every key once, in order, its sender's, the way it came; nothing from dave.
    const of = (who: Who) => events.filter((e) => e.who === `sip:${who}@keylatch.test`);
    expect(of('erin')).toEqual(ERIN_KEYS.map((key) => ({ who: 'sip:erin@keylatch.test', key, via: 'info' })));
    expect(of('carol')).toEqual(CAROL_KEYS.map((key) => ({ who: 'sip:carol@keylatch.test', key, via: 'rtp' })));
    expect(events).toHaveLength(ERIN_KEYS.length + CAROL_KEYS.length);

    for (const listener of WHO) {
      // The mix is there, before and while the keys were pressed: the others' tones, not its own.
      for (const [phase, samples] of [['before', before.get(listener)!], ['during', during.get(listener)!]] as const) {
        expect({ listener, phase, seconds: samples.length / 8000 >= 1.5 }).toEqual({ listener, phase, seconds: true });
        for (const who of WHO) {
          const share = blockToneShare(samples, TONE[who]);
          expect({ listener, phase, who, heard: who === listener ? share < 0.03 : share > 0.1, share }).toEqual({ listener, phase, who, heard: true, share });
        }
      }
      // No key of another phone in the mix: no 50 ms block holds both of its tones. (Its own keys
      // may be in a phone's recording: linphonec plays each key it sends to its own speaker.)
      for (const key of [...(listener === 'erin' ? [] : ERIN_KEYS), ...(listener === 'carol' ? [] : CAROL_KEYS)]) {
        const peak = peaks[listener]![key]!;
        expect({ listener, key, mixed: peak >= KEY_HEARD, peak }).toEqual({ listener, key, mixed: false, peak });
      }
    }

    // The check can see a key: one at the tones' level, laid into dave's recording, is found.
    const probe = Int16Array.from(during.get('dave')!);
    const level = Math.sqrt(probe.reduce((sum, v) => sum + v * v, 0) / probe.length) / 2;
    const [low, high] = [tone(DTMF_TONES['5']![0], 800, 0, level), tone(DTMF_TONES['5']![1], 800, 0, level)];
    for (let i = 0; i < 800; i++) probe[8000 + i] = probe[8000 + i]! + low[i]! + high[i]!;
    expect(dtmfKeyPeak(probe, '5')).toBeGreaterThan(KEY_HEARD);

    await erin.command('terminate');
    carol.command('/hangup');
    dave.command('/hangup');
    await waitFor(() => f.rooms!.list().length === 0 && f.relay.pool.inUse === 0, 8000).catch(() => {
      throw new Error(`left over: ${JSON.stringify(f.rooms!.info())}, ports ${f.relay.pool.inUse}`);
    });
  }, 90000);
});
