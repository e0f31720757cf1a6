import { EventEmitter } from 'node:events';
import { silentLogger, type Logger } from '../log';
import type { RelayNode } from './nodes';

export type NodeState = 'up' | 'down' | 'draining';

export interface NodeStatus {
  id: string;
  kind: RelayNode['kind'];
  weight: number;
  state: NodeState;
  calls: number;
  /** Pings missed in a row. */
  missed: number;
  /** Round trip of the last answered ping, ms. */
  lastPingMs: number | null;
}

export class NoRelayAvailable extends Error {
  override name = 'NoRelayAvailable';
}

export interface PoolOptions {
  pingIntervalMs: number;
  /** Missed pings in a row before a node is down: its calls move, it gets no new ones. */
  missedPingsDown: number;
  /** How often the edge asks ng nodes after its answered calls' media (MediaWatch); 0 or absent: never. */
  mediaCheckIntervalMs?: number;
}

interface Member {
  node: RelayNode;
  weight: number;
  /** Another edge process's relay (sibling-relays.ts), there for hairpins only: not the operator's to check. */
  sibling: boolean;
  up: boolean;
  /**
   * Whether it ever answered a ping. A node that has not yet is not a node that died: in a stack
   * started together (docker compose, a DaemonSet) the edge pings before the relay listens.
   */
  answered: boolean;
  draining: boolean;
  missed: number;
  /** The ping under way, if one is: whoever needs a fresh answer waits for it. */
  pinging: Promise<void> | null;
  lastPingMs: number | null;
  /** What its last pong said of when it last lost calls (NodePong.callsLostAt); null if it never says. */
  callsLostAt: number | null;
  calls: Set<string>;
  /** Media addresses this node wrote into SDP: how a PBX's offer that names one of its legs is told apart. */
  addresses: Set<string>;
}

const CONNECTION = /^c=IN IP[46] (\S+)/gm;
const connectionAddresses = (sdp: string): string[] => [...sdp.matchAll(CONNECTION)].map((m) => m[1]!);

export interface PoolEvents {
  /** A node stopped answering: every call on it must move. */
  down: [RelayNode, string[]];
  up: [RelayNode];
  /**
   * A node that kept answering says it lost calls since the last ping (it restarted faster than
   * pings could miss, or a worker of it died): which of its calls are gone, only asking tells.
   */
  forgot: [RelayNode];
}

/**
 * How much later an rtpengine's callsLostAt must be to mean it lost calls again: its figure
 * comes from whole seconds of uptime and wanders by one between pings. keylatch says it exactly.
 */
const RTPENGINE_LOST_AGAIN_SLACK_MS = 1500;

/**
 * The relay nodes an edge may put a call on, and which call is on which. A new call goes to the
 * live, undrained node with the fewest calls for its weight (key calls only to nodes that can
 * hold key legs); every node is pinged, and one that misses missedPingsDown pings in a row is
 * down: it gets no new calls and 'down' names the calls that were on it, for the edge to move.
 */
export class RelayPool extends EventEmitter<PoolEvents> {
  private readonly members: Member[];
  /** Calls moved off dead nodes, and moves that failed (the call was then ended). */
  readonly moves = { moved: 0, failed: 0 };
  /** Calls ended because their node timed their media out (or no longer held them). */
  mediaTimeouts = 0;
  /** Calls a node lost while it kept answering (restarted between pings, or lost a worker): placed again, not ended. */
  lostWhileUp = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(nodes: Array<{ node: RelayNode; weight: number; sibling?: boolean }>, readonly opts: PoolOptions, private readonly log: Logger = silentLogger) {
    super();
    if (nodes.length === 0) throw new Error('a relay pool needs at least one node');
    const ids = new Set<string>();
    for (const { node } of nodes) {
      if (ids.has(node.id)) throw new Error(`relay ${node.id} is listed twice`);
      ids.add(node.id);
    }
    this.members = nodes.map(({ node, weight, sibling }) => ({ node, weight, sibling: sibling ?? false, up: true, answered: false, draining: false, missed: 0, pinging: null, lastPingMs: null, callsLostAt: null, calls: new Set(), addresses: new Set() }));
  }

  /** Starts pinging; the first round goes out at once so a node that is down at start gets no calls. */
  start(): void {
    if (this.timer) return;
    this.pingAll();
    this.timer = setInterval(() => this.pingAll(), this.opts.pingIntervalMs);
    this.timer.unref();
  }

  get nodes(): RelayNode[] {
    return this.members.map((m) => m.node);
  }

  /** The node a new call goes on, and marks the call as on it. */
  place(callId: string, needsKey: boolean, avoid?: RelayNode): RelayNode {
    let best: Member | null = null;
    let bestLoad = Infinity;
    for (const m of this.members) {
      if (!m.up || m.draining || m.weight <= 0 || m.node === avoid || (needsKey && !m.node.keyLegs)) continue;
      const load = (m.calls.size + 1) / m.weight;
      if (load < bestLoad) [best, bestLoad] = [m, load];
    }
    if (!best) {
      const why = needsKey ? 'no live, undrained relay node that can hold key legs' : 'no live, undrained relay node';
      throw new NoRelayAvailable(why);
    }
    best.calls.add(callId);
    return best.node;
  }

  /** The call left the node (ended, or moved elsewhere). */
  release(node: RelayNode, callId: string): void {
    this.member(node)?.calls.delete(callId);
  }

