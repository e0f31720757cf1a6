/**
 * The relay-pool fixture of the namespace suites (relay failover, dead media on nodes): Kamailio
 * as a B2BUA-like PBX, drachtio, an edge whose calls all go to the given ng nodes, and stock
 * baresip phones behind NATs, each watched by tshark in its namespace.
 */
import { ngSealKey } from '../../src/control/ng-key-seal';
import { loadConfig } from '../../src/config/load';
import type { SipConfig } from '../../src/config/schema';
import { createLogger, silentLogger } from '../../src/log';
import { Relay } from '../../src/media/relay';
import { NgNode } from '../../src/relay-pool/nodes';
import { RelayPool, type PoolOptions } from '../../src/relay-pool/pool';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { Baresip, wavClosed } from './baresip';
import { startDrachtio, type RunningDrachtio } from './drachtio';
import { startKamailio } from './kamailio';
import { RELAY_IP, Topology } from './netns';
import { sleep, waitFor, waitForAsync } from './peers';
import { RtpWatch, TEST_NG_KEY_SECRET, startKeylatchRelay, startRtpengine, type RunningNode } from './relay-nodes';

export const ESTABLISHED = /Call established/;
export const CLOSED = /terminated|closed/i;
/** The target of issue 13: audio back within 2 s of the node's death. */
export const MAX_GAP_MS = 2000;

export type Net = ReturnType<Topology['addNattedClient']>;
export interface Phone {
  user: string;
  hz: number;
  net: Net;
  sip: Baresip;
  rtp: RtpWatch;
}

export interface Fixture {
  topo: Topology;
  drachtio: RunningDrachtio;
  relay: Relay;
  pool: RelayPool;
  edge: SipEdge;
  pbx: ReturnType<typeof startKamailio>;
  phones: Record<string, Phone>;
}

export type PhoneSpec = [user: string, n: number, hz: number, kind: 'port-preserving' | 'symmetric'];

/** Kamailio, drachtio, an edge on `nodes` (kind per node) and baresip phones behind NATs, each watched by tshark. */
export async function startFixture(topo: Topology, pbxHost: { ns: string; ip: string }, nodes: Array<{ url: string; kind: 'keylatch' | 'rtpengine'; weight: number }>, spec: PhoneSpec[], adminPort: number, tls?: { cert: string; key: string }, poolOptions: Partial<PoolOptions> = {}): Promise<Fixture> {
  const pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`);
  const wss = tls ? [`sips:${RELAY_IP}:5063;transport=wss`] : [];
  const drachtio = await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp,tcp`, ...wss], adminPort, ...(tls ? { tls } : {}) });
  const defaults = loadConfig({ env: {} });
  // The edge's own relay takes no calls here: every call goes to the nodes.
  const relay = new Relay({ ...defaults.media, interface: RELAY_IP, portMin: 36000, portMax: 36019 });
  const p = defaults.media.relayPool;
  const pool = new RelayPool(nodes.map((n) => ({ node: new NgNode(n.url, n.kind, { pingMs: p.pingTimeoutMs, commandMs: p.commandTimeoutMs }, ngSealKey(TEST_NG_KEY_SECRET)), weight: n.weight })), { pingIntervalMs: p.pingIntervalMs, missedPingsDown: p.missedPingsDown, ...poolOptions });
  pool.start();
  const sip: SipConfig = { ...defaults.sip, pbx: `sip:${pbxHost.ip}:5060`, advertisedAddress: `${RELAY_IP}:5060` };
  const logger = process.env.KEYLATCH_TEST_LOG ? createLogger(process.env.KEYLATCH_TEST_LOG) : silentLogger;
  const edge = await startSipEdge({ drachtio: drachtio.admin, relay, pool, sip, logger });
  const phones: Record<string, Phone> = {};
  for (const [user, n, hz, kind] of spec) {
    const net = topo.addNattedClient(user.slice(0, 2), n, kind);
    const rtp = new RtpWatch(topo, net.clientNs, net.privateIp);
    phones[user] = { user, hz, net, rtp, sip: new Baresip(topo, net.clientNs, { localIp: net.privateIp, user, edge: `${RELAY_IP}:5060`, toneHz: hz }) };
  }
  for (const ph of Object.values(phones)) {
    await ph.rtp.ready();
    await waitForAsync(async () => (await edge.store.byAor(`sip:${ph.user}@keylatch.test`)).length > 0, 10000).catch((err: Error) => {
      throw new Error(`${ph.user} did not register: ${err.message}\n${ph.sip.tail()}\n${pbx.log().slice(-2000)}`);
    });
  }
  return { topo, drachtio, relay, pool, edge, pbx, phones };
}

