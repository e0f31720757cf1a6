/**
 * Direct media through real NATs: plugin softphones (SIP.js + keylatch plugin) behind every
 * pair of three NAT kinds call each other through keylatch and the PBX stand-in (Kamailio), and
 * the relay, as rendezvous, hands each the other's mapping. What must hold (docs/direct-media.md):
 * - media goes direct exactly when the NATs allow it (hole punching needs at least one side
 *   whose filtering admits the other's new mapping), and stays on the relay otherwise;
 * - after the switch the relay forwards nothing, and the switch leaves no audible gap;
 * - a rebinding or a NAT that drops direct traffic puts media back on the relay within 1 s;
 * - an attacker who knows both clients' mappings gets nothing accepted and hears nothing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { toneShare } from '../../src/codec/goertzel';
import { loadConfig } from '../../src/config/load';
import type { SipConfig } from '../../src/config/schema';
import { Relay } from '../../src/media/relay';
import { createLogger, silentLogger } from '../../src/log';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { readWav, type MediaStats } from '../../plugins/sipjs/src';
import { selfSignedCert, skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { RELAY_IP, Topology, jsonLines, netnsUnavailable, type NatKind } from '../helpers/netns';
import { sleep, waitFor } from '../helpers/peers';
import { Softphone } from '../helpers/softphone';

const why = netnsUnavailable() ?? kamailioUnavailable();
if (why) console.warn(`!!! SKIPPED direct media through NAT tests: ${why}`);
const skip = skipUnlessDrachtio('direct media through NAT tests') || why !== null;

const PORT_MIN = 37000;
const PORT_MAX = 37099;
const DIRECT_SPRAYER = path.join(__dirname, 'direct-sprayer.ts');
const FORGED_PORT = 40000; // direct-sprayer.ts sends its forged rendezvous from here

interface Client {
  name: string;
  kind: NatKind;
  toneHz: number;
  net: ReturnType<Topology['addNattedClient']>;
  phone: Softphone;
}

/** What one call between two clients showed. */
interface CallResult {
  direct: boolean;
  /** From the later of the two authentications to the later of the two switches to direct. */
  toDirectMs: number | null;
  /** Packets the relay forwarded in the second after both went direct. */
  relayForwardedAfter: number | null;
  maxGapMs: number;
}

