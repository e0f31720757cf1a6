/**
 * Group calls (issue 12) with real peers behind real NATs: two baresip phones (carol behind a
 * port-preserving NAT, dave behind --random-fully) and two plugin softphones over WSS (alice
 * symmetric, bob port-preserving) dial sip:room-standup@keylatch, each playing its own tone,
 * while an attacker sprays the relay's ports. bob asks for forwarding (--room-forward): the
 * relay sends him every other speaker's own stream and his plugin mixes them itself; the others
 * get the relay's mix. What each one records (bob: his plugin's local mix) is checked by frequency.
 * Kamailio is the PBX the clients register with; the room INVITEs never reach it.
 */
import fs, { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { MediaStats } from '../../plugins/sipjs/src';
import { blockToneShare } from '../../src/codec/goertzel';
import { loadConfig } from '../../src/config/load';
import { statusRoute } from '../../src/control/status';
import { startHttpListeners, type HttpListeners } from '../../src/control/status-server';
import type { SipConfig } from '../../src/config/schema';
import { createLogger, silentLogger } from '../../src/log';
import { Relay } from '../../src/media/relay';
import { roomActions } from '../../src/rooms/admin';
import { RoomRegistry } from '../../src/rooms/registry';
import type { Room } from '../../src/rooms/room';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { Baresip, baresipUnavailable, recordedSince } from '../helpers/baresip';
import { selfSignedCert, skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { RELAY_IP, Topology, jsonLines, netnsUnavailable } from '../helpers/netns';
import { Peer, sleep, waitFor } from '../helpers/peers';
import { Softphone } from '../helpers/softphone';

const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable();
if (why) console.warn(`!!! SKIPPED rooms through NAT tests: ${why}`);
const skip = skipUnlessDrachtio('rooms through NAT tests') || why !== null;

const PORT_MIN = 36600;
const PORT_MAX = 36699;
const SPRAYER = path.join(__dirname, 'sprayer.ts');
const ROOM = `sip:room-standup@${RELAY_IP}`;
const TOWNHALL = `sip:room-townhall@${RELAY_IP}`;
const TONE = { carol: 440, dave: 1400, alice: 1000, bob: 700 } as const;
type Who = keyof typeof TONE;
const ESTABLISHED = /Call established/;

(skip ? describe.skip : describe)('rooms through real NATs: baresip phones and plugin clients in one room', () => {
  let topo: Topology;
  let drachtio: RunningDrachtio;
  let relay: Relay;
  let rooms: RoomRegistry;
  let edge: SipEdge;
  let pbx: ReturnType<typeof startKamailio>;
  let alice: Softphone;
  let bob: Softphone;
  let carol: Baresip;
  let dave: Baresip;
  let dir: string;
  let ca: string;
  let admin: HttpListeners;
  let attacker: { ns: string };
  const nets = {} as Record<Who, ReturnType<Topology['addNattedClient']>>;

  const softphone = (who: 'alice' | 'bob', extra: string[] = []): Softphone =>
    new Softphone(topo, nets[who].clientNs, ['--server', `wss://${RELAY_IP}:5063`, '--aor', `sip:${who}@keylatch.test`, '--ca', ca, '--bind', nets[who].privateIp,
      '--sdp-address', nets[who].privateIp, '--answer', '--record', path.join(dir, `${who}.wav`), '--stats-ms', '60000', '--tone', String(TONE[who]), ...extra]);

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kl-rooms-'));
    topo = new Topology(`klr${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    nets.alice = topo.addNattedClient('al', 2, 'symmetric');
    nets.carol = topo.addNattedClient('ca', 3, 'port-preserving');
    nets.bob = topo.addNattedClient('bo', 4, 'port-preserving');
    nets.dave = topo.addNattedClient('da', 6, 'symmetric');
    const pbxHost = topo.addPublicHost('pbx', 5);
    attacker = topo.addPublicHost('atk', 7);
    pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { path: false });
    const cert = selfSignedCert(RELAY_IP);
    ca = cert.cert;
    drachtio = await startDrachtio({
      contacts: [`sip:${RELAY_IP}:5060;transport=udp,tcp`, `sips:${RELAY_IP}:5063;transport=wss`],
      adminPort: 8822 + (process.pid % 300),
      tls: cert,
    });
    const config = loadConfig({ env: {} });
    relay = new Relay({ ...config.media, interface: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX });
    rooms = new RoomRegistry({ ...config.rooms, enabled: true, broadcast: [{ name: 'townhall', speakers: ['sip:carol@keylatch.test'] }] }, relay, config.media);
    const sip: SipConfig = { ...config.sip, pbx: `sip:${pbxHost.ip}:5060`, advertisedAddress: `${RELAY_IP}:5060` };
    const logger = process.env.KEYLATCH_TEST_LOG ? createLogger(process.env.KEYLATCH_TEST_LOG) : silentLogger;
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip, rooms, logger });
    admin = await startHttpListeners({ metrics: { listen: null }, admin: { listen: '127.0.0.1:0' } }, {
      metrics: async () => ({ contentType: 'text/plain', body: '' }),
      status: statusRoute({ service: 'edge', startedAt: Date.now(), relay, store: edge.store, summary: () => ({}), rooms: () => rooms.info() }),
      admin: { routes: {}, actions: {}, prefixed: [roomActions(rooms)] },
    });
    alice = softphone('alice');
    bob = softphone('bob', ['--room-forward']);
    carol = new Baresip(topo, nets.carol.clientNs, { localIp: nets.carol.privateIp, user: 'carol', edge: `${RELAY_IP}:5060`, toneHz: TONE.carol });
    dave = new Baresip(topo, nets.dave.clientNs, { localIp: nets.dave.privateIp, user: 'dave', edge: `${RELAY_IP}:5060`, toneHz: TONE.dave });
    await Promise.all([alice.next('registered', 15000, 0), bob.next('registered', 15000, 0)]);
    for (const [user, p] of [['carol', carol], ['dave', dave]] as const) {
      await waitFor(() => pbx.log().includes(`REGISTER sip:${user}@keylatch.test`), 15000).catch(() => {
        throw new Error(`${user} did not register\n${p.tail()}`);
      });
    }
  }, 90000);

  afterAll(async () => {
    admin?.close();
    await edge?.close();
    rooms?.close();
    await relay?.close();
    await drachtio?.stop();
    pbx?.stop();
    topo?.destroy();
    carol?.remove();
    dave?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const standup = (): Room => rooms.get('standup')!;
  /** A forwarding plugin's speakers (stats().speakers): all it lists, and those heard in the last second. */
  const speakersOf = async (p: Softphone): Promise<{ all: MediaStats['speakers']; live: MediaStats['speakers']; own: number }> => {
    const stats = await p.stats();
    const now = Date.now();
    return { all: stats.speakers, live: stats.speakers.filter((s) => now - s.lastAt < 1000), own: stats.ssrc };
  };
  const adminUrl = (p: string): string => admin.urls['/status']!.replace('/status', p);
  const member = (room: Room, who: Who) => room.participants().find((p) => p.who === `sip:${who}@keylatch.test`);
  const recordingOf = (who: Who): string => (who === 'alice' || who === 'bob' ? path.join(dir, `${who}.wav`) : (who === 'carol' ? carol : dave).recordings().at(-1)!);
  const sizes = (whos: Who[]): Map<Who, number> => new Map(whos.map((w) => [w, fs.statSync(recordingOf(w)).size]));
  /** What each recorded since `mark`, minus the first 300 ms (a change takes a jitter buffer to be heard). */
  const heardSince = (mark: Map<Who, number>): Map<Who, Int16Array> => new Map([...mark].map(([w, at]) => [w, recordedSince(recordingOf(w), at + 4800)]));
  const shares = (heard: Map<Who, Int16Array>): string =>
    [...heard].map(([w, s]) => `${w}(${s.length}): ${Object.entries(TONE).map(([t, hz]) => `${t}=${blockToneShare(s, hz).toFixed(2)}`).join(' ')}`).join('; ');
  /** Each listener holds the tones of `audible` (above 0.1 of its energy each) and of nobody else (below 0.03). */
  const expectHeard = (heard: Map<Who, Int16Array>, audible: Who[], why: string): void => {
    for (const [listener, samples] of heard) {
      expect({ listener, why, seconds: samples.length / 8000 >= 1.5 }).toEqual({ listener, why, seconds: true });
      for (const who of Object.keys(TONE) as Who[]) {
        const share = blockToneShare(samples, TONE[who]);
        const should = audible.includes(who) && who !== listener;
        expect({ listener, who, why, heard: should ? share > 0.1 : share < 0.03, share }).toEqual({ listener, who, why, heard: true, share });
      }
    }
  };

  it('four participants: each hears the three others and not itself; mute; NAT rebindings; a leave; a sprayer gets and adds nothing', async () => {
    const sprayer = topo.spawnTs(attacker.ns, SPRAYER, { target: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX, durationMs: 9000 });
    const sprayed = jsonLines(sprayer);
    const [aliceUp, bobUp] = [alice.mark(), bob.mark()];
    const [carolUp, daveUp] = [carol.count(ESTABLISHED), dave.count(ESTABLISHED)];
    carol.command(`/dial ${ROOM}`);
    dave.command(`/dial ${ROOM}`);
    alice.send(`call ${ROOM}`);
    bob.send(`call ${ROOM}`);
    await Promise.all([alice.next('established', 15000, aliceUp), bob.next('established', 15000, bobUp)]);
    await waitFor(() => carol.count(ESTABLISHED) > carolUp && dave.count(ESTABLISHED) > daveUp, 15000).catch(() => {
      throw new Error(`baresip did not join\n${carol.tail()}\n${dave.tail()}`);
    });
    await Promise.all([alice.next('media-authenticated', 8000, aliceUp), bob.next('media-authenticated', 8000, bobUp)]);
    await waitFor(() => standup()?.size === 4 && standup().participants().every((p) => p.latched), 10000).catch(() => {
      throw new Error(`room: ${JSON.stringify(rooms.info())}`);
    });
    const room = standup();
    // Plugin clients over WSS hold a key; the phones get guarded latching. Each leg is latched
    // on its own NAT's public address, whatever the sprayer sent meanwhile.
    for (const who of Object.keys(TONE) as Who[]) {
      const p = member(room, who)!;
      expect({ who, policy: p.leg.policy, mode: p.mode, latchedOn: p.info().latched?.split(':')[0] }).toEqual({
        who, policy: who === 'alice' || who === 'bob' ? 'key' : 'guarded', mode: who === 'bob' ? 'forward' : 'mix', latchedOn: nets[who].publicIp,
      });
    }
    // The room INVITEs were answered here, never sent to the PBX.
    expect(pbx.log()).not.toMatch(/room-standup/);
    await waitFor(() => (Object.keys(TONE) as Who[]).every((w) => (w === 'carol' || w === 'dave' ? (w === 'carol' ? carol : dave).recordings().length > 0 : fs.existsSync(recordingOf(w)))), 5000);

    const all = Object.keys(TONE) as Who[];
    let mark = sizes(all);
    await sleep(2500);
    let heard = heardSince(mark);
    console.log(`rooms: all four: ${shares(heard)}`);
    expectHeard(heard, all, 'all four, under attack');
    // bob's plugin took three streams, one per speaker under the speaker's own SSRC (alice's
    // among them, never his own), each at a speaking level.
    const aliceSsrc = (await alice.stats()).ssrc;
    let bobHears = await speakersOf(bob);
    console.log(`rooms: bob's speakers: ${JSON.stringify(bobHears.all)}`);
    expect(bobHears.live).toHaveLength(3);
    expect(bobHears.live.map((s) => s.ssrc)).toContain(aliceSsrc);
    expect(bobHears.live.map((s) => s.ssrc)).not.toContain(bobHears.own);
    for (const s of bobHears.live) expect(s.levelDbov).toBeGreaterThan(-30);
    const everySpeaker = bobHears.live.map((s) => s.ssrc);

    // keylatch status lists the room; DTMF from alice is reported (and is not audio).
    const status = (await (await fetch(adminUrl('/status'))).json()) as { rooms: Array<{ name: string; participants: Array<{ who: string; latched: string | null }> }> };
    expect(status.rooms.map((r) => [r.name, r.participants.length, r.participants.every((p) => p.latched !== null)])).toEqual([['standup', 4, true]]);
    const keys: string[] = [];
    room.on('dtmf', (p, key) => keys.push(`${p.who} ${key}`));
    alice.send('dtmf 5');
    await waitFor(() => keys.length > 0, 5000);
    expect(keys).toEqual(['sip:alice@keylatch.test 5']);

    // Mute dave through the admin API: nobody hears 1400 Hz, and he still hears the others.
    const muted = await fetch(adminUrl(`/rooms/standup/participants/${member(room, 'dave')!.id}/mute`), { method: 'POST' });
    expect(muted.status).toBe(200);
    mark = sizes(all);
    await sleep(2000);
    heard = heardSince(mark);
    console.log(`rooms: dave muted: ${shares(heard)}`);
    expectHeard(heard, ['carol', 'alice', 'bob'], 'dave muted');
    // The relay stopped forwarding dave to bob: two speakers still arrive, alice one of them.
    bobHears = await speakersOf(bob);
    expect(bobHears.live).toHaveLength(2);
    expect(bobHears.live.map((s) => s.ssrc)).toContain(aliceSsrc);
    for (const s of bobHears.live) expect(everySpeaker).toContain(s.ssrc);
    expect((await fetch(adminUrl(`/rooms/standup/participants/${member(room, 'dave')!.id}/unmute`), { method: 'POST' })).status).toBe(200);

    // NAT rebindings: alice's key leg hands over (authenticated); dave's guarded leg, behind a
    // NAT that picks random ports, must follow his new mapping by the guarded rebinding rule.
    const daveBefore = member(room, 'dave')!.info().latched;
    const flushed = alice.mark();
    topo.flushConntrack(nets.alice.natNs);
    topo.flushConntrack(nets.dave.natNs);
    await alice.next('mapping-changed', 5000, flushed);
    await sleep(1500);
    mark = sizes(all);
    await sleep(2000);
    heard = heardSince(mark);
    console.log(`rooms: after NAT flushes: ${shares(heard)}`);
    expectHeard(heard, all, 'after the NAT flushes');
    expect(member(room, 'alice')!.info().latched?.split(':')[0]).toBe(nets.alice.publicIp);
    const daveAfter = member(room, 'dave')!.info().latched;
    expect(daveAfter?.split(':')[0]).toBe(nets.dave.publicIp);
    expect(daveAfter).not.toBe(daveBefore);
    expect(member(room, 'alice')!.info().latchState).toBe('authenticated');

    const spray = (await sprayed).find((l) => l.event === 'done')!;
    expect(spray.mediaIn).toBe(0);

    // bob's softphone freezes (it stops sending, no BYE): the others go on hearing each other.
    bob.signal('SIGSTOP');
    try {
      const others: Who[] = ['carol', 'dave', 'alice'];
      await sleep(500);
      mark = sizes(others);
      await sleep(2000);
      heard = heardSince(mark);
      console.log(`rooms: bob frozen: ${shares(heard)}`);
      expectHeard(heard, others, 'bob stopped sending');
      expect(room.size).toBe(4);
    } finally {
      bob.signal('SIGCONT');
    }

    // bob leaves: the others stop hearing him; his ports go back.
    const inUse = relay.pool.inUse;
    const bobEnded = bob.of('ended').length;
    bob.send('hangup');
    await bob.next('ended', 5000, bobEnded);
    await waitFor(() => room.size === 3, 5000);
    expect(relay.pool.inUse).toBe(inUse - 1);
    const rest: Who[] = ['carol', 'dave', 'alice'];
    mark = sizes(rest);
    await sleep(2000);
    heard = heardSince(mark);
    console.log(`rooms: after bob left: ${shares(heard)}`);
    expectHeard(heard, rest, 'bob left');

    // The admin removes carol: her phone gets a BYE (on her signalling flow, which no flush
    // touched: after dave's, his old mapping is gone until he sends again, as for any call).
    const carolClosed = carol.count(/terminated|closed/i);
    expect((await fetch(adminUrl(`/rooms/standup/participants/${member(room, 'carol')!.id}/remove`), { method: 'POST' })).status).toBe(200);
    await waitFor(() => carol.count(/terminated|closed/i) > carolClosed, 5000).catch(() => {
      throw new Error(`carol was not hung up\n${carol.tail()}`);
    });
    expect(room.size).toBe(2);

    // Everyone leaves: the room closes and every port is back.
    const aliceEnded = alice.of('ended').length;
    alice.send('hangup');
    dave.command('/hangup');
    await alice.next('ended', 5000, aliceEnded);
    await waitFor(() => rooms.list().length === 0 && relay.pool.inUse === 0, 8000).catch(() => {
      throw new Error(`left over: ${JSON.stringify(rooms.info())}, ports ${relay.pool.inUse}`);
    });
  }, 120000);

  it('a broadcast room: carol speaks, the phones, a plugin client and generated listeners hear only her', async () => {
    const generated = await Promise.all(Array.from({ length: 8 }, () => Peer.open(RELAY_IP)));
    const [daveUp, aliceUp, carolUp] = [dave.count(ESTABLISHED), alice.mark(), carol.count(ESTABLISHED)];
    carol.command(`/dial ${TOWNHALL}`);
    dave.command(`/dial ${TOWNHALL}`);
    alice.send(`call ${TOWNHALL}`);
    await alice.next('established', 15000, aliceUp);
    await waitFor(() => carol.count(ESTABLISHED) > carolUp && dave.count(ESTABLISHED) > daveUp, 15000);
    // Generated listeners: joined in-process (their signalling is not the point), sending
    // their own RTP so their guarded legs latch, as any listener behind a NAT must.
    const offer = (port: number): string =>
      ['v=0', `o=- 1 1 IN IP4 ${RELAY_IP}`, 's=-', `c=IN IP4 ${RELAY_IP}`, 't=0 0', `m=audio ${port} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');
    const relayPorts: number[] = [];
    const joined: Array<Awaited<ReturnType<RoomRegistry['join']>>> = [];
    for (const g of generated) {
      const j = await rooms.join('townhall', `sip:gen${g.port}@test`, { policy: 'guarded', secure: false, signallingAddress: RELAY_IP }, offer(g.port));
      joined.push(j);
      relayPorts.push(Number(/m=audio (\d+)/.exec(j.participant.answer(offer(g.port)))![1]));
    }
    let seq = 0;
    const chatter = setInterval(() => {
      seq++;
      generated.forEach((g, i) => {
        const b = Buffer.alloc(172, 0x7f);
        b[0] = 0x80;
        b.writeUInt16BE(seq & 0xffff, 2);
        b.writeUInt32BE(seq * 160, 4);
        b.writeUInt32BE(1000 + i, 8);
        g.send(b, { address: RELAY_IP, port: relayPorts[i]! });
      });
    }, 20);
    try {
      const room = rooms.get('townhall')!;
      await waitFor(() => room.size === 11 && room.participants().every((p) => p.latched), 10000).catch(() => {
        throw new Error(`townhall: ${JSON.stringify(rooms.info())}`);
      });
      expect(member(room, 'carol')!.role).toBe('speaker');
      expect(member(room, 'dave')!).toMatchObject({ role: 'listener', mode: 'relay' });
      const mark = sizes(['carol', 'dave', 'alice']);
      const before = generated.map((g) => g.media().length);
      await sleep(2500);
      const heard = heardSince(mark);
      console.log(`rooms: townhall: ${shares(heard)}`);
      expect(blockToneShare(heard.get('dave')!, TONE.carol)).toBeGreaterThan(0.5);
      expect(blockToneShare(heard.get('alice')!, TONE.carol)).toBeGreaterThan(0.5);
      expect(blockToneShare(heard.get('dave')!, TONE.alice)).toBeLessThan(0.03);
      expect(blockToneShare(heard.get('alice')!, TONE.dave)).toBeLessThan(0.03);
      // carol hears no listener.
      for (const who of ['dave', 'alice'] as const) expect(blockToneShare(heard.get('carol')!, TONE[who])).toBeLessThan(0.03);
      // Each generated listener: one SSRC of its own, an unbroken sequence, carol's tone.
      generated.forEach((g, i) => {
        const pkts = g.media().slice(before[i]);
        expect(pkts.length).toBeGreaterThan(80);
        expect(new Set(pkts.map((p) => p.readUInt32BE(8))).size).toBe(1);
        const seqs = pkts.map((p) => p.readUInt16BE(2));
        const breaks = seqs.filter((s, k) => k > 0 && ((s - seqs[k - 1]! + 65536) % 65536) !== 1).length;
        expect(breaks).toBeLessThanOrEqual(2); // reordering on the way, never a restart
      });
    } finally {
      clearInterval(chatter);
      generated.forEach((g) => g.close());
      for (const j of joined) j.room.leave(j.participant, 'removed');
      const ended = alice.of('ended').length;
      alice.send('hangup');
      carol.command('/hangup');
      dave.command('/hangup');
      await alice.next('ended', 5000, ended).catch(() => undefined);
    }
    await waitFor(() => relay.pool.inUse === 0, 8000);
  }, 90000);
});