/** The media ports of the relay nodes keylatchAndRtpengine starts. */
export const NODE_PORTS: [number, number] = [40000, 40199];

export interface TwoKinds {
  topo: Topology;
  pbxHost: { ns: string; ip: string };
  hosts: Record<'k' | 'e', { ns: string; ip: string }>;
  keylatch: RunningNode;
  engine: RunningNode;
}

/**
 * A public net (`name` prefixes its namespaces) with a host for the PBX, a `keylatch relay` node
 * (with `keylatchEnv`) and an rtpengine node (with `rtpengineArgs`), each in a namespace of its
 * own; torn down again if a node does not start.
 */
export async function keylatchAndRtpengine(name: string, keylatchEnv: string[], rtpengineArgs: string[] = []): Promise<TwoKinds> {
  const topo = new Topology(name);
  topo.destroy();
  topo.createPublicNet();
  const pbxHost = topo.addPublicHost('pbx', 5);
  const hosts = { k: topo.addPublicHost('rk', 8), e: topo.addPublicHost('re', 10) };
  try {
    const [keylatch, engine] = await Promise.all([
      startKeylatchRelay(topo, hosts.k.ns, hosts.k.ip, NODE_PORTS.join('-'), keylatchEnv),
      startRtpengine(topo, hosts.e.ns, hosts.e.ip, NODE_PORTS, rtpengineArgs),
    ]);
    return { topo, pbxHost, hosts, keylatch, engine };
  } catch (err) {
    topo.destroy();
    throw err;
  }
}

export async function stopFixture(f: Partial<Fixture>): Promise<void> {
  await f.edge?.close();
  f.pool?.close();
  await f.relay?.close();
  await f.drachtio?.stop();
  for (const ph of Object.values(f.phones ?? {})) ph.rtp.stop();
  f.pbx?.stop();
  f.topo?.destroy();
  for (const ph of Object.values(f.phones ?? {})) ph.sip.remove();
}