(skip ? describe.skip : describe)('direct media through real NATs (plugin clients, keylatch as rendezvous)', () => {
  let topo: Topology;
  let drachtio: RunningDrachtio;
  let relay: Relay;
  let edge: SipEdge;
  let pbx: ReturnType<typeof startKamailio>;
  let dir: string;
  let ca: string;
  let attacker: { ns: string; ip: string };
  const clients: Record<string, Client> = {};

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kl-direct-'));
    topo = new Topology(`kld${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    const plan: Array<[string, NatKind, number, number]> = [
      ['pr1', 'port-preserving', 2, 500], ['pr2', 'port-preserving', 3, 700],
      ['sym1', 'symmetric', 4, 900], ['sym2', 'symmetric', 6, 1100],
      ['ar1', 'address-restricted', 8, 1300], ['ar2', 'address-restricted', 9, 1500],
    ];
    const nets = plan.map(([name, kind, n]) => topo.addNattedClient(name, n, kind));
    const pbxHost = topo.addPublicHost('pbx', 5);
    attacker = topo.addPublicHost('atk', 66);
    pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { path: false });
    const cert = selfSignedCert(RELAY_IP);
    ca = cert.cert;
    drachtio = await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp,tcp`, `sips:${RELAY_IP}:5063;transport=wss`], adminPort: 9120 + (process.pid % 300), tls: cert });
    const media = loadConfig({ env: {} }).media;
    relay = new Relay({ ...media, interface: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX });
    const sip: SipConfig = { ...loadConfig({ env: {} }).sip, pbx: `sip:${pbxHost.ip}:5060`, advertisedAddress: `${RELAY_IP}:5060` };
    const logger = process.env.KEYLATCH_TEST_LOG ? createLogger(process.env.KEYLATCH_TEST_LOG) : silentLogger;
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip, logger });
    plan.forEach(([name, kind, , toneHz], i) => {
      const net = nets[i]!;
      const phone = new Softphone(topo, net.clientNs, ['--server', `wss://${RELAY_IP}:5063`, '--aor', `sip:${name}@keylatch.test`, '--ca', ca,
        '--bind', net.privateIp, '--sdp-address', net.privateIp, '--answer', '--tone', String(toneHz), '--record', path.join(dir, `${name}.wav`), '--stats-ms', '60000']);
      clients[name] = { name, kind, toneHz, net, phone };
    });
    await Promise.all(Object.values(clients).map((c) => c.phone.next('registered', 15000, 0)));
  }, 90000);

  afterAll(async () => {
    for (const c of Object.values(clients)) c.phone.send('quit');
    await edge?.close();
    await relay?.close();
    await drachtio?.stop();
    pbx?.stop();
    topo?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  // A test that fails mid-call must not leave its call up for the next one.
  afterEach(async () => {
    if (edge.calls.size === 0 && relay.callCount === 0) return;
    for (const c of Object.values(clients)) c.phone.send('hangup');
    await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 8000).catch(() => undefined);
  });

  const relayCall = () => relay.stats(relay.callIds()[0]!) ?? [];
  const forwarded = () => relayCall().reduce((n, l) => n + l.packetsOut, 0);
  const pathEvents = (c: Client, since: Map<string, number>) => c.phone.of('media-path').slice(since.get('media-path') ?? 0);

  async function hangUp(x: Client): Promise<void> {
    const ended = x.phone.of('ended').length;
    x.phone.send('hangup');
    await x.phone.next('ended', 6000, ended);
    await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 8000).catch(() => {
      throw new Error(`still up: ${edge.calls.size} edge calls, ${relay.callCount} relay calls`);
    });
  }

  /** x calls y; resolves once both are authenticated, with the marks taken before dialling. */
  async function dial(x: Client, y: Client) {
    const mx = x.phone.mark();
    const my = y.phone.mark();
    x.phone.send(`call sip:${y.name}@keylatch.test`);
    const [ax, ay] = await Promise.all([x.phone.next('media-authenticated', 12000, mx), y.phone.next('media-authenticated', 12000, my)]);
    return { mx, my, authAt: Math.max(ax.at as number, ay.at as number) };
  }

  async function call(x: Client, y: Client, expectDirect: boolean): Promise<CallResult> {
    const { mx, my, authAt } = await dial(x, y);
    let toDirectMs: number | null = null;
    let relayForwardedAfter: number | null = null;
    if (expectDirect) {
      // The birthday attempt (a symmetric side) starts after 0.5 s and takes up to ~3.5 s more.
      const [dx, dy] = await Promise.all([x.phone.next('media-path', 8000, mx), y.phone.next('media-path', 8000, my)]);
      expect([dx.path, dy.path]).toEqual(['direct', 'direct']);
      toDirectMs = Math.max(dx.at as number, dy.at as number) - authAt;
      await sleep(150); // packets already in flight on the relay path
      const before = forwarded();
      await sleep(1000);
      relayForwardedAfter = forwarded() - before;
      expect(relayCall().map((l) => l.mediaPath)).toEqual(['direct', 'direct']);
    } else {
      await sleep(5000); // plain punching and the birthday attempt both given their time
      // Punching was tried (the relay named the peers) and never got through.
      expect(pathEvents(x, mx)).toHaveLength(0);
      expect(pathEvents(y, my)).toHaveLength(0);
    }
    await sleep(1000);
    const [sx, sy] = [await x.phone.stats(), await y.phone.stats()];
    expect(sx.path.path).toBe(expectDirect ? 'direct' : 'relay');
    expect(sx.path.attempts).toBeGreaterThan(0);
    for (const [s, peer] of [[sx, y], [sy, x]] as Array<[MediaStats, Client]>) {
      expect(s.received.packets).toBeGreaterThan(60);
      if (expectDirect) expect(s.path.peer!.address).toBe(peer.net.publicIp);
    }
    await hangUp(x);
    // Each heard the other's tone, by frequency, at the end of the call (the direct part when direct).
    for (const [me, peer] of [[x, y], [y, x]] as const) {
      const tail = readWav(path.join(dir, `${me.name}.wav`)).subarray(-8000);
      expect(toneShare(tail, peer.toneHz)).toBeGreaterThan(0.5);
      expect(toneShare(tail, me.toneHz)).toBeLessThan(0.1);
    }
    return { direct: expectDirect, toDirectMs, relayForwardedAfter, maxGapMs: Math.max(sx.received.maxGapMs, sy.received.maxGapMs) };
  }

  // Hole punching gets through when at least one side's filtering admits the other's mapping
  // toward it: port-preserving NATs open for each other by sending at once, an address-
  // restricted one admits even a symmetric NAT's fresh port. Port-preserving against symmetric
  // takes the birthday attempt (docs/direct-media.md); symmetric against symmetric cannot punch
  // at all: both stay on the relay.
  const matrix: Array<[string, string, boolean]> = [
    ['pr1', 'pr2', true], ['pr1', 'ar1', true], ['ar1', 'ar2', true], ['sym1', 'ar2', true],
    ['pr2', 'sym1', true], ['sym1', 'sym2', false],
  ];
  const byBirthday = (x: Client, y: Client): boolean => [x.kind, y.kind].sort().join() === 'port-preserving,symmetric';

  it.each(matrix)('%s and %s, calls both ways: direct = %s', async (xn, yn, direct) => {
    const x = clients[xn]!;
    const y = clients[yn]!;
    const results = [await call(x, y, direct), await call(y, x, direct)];
    for (const r of results) {
      if (r.direct) {
        expect(r.relayForwardedAfter).toBe(0);
        expect(r.toDirectMs!).toBeLessThan(byBirthday(x, y) ? 6000 : 1000);
      }
      // No audible gap anywhere in the call, the switch included (20 ms packets; timers on a loaded box add some).
      expect(r.maxGapMs).toBeLessThan(200);
    }
    console.log(`direct media ${x.kind} ${xn} <-> ${y.kind} ${yn}: ${results.map((r) => (r.direct ? `direct in ${r.toDirectMs} ms, relay forwarded ${r.relayForwardedAfter} after, max gap ${r.maxGapMs} ms` : `relay, max gap ${r.maxGapMs} ms`)).join('; ')}`);
  }, 90000);

  it('a rebinding mid-call on the symmetric side: the path heals (via the relay within 1 s, or direct at once), audio both ways throughout', async () => {
    const x = clients.sym1!;
    const y = clients.ar2!;
    const { mx, my } = await dial(x, y);
    await Promise.all([x.phone.next('media-path', 4000, mx), y.phone.next('media-path', 4000, my)]);
    await sleep(500);
    const before = [await x.phone.stats(), await y.phone.stats()];
    const flushAt = Date.now();
    topo.flushConntrack(x.net.natNs);
    await sleep(3000);
    const after = [await x.phone.stats(), await y.phone.stats()];
    // Either side that lost the direct path fell back within 1 s of the flush.
    for (const c of [x, y]) {
      for (const e of pathEvents(c, c === x ? mx : my).filter((e) => e.path === 'relay')) expect((e.at as number) - flushAt).toBeLessThan(1000 + 200);
    }
    for (let i = 0; i < 2; i++) {
      expect(after[i]!.received.packets - before[i]!.received.packets).toBeGreaterThan(100); // ~150 in 3 s
      expect(after[i]!.received.maxGapMs).toBeLessThan(1100);
    }
    // Direct again (or still) after the flush, toward the symmetric NAT's new mapping.
    const sy = await y.phone.stats();
    expect(sy.path.path).toBe('direct');
    expect(sy.path.peer!.address).toBe(x.net.publicIp);
    console.log(`rebinding on ${x.kind}: paths ${JSON.stringify([...pathEvents(x, mx), ...pathEvents(y, my)].map((e) => [e.path, (e.at as number) - flushAt]))}, ` +
      `peer port ${before[1]!.path.peer?.port} -> ${sy.path.peer?.port}, max gap ${after[0]!.received.maxGapMs}/${after[1]!.received.maxGapMs} ms`);
    await hangUp(x);
  }, 30000);

  it('a NAT that drops all traffic between the two clients: the call stays on the relay with no gap, and a mid-call block falls back within 1 s', async () => {
    const x = clients.pr1!;
    const y = clients.pr2!;
    const block = (op: '-I' | '-D') => {
      topo.exec(x.net.natNs, 'iptables', [op, 'FORWARD', '-d', y.net.publicIp, '-j', 'DROP']);
      topo.exec(x.net.natNs, 'iptables', [op, 'FORWARD', '-s', y.net.publicIp, '-j', 'DROP']);
    };
    block('-I');
    try {
      const { mx } = await dial(x, y);
      await sleep(2500);
      expect(pathEvents(x, mx)).toHaveLength(0);
      const s = await x.phone.stats();
      expect(s.path.path).toBe('relay');
      expect(s.received.maxGapMs).toBeLessThan(200);
    } finally {
      block('-D');
    }
    // Unblocked: the next attempt (within retryAfterMs) gets through.
    const mx2 = x.phone.mark();
    await x.phone.next('media-path', 10000, mx2);
    expect((await x.phone.stats()).path.path).toBe('direct');
    const blockedAt = Date.now();
    block('-I');
    try {
      const fell = await x.phone.next('media-path', 3000, x.phone.mark());
      expect(fell.path).toBe('relay');
      expect((fell.at as number) - blockedAt).toBeLessThan(1000);
      await sleep(1000);
      const s = await y.phone.stats();
      expect(s.path.path).toBe('relay');
      console.log(`direct path blocked mid-call: back on the relay after ${(fell.at as number) - blockedAt} ms; max gap heard ${s.received.maxGapMs} ms`);
    } finally {
      block('-D');
    }
    await hangUp(x);
  }, 45000);

  it('an attacker who knows both mappings sprays probes, RTP and forged rendezvous at the clients and the relay: nothing accepted, nothing heard', async () => {
    const x = clients.pr1!;
    const y = clients.ar1!;
    const { mx, my } = await dial(x, y);
    await Promise.all([x.phone.next('media-path', 4000, mx), y.phone.next('media-path', 4000, my)]);
    const legs = relayCall();
    const targets = legs.map((l) => l.latched!);
    const relayPorts = legs.flatMap((l) => l.streams.map((s) => s.rtp.port));
    const hello = relay.drops['hello-rejected'];
    // The forger's datagrams leave with the relay's own address and port as their source.
    const spoof = (op: '-A' | '-D') => legs.forEach((l, i) => topo.exec(attacker.ns, 'iptables', ['-t', 'nat', op, 'POSTROUTING', '-p', 'udp', '--sport', String(FORGED_PORT),
      '-d', targets[i]!.address, '--dport', String(targets[i]!.port), '-j', 'SNAT', '--to-source', `${RELAY_IP}:${relayPorts[i]}`]));
    spoof('-A');
    const spray = jsonLines(topo.spawnTs(attacker.ns, DIRECT_SPRAYER, { targets, relay: RELAY_IP, relayPorts, legIds: legs.map((l) => l.legId), me: attacker.ip, durationMs: 3000 }));
    const done = (await spray.finally(() => spoof('-D'))).find((l) => l.event === 'done')!;
    const [sx, sy] = [await x.phone.stats(), await y.phone.stats()];
    expect(done.sent as number).toBeGreaterThan(1000);
    expect(done.received).toBe(0);
    for (const [s, peer] of [[sx, y], [sy, x]] as Array<[MediaStats, Client]>) {
      expect(s.path).toMatchObject({ path: 'direct', switches: 1 });
      expect(s.path.peer!.address).toBe(peer.net.publicIp);
      expect(s.ssrcs).toHaveLength(1);
      expect(Object.keys(s.sources).every((src) => src.startsWith(`${peer.net.publicIp}:`) || src.startsWith(`${RELAY_IP}:`))).toBe(true);
    }
    expect(relay.drops['hello-rejected']).toBeGreaterThan(hello);
    console.log(`attacker sent ${done.sent as number} datagrams to both clients' mappings and the relay; got ${done.received as number} back; both clients still direct with their real peer`);
    await hangUp(x);
  }, 30000);
});