  /** Notes the media addresses in SDP a node returned. */
  noteSdp(node: RelayNode, sdp: string): void {
    const m = this.member(node);
    if (m) for (const a of connectionAddresses(sdp)) m.addresses.add(a);
  }

  /** Live nodes able to hand a leg over whose media addresses this SDP names: where a hairpinned offer came from. */
  hairpinNodesFor(sdp: string): RelayNode[] {
    const named = connectionAddresses(sdp);
    if (named.length === 0) return [];
    return this.members.filter((m) => m.up && m.node.hairpins && named.every((a) => m.addresses.has(a))).map((m) => m.node);
  }

  isUp(node: RelayNode): boolean {
    return this.member(node)?.up ?? false;
  }

  /**
   * Since when the node may have lost calls, as a ping answered now says (null if the node does
   * not say); rejects if the node does not answer. Asked before a call the node no longer holds
   * is taken for ended.
   */
  async callsLostAt(node: RelayNode): Promise<number | null> {
    const m = this.member(node);
    if (!m) return null;
    await this.ping(m);
    // A ping already under way may have been sent before the node lost anything: ask once more.
    await this.ping(m);
    if (m.missed > 0) throw new Error(`${node.id} did not answer a ping`);
    return m.callsLostAt;
  }

  /** A node whose command timed out: ping it now rather than at the next round. */
  suspect(node: RelayNode): void {
    const m = this.member(node);
    if (m) void this.ping(m);
  }

  /** Draining: no new calls; the calls on it go on until they end. Returns false for an unknown id. */
  drain(id: string, on = true): boolean {
    const m = this.members.find((x) => x.node.id === id);
    if (!m) return false;
    if (m.draining !== on) this.log.info({ relay: id, calls: m.calls.size }, on ? 'relay node draining: no new calls' : 'relay node taking calls again');
    m.draining = on;
    return true;
  }

  status(): NodeStatus[] {
    return this.members.map((m) => ({
      id: m.node.id,
      kind: m.node.kind,
      weight: m.weight,
      state: !m.up ? 'down' : m.draining ? 'draining' : 'up',
      calls: m.calls.size,
      missed: m.missed,
      lastPingMs: m.lastPingMs,
    }));
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const m of this.members) m.node.close();
  }

  private member(node: RelayNode): Member | undefined {
    return this.members.find((m) => m.node === node);
  }

  private pingAll(): void {
    for (const m of this.members) void this.ping(m);
  }

  /** Pings the node, or waits for the ping already under way. */
  private ping(m: Member): Promise<void> {
    if (!m.pinging) m.pinging = this.pingOnce(m).finally(() => (m.pinging = null));
    return m.pinging;
  }

  private async pingOnce(m: Member): Promise<void> {
    const started = Date.now();
    try {
      const { mediaAddress, callsLostAt } = await m.node.ping();
      if (mediaAddress) m.addresses.add(mediaAddress);
      m.lastPingMs = Date.now() - started;
      m.missed = 0;
      if (callsLostAt !== undefined) {
        const before = m.callsLostAt;
        m.callsLostAt = before === null ? callsLostAt : Math.max(before, callsLostAt);
        const slack = m.node.kind === 'rtpengine' ? RTPENGINE_LOST_AGAIN_SLACK_MS : 0;
        if (before !== null && callsLostAt > before + slack && m.up && m.calls.size > 0) {
          this.log.warn({ relay: m.node.id, calls: m.calls.size }, 'relay node lost calls while it kept answering (restarted, or a worker died): asking after its calls');
          this.emit('forgot', m.node);
        }
      }
      const first = !m.answered;
      m.answered = true;
      if (!m.up) {
        m.up = true;
        if (first) this.log.info({ relay: m.node.id }, 'relay node answers: it takes calls');
        else this.log.warn({ relay: m.node.id }, 'relay node answers again: it takes new calls');
        this.emit('up', m.node);
      }
    } catch (err) {
      m.missed++;
      // One lost datagram is no death: ask again at once rather than a whole interval later.
      if (m.up && m.missed < this.opts.missedPingsDown) setImmediate(() => void this.ping(m));
      if (m.up && m.missed >= this.opts.missedPingsDown) {
        m.up = false;
        // Its calls are lost with it (a restarted node has forgotten them): all of them move.
        const calls = [...m.calls];
        m.calls.clear();
        if (!m.answered && calls.length === 0) {
          // A sibling edge process starting a little after this one: nothing to check.
          if (m.sibling) return void this.log.info({ relay: m.node.id }, 'sibling edge process does not answer on its hairpin channel yet: a hairpin through it is anchored here too until it does');
          // Nothing was lost: say what the operator can check rather than that calls move.
          this.log.warn({ relay: m.node.id, err: (err as Error).message }, 'relay node has not answered since the edge started: no calls go to it until it does (is it running, and is its media.relays URL right?)');
          return;
        }
        if (m.sibling) this.log.warn({ relay: m.node.id }, 'sibling edge process stopped answering on its hairpin channel (died or restarting): calls hairpinned through its relay lose their media');
        else this.log.error({ relay: m.node.id, calls: calls.length, err: (err as Error).message }, 'relay node down: moving its calls');
        this.emit('down', m.node, calls);
      }
    }
  }
}
