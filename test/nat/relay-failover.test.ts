/**
 * The relay pool with real processes: two `keylatch relay` nodes, each in a namespace of its
 * own on the public net, driven by the edge over ng; four stock baresip phones behind NATs
 * (two port-preserving, two symmetric) registered through keylatch at Kamailio (the B2BUA-like
 * PBX, so each conversation crosses keylatch twice and is anchored once, as a hairpin on the
 * node of its first half). Two conversations spread over the two nodes; one node is SIGKILLed
 * mid-call; the edge moves its conversation to the other by re-INVITE on every leg. What each
 * phone receives is watched with tshark in its namespace: the audio gap is the longest time
 * between two RTP packets arriving at the phone.
 *
 * Then: the dead node restarted takes calls again, and a drained node gets none.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { baresipUnavailable, wavHoldsTone, wavSamples, wavToneShare } from '../helpers/baresip';
import { selfSignedCert, skipUnlessDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable } from '../helpers/kamailio';
import { RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor } from '../helpers/peers';
import { CLOSED, MAX_GAP_MS, calling, startFixture, stopFixture, type Fixture, type Phone } from '../helpers/pool-fixture';
import { Softphone } from '../helpers/softphone';
import { rtpengineUnavailable, startKeylatchRelay, startRtpengine, tsharkUnavailable, type RunningNode } from '../helpers/relay-nodes';

const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable() ?? tsharkUnavailable();
if (why) console.warn(`!!! SKIPPED relay failover tests: ${why}`);
const skip = skipUnlessDrachtio('relay failover tests') || why !== null;


(skip ? describe.skip : describe)('a pool of two keylatch relay processes: a node SIGKILLed mid-call', () => {
  let fx: Fixture;
  let nodes: RunningNode[] = [];
  let r1Host: { ns: string; ip: string };
  const { dial, hangUp, closedRecording, nodeOf, gaps, ringThenAnswer, heardAfterAnswer, hangUpAll } = calling(() => fx);

  beforeAll(async () => {
    const topo = new Topology(`klf${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    const pbxHost = topo.addPublicHost('pbx', 5);
    r1Host = topo.addPublicHost('r1', 8);
    const r2Host = topo.addPublicHost('r2', 9);
    try {
      nodes = await Promise.all([startKeylatchRelay(topo, r1Host.ns, r1Host.ip, '40000-40199'), startKeylatchRelay(topo, r2Host.ns, r2Host.ip, '40000-40199')]);
      fx = await startFixture(topo, pbxHost, nodes.map((n) => ({ url: n.url, kind: 'keylatch' as const, weight: 1 })), [
        ['carol', 3, 440, 'port-preserving'], ['dave', 4, 1000, 'symmetric'], ['erin', 6, 600, 'symmetric'], ['frank', 7, 800, 'port-preserving'],
      ], 9320 + (process.pid % 300));
    } catch (err) {
      topo.destroy();
      throw err;
    }
  }, 90000);
  afterEach(() => hangUpAll()); // a failed test's calls would otherwise fail the next one too
  afterAll(() => stopFixture(fx ?? {}));

  it('spreads two conversations over the two nodes, and moves the dead node\'s one to the other with audio back within 2 s', async () => {
    const { edge, pool, phones } = fx;
    const { carol, dave, erin, frank } = phones as Record<string, Phone>;
    const closedBefore = Object.values(phones).map((p) => p.sip.count(CLOSED));
    const recordings = Object.values(phones).map((p) => p.sip.recordings().length);
    await dial(carol!, dave!);
    await dial(erin!, frank!);
    // Four B2BUA calls; each conversation is one relay call (the PBX's leg back is adopted), one per node.
    expect(edge.calls.size).toBe(4);
    expect(pool.status().map((s) => [s.state, s.calls])).toEqual([['up', 1], ['up', 1]]);
    await sleep(2500);
    const answeredAt = Date.now() - 2500;
    // Before: carol and dave hear node 1, erin and frank node 2.
    const before = Date.now() - 1000;
    expect(await carol!.rtp.sourcesIn(before)).toEqual([nodes[0]!.ip]);
    expect(await dave!.rtp.sourcesIn(before)).toEqual([nodes[0]!.ip]);
    expect(await erin!.rtp.sourcesIn(before)).toEqual([nodes[1]!.ip]);

    const killedAt = Date.now();
    nodes[0]!.kill();
    await waitFor(() => nodeOf(nodes[0]!.url).state === 'down', 3000);
    const downAt = Date.now();
    await waitFor(() => [...edge.calls.values()].every((c) => c.relayNode === nodes[1]!.url), 5000).catch(() => {
      throw new Error(`calls not moved: ${JSON.stringify([...edge.calls.values()].map((c) => c.relayNode))}\n${carol!.sip.tail()}`);
    });
    await sleep(4000);
    const until = Date.now();

    const gap = await gaps(`keylatch node SIGKILLed: found down after ${downAt - killedAt} ms`, killedAt - 1000, until);
    for (const p of Object.values(phones)) {
      expect(gap[p.user]!).toBeLessThan(MAX_GAP_MS);
      // Audio after the move comes from the surviving node only.
      expect(await p.rtp.sourcesIn(until - 1000)).toEqual([nodes[1]!.ip]);
    }
    // The untouched conversation never noticed.
    expect(gap.erin!).toBeLessThan(300);
    // No call dropped: nobody's call ended, all four B2BUA calls still up, both conversations on node 2.
    expect(Object.values(phones).map((p) => p.sip.count(CLOSED))).toEqual(closedBefore);
    expect(edge.calls.size).toBe(4);
    expect(nodeOf(nodes[1]!.url).calls).toBe(2);

    await hangUp(carol!);
    await hangUp(erin!);
    expect(nodeOf(nodes[1]!.url).calls).toBe(0);
    // What each heard after the move is the other's tone (recordings skip what never arrived,
    // so everything past the time before the kill was heard after it).
    const skipSec = (killedAt - answeredAt) / 1000;
    for (const [p, other] of [[carol!, dave!], [dave!, carol!], [erin!, frank!], [frank!, erin!]] as const) {
      const file = await closedRecording(p, recordings[Object.values(phones).indexOf(p)]! + 1);
      expect(wavSamples(file, skipSec).length).toBeGreaterThan(8000 * 2);
      expect({ user: p.user, ...wavHoldsTone(file, other.hz, 0.5) }).toMatchObject({ user: p.user, ok: true });
      expect({ user: p.user, ...wavHoldsTone(file, other.hz, skipSec) }).toMatchObject({ user: p.user, ok: true });
    }
  }, 90000);

  it('the restarted node takes new calls again; a drained node gets none while its calls go on', async () => {
    const { pool, phones } = fx;
    const { carol, dave, erin, frank } = phones as Record<string, Phone>;
    nodes[0] = await startKeylatchRelay(fx.topo, r1Host.ns, r1Host.ip, '40000-40199');
    await waitFor(() => nodeOf(nodes[0]!.url).state === 'up', 5000);
    await dial(carol!, dave!);
    expect(nodeOf(nodes[0]!.url).calls).toBe(1);
    expect(pool.drain(nodes[0]!.url)).toBe(true);
    await dial(erin!, frank!);
    // Node 1 drains: the new conversation goes to node 2; the one on node 1 goes on there.
    expect(pool.status().map((s) => [s.state, s.calls])).toEqual([['draining', 1], ['up', 1]]);
    await sleep(3000);
    expect(await carol!.rtp.sourcesIn(Date.now() - 2000)).toEqual([nodes[0]!.ip]);
    expect(await erin!.rtp.sourcesIn(Date.now() - 2000)).toEqual([nodes[1]!.ip]);
    // 20 ms packets: 75 in 1.5 s.
    const t = Date.now();
    await carol!.rtp.caughtUp(t);
    expect(carol!.rtp.longestGap(t - 1500, t).packets).toBeGreaterThan(60);
    await hangUp(carol!);
    await hangUp(erin!);
    expect(pool.status().map((s) => s.calls)).toEqual([0, 0]);
    pool.drain(nodes[0]!.url, false);
  }, 60000);

  it('a call still ringing when its node dies moves to the other node and connects with audio both ways when answered', async () => {
    const { edge, pool, phones } = fx;
    const { carol, dave } = phones as Record<string, Phone>;
    await waitFor(() => pool.status().every((s) => s.state === 'up'), 5000);
    const recordings = [carol!.sip.recordings().length, dave!.sip.recordings().length];
    let alive = 0;
    const { answeredAt, closedBefore: closed } = await ringThenAnswer(carol!, dave!, async (closed) => {
      // Both halves of the ringing conversation are on one node (the callee's half as a hairpin).
      const ringingOn = [...edge.calls.values()].map((c) => c.relayNode);
      expect(new Set(ringingOn).size).toBe(1);
      const dead = ringingOn[0] === nodes[0]!.url ? 0 : 1;
      alive = 1 - dead;
      nodes[dead]!.kill();
      await waitFor(() => nodeOf(nodes[dead]!.url).state === 'down', 3000);
      // Still ringing: nothing has failed yet.
      expect([carol!.sip.count(CLOSED), dave!.sip.count(CLOSED)]).toEqual([closed.carol, closed.dave]);
    });
    const closedBefore = [closed.carol, closed.dave];
    await waitFor(() => [...edge.calls.values()].every((c) => c.relayNode === nodes[alive]!.url), 5000).catch(() => {
      throw new Error(`calls not moved: ${JSON.stringify([...edge.calls.values()].map((c) => c.relayNode))}`);
    });
    await sleep(3500);
    const until = Date.now();
    // Anchored once on the surviving node: the callee's half answered through a stand-in
    // there, then adopted the caller's new leg when the caller's move re-offered it.
    expect(nodeOf(nodes[alive]!.url).calls).toBe(1);
    expect(edge.calls.size).toBe(2);
    for (const p of [carol!, dave!]) expect(await p.rtp.sourcesIn(until - 1500)).toEqual([nodes[alive]!.ip]);
    const { wire, firstMedia, heard } = heardAfterAnswer(carol!, dave!, answeredAt, until, nodes[alive]!.ip);
    console.log(`ringing call, its node SIGKILLed before the answer: first RTP from the new node after /accept (ms) ${JSON.stringify(firstMedia)}; the other's tone on the wire in the last 2 s ${JSON.stringify(wire)}`);
    for (const h of heard) expect(h).toEqual({ user: h.user, ok: true });
    expect([carol!.sip.count(CLOSED), dave!.sip.count(CLOSED)]).toEqual(closedBefore);
    await hangUp(carol!);
    expect(nodeOf(nodes[alive]!.url).calls).toBe(0);
    for (const [p, other, i] of [[carol!, dave!, 0], [dave!, carol!, 1]] as const) {
      const file = await closedRecording(p, recordings[i]! + 1);
      expect({ user: p.user, ...wavHoldsTone(file, other.hz, 0.5) }).toMatchObject({ user: p.user, ok: true });
      expect(wavToneShare(file, p.hz, 0.5)).toBeLessThan(0.1);
    }
  }, 60000);
});

const whyRtpengine = skip ? null : rtpengineUnavailable();
if (whyRtpengine) console.warn(`!!! SKIPPED the rtpengine pool test: ${whyRtpengine}`);

(skip || whyRtpengine ? describe.skip : describe)('a pool with a real rtpengine node for guarded legs, and a keylatch node', () => {
  let fx: Fixture;
  let engine: RunningNode;
  let keylatch: RunningNode;
  const { dial, hangUp, closedRecording, nodeOf, gaps, hangUpAll } = calling(() => fx);

  beforeAll(async () => {
    const topo = new Topology(`klg${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    const pbxHost = topo.addPublicHost('pbx', 5);
    const eHost = topo.addPublicHost('re', 10);
    const kHost = topo.addPublicHost('rk', 8);
    try {
      [engine, keylatch] = await Promise.all([startRtpengine(topo, eHost.ns, eHost.ip, [40000, 40199]), startKeylatchRelay(topo, kHost.ns, kHost.ip, '40000-40199')]);
      // rtpengine weighs ten times more, so the guarded calls go there while it lives.
      fx = await startFixture(topo, pbxHost, [{ url: engine.url, kind: 'rtpengine', weight: 10 }, { url: keylatch.url, kind: 'keylatch', weight: 1 }], [
        ['carol', 3, 440, 'port-preserving'], ['dave', 4, 1000, 'symmetric'],
      ], 9620 + (process.pid % 300));
    } catch (err) {
      topo.destroy();
      throw err;
    }
  }, 90000);
  afterEach(() => hangUpAll()); // a failed test's calls would otherwise fail the next one too
  afterAll(() => stopFixture(fx ?? {}));

  it('anchors a call between NATed phones on rtpengine, and when rtpengine dies moves it to the keylatch node', async () => {
    const { edge, phones } = fx;
    const { carol, dave } = phones as Record<string, Phone>;
    const closedBefore = [carol!.sip.count(CLOSED), dave!.sip.count(CLOSED)];
    const recordings = [carol!.sip.recordings().length, dave!.sip.recordings().length];
    await dial(carol!, dave!);
    // rtpengine cannot hand a leg over, so each half is anchored there: two rtpengine calls.
    expect(edge.calls.size).toBe(2);
    expect(nodeOf(engine.url).calls).toBe(2);
    await sleep(3000);
    const answeredAt = Date.now() - 3000;
    const before = Date.now() - 2500;
    for (const p of [carol!, dave!]) {
      expect(await p.rtp.sourcesIn(before)).toEqual([engine.ip]);
      // 20 ms packets: 75 in 1.5 s.
      const t = Date.now();
      await p.rtp.caughtUp(t);
      expect(p.rtp.longestGap(t - 1500, t).packets).toBeGreaterThan(60);
    }

    const killedAt = Date.now();
    engine.kill();
    await waitFor(() => nodeOf(engine.url).state === 'down', 3000);
    const downAt = Date.now();
    await waitFor(() => [...edge.calls.values()].every((c) => c.relayNode === keylatch.url), 5000).catch(() => {
      throw new Error(`calls not moved: ${JSON.stringify([...edge.calls.values()].map((c) => c.relayNode))}\n${carol!.sip.tail()}`);
    });
    await sleep(4000);
    const until = Date.now();
    const gap = await gaps(`rtpengine SIGKILLed: found down after ${downAt - killedAt} ms`, killedAt - 1000, until);
    for (const p of [carol!, dave!]) {
      expect(gap[p.user]!).toBeLessThan(MAX_GAP_MS);
      expect(await p.rtp.sourcesIn(until - 1000)).toEqual([keylatch.ip]);
    }
    // On the keylatch node the callee's half adopted the caller's leg: one relay call.
    expect(nodeOf(keylatch.url).calls).toBe(1);
    expect([carol!.sip.count(CLOSED), dave!.sip.count(CLOSED)]).toEqual(closedBefore);
    expect(edge.calls.size).toBe(2);

    await hangUp(carol!);
    expect(nodeOf(keylatch.url).calls).toBe(0);
    const skipSec = (killedAt - answeredAt) / 1000;
    const heard: Record<string, { call: ReturnType<typeof wavHoldsTone>; afterMove: ReturnType<typeof wavHoldsTone>; own: number }> = {};
    for (const [p, other, i] of [[carol!, dave!, 0], [dave!, carol!, 1]] as const) {
      const file = await closedRecording(p, recordings[i]! + 1);
      heard[p.user] = { call: wavHoldsTone(file, other.hz, 0.5), afterMove: wavHoldsTone(file, other.hz, skipSec), own: wavToneShare(file, p.hz, 0.5) };
    }
    // On the wire, before and after the move: each phone received the other's tone.
    const wire = Object.fromEntries([[carol!, dave!], [dave!, carol!]].map(([p, o]) => [p!.user, { before: p!.rtp.toneShare(answeredAt, killedAt, o!.hz), after: p!.rtp.toneShare(until - 3000, until - 500, o!.hz) }]));
    console.log(`rtpengine pool: the other's tone on the wire ${JSON.stringify(wire)}; in each phone's recording ${JSON.stringify(heard)}`);
    for (const w of Object.values(wire)) {
      expect(w.before).toBeGreaterThan(0.9);
      expect(w.after).toBeGreaterThan(0.9);
    }
    // And what the phones recorded, second by second, is the other's tone, never their own.
    for (const h of Object.values(heard)) {
      expect(h.call.ok).toBe(true);
      expect(h.afterMove.ok).toBe(true);
      expect(h.own).toBeLessThan(0.1);
    }
  }, 90000);
});

(skip ? describe.skip : describe)('a key leg (SIP.js plugin over WSS) whose relay node dies: it gets a new key and proves it on the new node', () => {
  let fx: Fixture;
  let nodes: RunningNode[] = [];
  let alice: Softphone;
  let dir: string;
  let relayHosts: Array<{ ns: string; ip: string }> = [];
  const { hangUp, nodeOf } = calling(() => fx);

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kl-failover-'));
    const topo = new Topology(`klk${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    const pbxHost = topo.addPublicHost('pbx', 5);
    const [r1, r2] = [topo.addPublicHost('r1', 8), topo.addPublicHost('r2', 9)];
    relayHosts = [r1, r2];
    const cert = selfSignedCert(RELAY_IP);
    try {
      nodes = await Promise.all([startKeylatchRelay(topo, r1.ns, r1.ip, '40000-40199'), startKeylatchRelay(topo, r2.ns, r2.ip, '40000-40199')]);
      fx = await startFixture(topo, pbxHost, nodes.map((n) => ({ url: n.url, kind: 'keylatch' as const, weight: 1 })), [['carol', 3, 440, 'port-preserving']], 9020 + (process.pid % 300), cert);
      const net = topo.addNattedClient('al', 2, 'symmetric');
      alice = new Softphone(topo, net.clientNs, ['--server', `wss://${RELAY_IP}:5063`, '--aor', 'sip:alice@keylatch.test', '--ca', cert.cert, '--bind', net.privateIp, '--sdp-address', net.privateIp,
        '--answer', '--tone', '1000', '--record', path.join(dir, 'alice.wav'), '--stats-ms', '60000']);
      await alice.next('registered', 10000, 0);
    } catch (err) {
      topo.destroy();
      throw err;
    }
  }, 90000);
  afterAll(async () => {
    await stopFixture(fx ?? {});
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('moves the call; the plugin proves the new key on the new node and hears carol again within 2 s', async () => {
    const { edge, phones } = fx;
    const carol = phones.carol!;
    const calling0 = alice.mark();
    alice.send('call sip:carol@keylatch.test');
    await alice.next('established', 10000, calling0);
    await alice.next('media-authenticated', 5000, calling0);
    await sleep(2000);
    const before = await alice.stats();
    expect(before.state).toBe('authenticated');
    expect(before.relay.rtp!.address).toBe(nodes[0]!.ip);
    expect(nodeOf(nodes[0]!.url).calls).toBe(1);
    const closed = carol.sip.count(CLOSED);

    const mark = alice.mark();
    const killedAt = Date.now();
    nodes[0]!.kill();
    const reproved = await alice.next('media-authenticated', 5000, mark);
    await sleep(3000);
    const after = await alice.stats();
    console.log(`key leg: new key proved ${Number(reproved.at) - killedAt} ms after the kill; the plugin's longest gap in what it received: ${after.received.maxGapMs} ms; carol's ${carol.rtp.longestGap(killedAt - 1000, Date.now() - 500).gapMs} ms`);
    // A new leg (new key) on the surviving node, proved there; carol's tone flows again.
    expect(after.state).toBe('authenticated');
    expect(after.legId).not.toBe(before.legId);
    expect(after.relay.rtp!.address).toBe(nodes[1]!.ip);
    expect(Number(reproved.at) - killedAt).toBeLessThan(MAX_GAP_MS);
    expect(after.received.maxGapMs).toBeLessThan(MAX_GAP_MS);
    expect(after.received.packets - before.received.packets).toBeGreaterThan(100);
    expect(carol.rtp.longestGap(killedAt - 1000, Date.now() - 500).gapMs).toBeLessThan(MAX_GAP_MS);
    expect(await carol.rtp.sourcesIn(Date.now() - 1500)).toEqual([nodes[1]!.ip]);
    expect(carol.sip.count(CLOSED)).toBe(closed);
    expect(edge.calls.size).toBe(2);
    await hangUp(carol);
  }, 60000);

  it('a key caller whose callee still rings when the node dies gets the new node\'s key in the 200 OK and proves it there', async () => {
    const { edge, phones } = fx;
    const carol = phones.carol!;
    // The node the last test killed comes back, so there is one to die and one to move to.
    nodes[0] = await startKeylatchRelay(fx.topo, relayHosts[0]!.ns, relayHosts[0]!.ip, '40000-40199');
    await waitFor(() => fx.pool.status().every((n) => n.state === 'up'), 5000);
    carol.sip.command('/answermode manual');
    await sleep(300);
    const incoming = carol.sip.count(/Incoming call/);
    const closed = carol.sip.count(CLOSED);
    try {
      const mark = alice.mark();
      alice.send('call sip:carol@keylatch.test');
      await waitFor(() => carol.sip.count(/Incoming call/) > incoming && edge.calls.size === 2, 8000);
      const holder = nodes.findIndex((n) => n.url === [...edge.calls.values()][0]!.relayNode);
      expect(holder).toBeGreaterThanOrEqual(0);
      const survivor = nodes[1 - holder]!;
      nodes[holder]!.kill();
      await waitFor(() => nodeOf(nodes[holder]!.url).state === 'down', 3000);
      const answeredAt = Date.now();
      carol.sip.command('/accept');
      await alice.next('established', 10000, mark);
      const proved = await alice.next('media-authenticated', 5000, mark);
      const first = await alice.stats();
      await sleep(3000);
      const after = await alice.stats();
      const until = Date.now();
      const wire = carol.rtp.toneShare(until - 2500, until - 500, 1000);
      console.log(`key caller, callee ringing when its node died: key proved on the new node ${Number(proved.at) - answeredAt} ms after /accept; plugin received ${after.received.packets - first.received.packets} packets in the 3 s after (longest gap ${after.received.maxGapMs} ms); carol heard alice's tone on the wire at ${wire.toFixed(4)}`);
      // One key, the new node's, proved there: the plugin never proved on the dead node.
      expect(alice.of('media-authenticated').filter((e) => Number(e.at) >= answeredAt)).toHaveLength(1);
      expect(after.state).toBe('authenticated');
      expect(after.relay.rtp!.address).toBe(survivor.ip);
      expect(after.received.packets - first.received.packets).toBeGreaterThan(100);
      expect(await carol.rtp.sourcesIn(until - 1500)).toEqual([survivor.ip]);
      expect(wire).toBeGreaterThan(0.9);
      expect(nodeOf(survivor.url).calls).toBe(1);
      expect(carol.sip.count(CLOSED)).toBe(closed);
      await hangUp(carol);
    } finally {
      carol.sip.command('/answermode auto');
    }
  }, 60000);
});