/** Calls, hang-ups and recordings through one fixture. */
export function calling(f: () => Fixture) {
  const established = async (p: Phone, before: number): Promise<void> => {
    await waitFor(() => p.sip.count(ESTABLISHED) > before, 10000).catch(() => {
      throw new Error(`${p.user}: no established call\n${p.sip.tail()}\n${f().pbx.log().slice(-2000)}`);
    });
  };
  return {
    async dial(from: Phone, to: Phone): Promise<void> {
      const [a, b] = [from.sip.count(ESTABLISHED), to.sip.count(ESTABLISHED)];
      const calls = f().edge.calls.size;
      from.sip.command(`/dial sip:${to.user}@keylatch.test`);
      await established(from, a);
      await established(to, b);
      // A phone says the call is up when the 200 reaches it; the edge's side of the B2BUA settles
      // a moment later, and what the tests ask of the edge (which node, which relay call) is only
      // there once it has.
      await waitFor(() => f().edge.calls.size >= calls + 2 && [...f().edge.calls.values()].every((c) => c.isConnected), 5000).catch(() => {
        throw new Error(`the edge did not connect both calls of ${from.user} -> ${to.user} (${f().edge.calls.size} calls)`);
      });
    },
    /**
     * `from` calls `to`, who rings (manual answer) while `whileRinging` runs (given the counts below), then answers; resolves,
     * once both phones say the call is up, with when the answer command went in and how many
     * calls each phone of the fixture had seen end just before the dial (by user).
     */
    async ringThenAnswer(from: Phone, to: Phone, whileRinging: (closedBefore: Record<string, number>) => Promise<void>): Promise<{ answeredAt: number; closedBefore: Record<string, number> }> {
      to.sip.command('/answermode manual');
      try {
        await sleep(300);
        const closedBefore = Object.fromEntries(Object.values(f().phones).map((p) => [p.user, p.sip.count(CLOSED)]));
        const incoming = to.sip.count(/Incoming call/);
        const [fromUp, toUp] = [from.sip.count(ESTABLISHED), to.sip.count(ESTABLISHED)];
        from.sip.command(`/dial sip:${to.user}@keylatch.test`);
        await waitFor(() => to.sip.count(/Incoming call/) > incoming && f().edge.calls.size === 2, 8000);
        await whileRinging(closedBefore);
        const answeredAt = Date.now();
        to.sip.command('/accept');
        await waitFor(() => from.sip.count(ESTABLISHED) > fromUp && to.sip.count(ESTABLISHED) > toUp, 10000).catch(() => {
          throw new Error(`the ringing call did not connect\n${from.sip.tail()}\n${to.sip.tail()}`);
        });
        return { answeredAt, closedBefore };
      } finally {
        to.sip.command('/answermode auto');
      }
    },
    /**
     * What the two phones of a call got after the answer, on the wire: each one's share of the
     * other's tone in [until - 2.5 s, until - 0.5 s], and its first RTP (from `source`, if given)
     * after `answeredAt`, in ms.
     */
    heardAfterAnswer(a: Phone, b: Phone, answeredAt: number, until: number, source?: string): { wire: Record<string, number>; firstMedia: Record<string, number>; heard: Array<{ user: string; ok: boolean | string }> } {
      const [from, to] = [until - 2500, until - 500];
      const wire = Object.fromEntries([[a, b], [b, a]].map(([p, o]) => [p!.user, p!.rtp.toneShare(from, to, o!.hz)]));
      const firstMedia = Object.fromEntries([a, b].map((p) => [p.user, (p.rtp.arrivals.find((x) => x.t >= answeredAt && (source === undefined || x.src === source))?.t ?? NaN) - answeredAt]));
      // Each phone heard the other's tone (share over 0.9); if not, what it did get, in the failure.
      const heard = [[a, b], [b, a]].map(([p, o]) => ({ user: p!.user, ok: wire[p!.user]! > 0.9 || `${wire[p!.user]!.toFixed(3)}: ${p!.rtp.describe(from, to, o!.hz)}` }));
      return { wire, firstMedia, heard };
    },
    /** The edge's calls as the tests see them, and the pool's counts, for a failure message. */
    describeCalls(): string {
      const { edge, pool } = f();
      const calls = [...edge.calls.values()].map((c) => {
        const place = c.mediaPlace;
        const at = c.mediaOnNode();
        return { connected: c.isConnected, node: place?.node.id ?? null, relayCall: place?.relayCallId ?? null, hairpin: place?.hairpin ?? null, settled: at ? at.placement : null };
      });
      return JSON.stringify({ calls, moves: pool.moves, lostWhileUp: pool.lostWhileUp, nodes: pool.status().map((s) => [s.id, s.state, s.calls]) });
    },
    /** Hangs up every phone's call, so a failed test leaves no call to the next one. */
    async hangUpAll(): Promise<void> {
      if (f().edge.calls.size === 0) return;
      for (const p of Object.values(f().phones)) p.sip.command('/hangup');
      await waitFor(() => f().edge.calls.size === 0, 8000).catch(() => undefined);
    },
    /** Hangs up p's call; both B2BUA calls of its conversation end. */
    async hangUp(p: Phone): Promise<void> {
      const left = f().edge.calls.size - 2;
      p.sip.command('/hangup');
      await waitFor(() => f().edge.calls.size === left, 8000);
    },
    async closedRecording(p: Phone, n: number): Promise<string> {
      await waitFor(() => p.sip.recordings().length >= n && wavClosed(p.sip.recordings()[n - 1]!), 5000).catch(() => {
        throw new Error(`${p.user}: recording ${n} not closed\n${p.sip.tail()}`);
      });
      return p.sip.recordings()[n - 1]!;
    },
    nodeOf: (url: string) => f().pool.status().find((s) => s.id === url)!,
    /** Each phone's longest RTP gap in [from, to], printed for the report. */
    async gaps(label: string, from: number, to: number): Promise<Record<string, number>> {
      for (const p of Object.values(f().phones)) await p.rtp.caughtUp(to);
      const gaps = Object.fromEntries(Object.values(f().phones).map((p) => [p.user, p.rtp.longestGap(from, to).gapMs]));
      console.log(`${label}; longest RTP gap per phone (ms): ${Object.entries(gaps).map(([u, g]) => `${u} ${g}`).join(', ')}`);
      return gaps;
    },
  };
}
