/**
 * Real NATs in network namespaces: client A behind a port-preserving NAT, client B behind a
 * symmetric one (MASQUERADE --random-fully), an attacker on the public net spraying every
 * relay port before and during the call, and a conntrack flush on both NATs mid-call.
 */
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import type { LatchPolicy } from '../../src/media/latch/latch';
import { keyFromSdp, mediaPorts, sdp, sleep } from '../helpers/peers';
import { LiveEvents, RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';

const unavailable = netnsUnavailable();
if (unavailable) console.warn(`!!! SKIPPED real-NAT tests: ${unavailable} (needs root, iproute2, iptables, conntrack)`);
const describeNat = unavailable ? describe.skip : describe;

const PORT_MIN = 35000;
const PORT_MAX = 35099;
/** Media flows both ways this long before the flush, and this long after it. */
const BEFORE_FLUSH_MS = 2000;
const AFTER_FLUSH_MS = 2000;
/** Starting node and compiling TypeScript in a child takes seconds on a loaded machine. */
const START_TIMEOUT_MS = 15000;
const CLIENT = path.join(__dirname, 'media-client.ts');
const SPRAYER = path.join(__dirname, 'sprayer.ts');

interface Done {
  sent: number;
  received: Record<string, number>;
  maxGapMs: number;
  latched: boolean;
}

describeNat('through real NATs', () => {
  let topo: Topology;
  let a: ReturnType<Topology['addNattedClient']>;
  let b: ReturnType<Topology['addNattedClient']>;
  let attacker: ReturnType<Topology['addPublicHost']>;
  let relay: Relay;

  beforeAll(() => {
    topo = new Topology();
    topo.destroy(); // leftovers of a killed earlier run with the same id
    topo.createPublicNet();
    a = topo.addNattedClient('a', 1, 'port-preserving');
    b = topo.addNattedClient('b', 2, 'symmetric');
    attacker = topo.addPublicHost('atk', 66);
  });
  afterAll(() => topo?.destroy());

  beforeEach(() => {
    const media = loadConfig({ env: {} }).media;
    relay = new Relay({ ...media, interface: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX });
  });
  afterEach(() => relay.close());

  /**
   * One call, phased by what the peers report rather than by the clock: the call starts once
   * the sprayer is at it and both clients are up, and the NATs are flushed only after media has
   * flowed both ways for a while. On a loaded machine a child can take seconds to start; timed
   * from the spawn, the "mid-call" flush used to land before the first packet.
   */
  async function call(policy: LatchPolicy) {
    const children = [
      topo.spawnTs(attacker.ns, SPRAYER, { target: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX, durationMs: 60000 }),
      topo.spawnTs(a.clientNs, CLIENT, { localPort: 4000, ssrc: 0xa, peerSsrc: 0xb }),
      topo.spawnTs(b.clientNs, CLIENT, { localPort: 4000, ssrc: 0xb, peerSsrc: 0xa }),
    ];
    try {
      return await run(policy, ...(children.map((c) => new LiveEvents(c)) as [LiveEvents, LiveEvents, LiveEvents]));
    } finally {
      // A failed call must not leave a client holding port 4000 for the next one.
      for (const c of children) Topology.killGroup(c);
    }
  }

  async function run(policy: LatchPolicy, sprayer: LiveEvents, ca: LiveEvents, cb: LiveEvents) {
    await Promise.all([sprayer.next('spraying', START_TIMEOUT_MS, 0), ca.next('ready', START_TIMEOUT_MS, 0), cb.next('ready', START_TIMEOUT_MS, 0)]);
    await sleep(500); // the sprayer is already at it before the call exists
    const legs = { policy, secure: true };
    const offer = await relay.offer({
      callId: `nat-${policy}`, fromTag: 'a', sdp: sdp(a.privateIp, 4000),
      offerer: { ...legs, signallingAddress: a.publicIp }, answerer: legs,
    });
    const answer = await relay.answer({
      callId: `nat-${policy}`, fromTag: 'a', toTag: 'b', sdp: sdp(b.privateIp, 4000), answerer: { signallingAddress: b.publicIp },
    });
    // Each phone starts sending once it has the answer, as a real one does.
    const start = (c: LiveEvents, port: number, k: { legId: string; key: Buffer } | null) =>
      c.command({ cmd: 'start', relay: { address: RELAY_IP, port }, ...(k ? { legId: k.legId, key: k.key.toString('base64url') } : {}) });
    start(ca, mediaPorts(answer.sdp)[0]!, policy === 'key' ? keyFromSdp(answer.sdp)! : null);
    start(cb, mediaPorts(offer.sdp)[0]!, policy === 'key' ? keyFromSdp(offer.sdp)! : null);
    await Promise.all([ca.next('first-media', START_TIMEOUT_MS, 0), cb.next('first-media', START_TIMEOUT_MS, 0)]);
    await sleep(BEFORE_FLUSH_MS);
    const before = relay.stats(`nat-${policy}`)!.map((l) => l.latched);
    topo.flushConntrack(a.natNs);
    topo.flushConntrack(b.natNs);
    await sleep(AFTER_FLUSH_MS);
    for (const c of [ca, cb, sprayer]) c.command({ cmd: 'stop' });
    const [linesA, linesB, spray] = await Promise.all([ca.done, cb.done, sprayer.done]);
    const after = relay.stats(`nat-${policy}`)!;
    const done = (lines: Array<Record<string, unknown>>) => lines.find((l) => l.event === 'done') as unknown as Done;
    return { linesA, linesB, doneA: done(linesA), doneB: done(linesB), spray: spray.find((l) => l.event === 'done')!, before, after };
  }

  function expectMediaBothWays(r: Awaited<ReturnType<typeof call>>): void {
    // The flush hit a call in progress: both legs were latched.
    expect(r.before).toEqual([expect.objectContaining({ address: a.publicIp }), expect.objectContaining({ address: b.publicIp })]);
    // Both sides send ~200 packets in 4 s; allow for start-up and one handover.
    expect(r.doneA.received[String(0xb)]).toBeGreaterThan(r.doneB.sent * 0.8);
    expect(r.doneB.received[String(0xa)]).toBeGreaterThan(r.doneA.sent * 0.8);
    // Nothing of the attacker's reached either client...
    expect(r.doneA.received[String(0xbad)] ?? 0).toBe(0);
    expect(r.doneB.received[String(0xbad)] ?? 0).toBe(0);
    // ...and no packet of the call reached the attacker.
    expect(r.spray.mediaIn).toBe(0);
    // The conntrack flush cost less than a second of media in each direction.
    expect(r.doneA.maxGapMs).toBeLessThan(1000);
    expect(r.doneB.maxGapMs).toBeLessThan(1000);
  }

  it('key policy: both clients prove their key, media flows, the flush is an authenticated handover, the sprayer gets nothing', async () => {
    const r = await call('key');
    console.log(`key policy: A got ${r.doneA.received[String(0xb)]}/${r.doneB.sent}, B got ${r.doneB.received[String(0xa)]}/${r.doneA.sent}, max gap A ${r.doneA.maxGapMs} ms, B ${r.doneB.maxGapMs} ms; sprayer sent ${r.spray.sent}, got ${r.spray.mediaIn} media and ${r.spray.stunIn} challenges`);
    expect(r.doneA.latched && r.doneB.latched).toBe(true);
    expectMediaBothWays(r);
    expect(r.after.every((l) => l.authenticated)).toBe(true);
    // B sits behind the symmetric NAT: the flush gave it a new external port, and the relay
    // followed only because the new source proved the key (the client saw a changed mapping).
    const bBefore = r.before[1]!;
    const bAfter = r.after.find((l) => l.tag === 'b')!.latched!;
    expect(bBefore!.address).toBe(b.publicIp);
    expect(bAfter.address).toBe(b.publicIp);
    expect(bAfter.port).not.toBe(bBefore!.port);
    expect(r.linesB.some((l) => l.event === 'latched' && l.changed === true)).toBe(true);
    expect(relay.drops['proof-rejected']).toBe(0);
    // Silence toward strangers: not one challenge for the sprayer's RTP, RTCP, unkeyed hellos or garbage.
    expect(r.spray.stunIn).toBe(0);
  }, 40000);

  it('guarded policy: clients without keys lock by signalling IP; the sprayer gets nothing and reaches nobody', async () => {
    const r = await call('guarded');
    console.log(`guarded policy: A got ${r.doneA.received[String(0xb)]}/${r.doneB.sent}, B got ${r.doneB.received[String(0xa)]}/${r.doneA.sent}, max gap A ${r.doneA.maxGapMs} ms, B ${r.doneB.maxGapMs} ms; sprayer sent ${r.spray.sent}, got ${r.spray.mediaIn} media`);
    expectMediaBothWays(r);
    expect(r.after.find((l) => l.tag === 'a')!.latched!.address).toBe(a.publicIp);
    expect(r.after.find((l) => l.tag === 'b')!.latched!.address).toBe(b.publicIp);
    expect(r.spray.stunIn).toBe(0);
    // The symmetric NAT moved B to a new port on the flush; the rebinding rule followed it.
    expect(r.after.find((l) => l.tag === 'b')!.latched!.port).not.toBe(r.before[1]!.port);
  }, 40000);
});
