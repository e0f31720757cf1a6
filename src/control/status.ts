/**
 * What `keylatch status` shows, as JSON: who is registered (and how keylatch reaches them) and
 * which calls are up, leg by leg, with the relay's latch state and packet counts. Built from the
 * relay's and the binding store's own state at request time; nothing is kept for it.
 */
import { joinHostPort } from '../host-port';
import type { Relay } from '../media/relay';
import type { Binding } from '../nat/binding';
import type { BindingStore } from '../nat/binding-store';
import type { RoomInfo } from '../rooms/room';
import type { NodeLeg } from '../relay-pool/nodes';

export const STATUS_PATH = '/status';
/** Bindings listed per request; the total is always given, so a cut list says so. */
export const STATUS_BINDING_LIMIT = 500;

export interface BindingStatus {
  aor: string;
  transport: string;
  /** Where the client's signalling really comes from (its NAT's public side). */
  source: string;
  natted: boolean;
  natTests: string[];
  /** How often keylatch keeps this flow open; null when it does not (not NATed UDP). */
  keepaliveIntervalMs: number | null;
  secure: boolean;
  keylatch: boolean;
  lastSeen: number;
  expires: number;
}

export interface LegStatus {
  tag: string | null;
  policy: string;
  /** The latch of each stream's RTP port, e.g. "locked", "learning", "authenticated". */
  latchState: string;
  latched: string | null;
  /** Where the leg's client says its media goes: 'relay', or 'direct' to the other client. */
  mediaPath: 'relay' | 'direct';
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  lastSeen: number;
}

export interface CallStatus {
  callId: string;
  legs: LegStatus[];
}

/**
 * A call whose media is on a pooled ng node (media.relays), with its legs as that node reports
 * them (ng query). Both halves of a hairpinned conversation show the one relay call they share.
 */
export interface PooledCallStatus {
  /** The SIP Call-ID at this edge. */
  callId: string;
  relay: string;
  kind: string;
  /** The call's id on the node (a hairpin's: the call that owns the leg it adopted). */
  relayCallId: string;
  hairpin: boolean;
  /** As the node reports them; null when it did not say (then `error` says why). */
  legs: NodeLeg[] | null;
  timedOut: boolean;
  error?: string;
}

export interface StatusSnapshot {
  service: 'edge' | 'relay';
  now: number;
  uptimeSec: number;
  summary: Record<string, string>;
  bindings: { total: number; shown: BindingStatus[] } | null;
  calls: CallStatus[];
  /** Calls on pooled ng nodes, when media.relays names any (their legs are not in `calls`). */
  pooledCalls?: { total: number; shown: PooledCallStatus[] };
  /** Group calls (src/rooms), when rooms are enabled. */
  rooms?: RoomInfo[];
}

export interface StatusSources {
  service: 'edge' | 'relay';
  startedAt: number;
  relay: Relay;
  store?: BindingStore;
  /** The lines of the start-up summary, repeated so `keylatch status` shows what is configured. */
  summary: () => Record<string, string>;
  /** The keepalive interval for bindings that carry none of their own (sip.keepalive.intervalSec). */
  defaultKeepaliveMs?: number;
  rooms?: () => RoomInfo[];
  /** The edge's calls on pooled ng nodes, asked of their nodes at request time. */
  pooledCalls?: () => Promise<{ total: number; shown: PooledCallStatus[] }>;
}

const hostPort = (e: { address: string; port: number } | null): string | null => (e ? joinHostPort(e.address, e.port) : null);

/**
 * A binding's keepalive: the interval learned for its flow when there is one (older records and
 * new flows have none), else the configured one for the flows the scheduler probes, NATed UDP.
 */
function keepaliveOf(b: Binding, fallbackMs: number | undefined): number | null {
  const own = b.keepaliveIntervalMs;
  if (typeof own === 'number' && Number.isFinite(own)) return own;
  return b.natted && b.transport === 'udp' && fallbackMs !== undefined ? fallbackMs : null;
}

export function bindingStatus(b: Binding, defaultKeepaliveMs?: number): BindingStatus {
  return {
    aor: b.aor,
    transport: b.transport,
    source: hostPort(b.source)!,
    natted: b.natted,
    natTests: [...b.natTests],
    keepaliveIntervalMs: keepaliveOf(b, defaultKeepaliveMs),
    secure: b.secure,
    keylatch: b.keylatch,
    lastSeen: b.lastSeen,
    expires: b.expires,
  };
}

export function callStatuses(relay: Relay): CallStatus[] {
  const byCall = new Map<string, LegStatus[]>();
  for (const { callId, stats } of relay.legs()) {
    const legs = byCall.get(callId) ?? [];
    legs.push({
      tag: stats.tag,
      policy: stats.policy,
      latchState: stats.streams.length ? stats.streams.map((s) => s.rtp.state).join(',') : 'no-media',
      latched: hostPort(stats.latched),
      mediaPath: stats.mediaPath,
      packetsIn: stats.packetsIn,
      packetsOut: stats.packetsOut,
      bytesIn: stats.bytesIn,
      bytesOut: stats.bytesOut,
      lastSeen: stats.lastSeen,
    });
    byCall.set(callId, legs);
  }
  return [...byCall].map(([callId, legs]) => ({ callId, legs }));
}

export async function statusSnapshot(src: StatusSources, now = Date.now()): Promise<StatusSnapshot> {
  const listed = src.store ? await src.store.list({ limit: STATUS_BINDING_LIMIT }) : null;
  return {
    service: src.service,
    now,
    uptimeSec: Math.round((now - src.startedAt) / 1000),
    summary: src.summary(),
    bindings: listed ? { total: listed.total, shown: listed.bindings.map((b) => bindingStatus(b, src.defaultKeepaliveMs)) } : null,
    calls: callStatuses(src.relay),
    ...(src.pooledCalls ? { pooledCalls: await src.pooledCalls() } : {}),
    ...(src.rooms ? { rooms: src.rooms() } : {}),
  };
}

/** The /status route for the admin listener. */
export function statusRoute(src: StatusSources): () => Promise<{ contentType: string; body: string }> {
  return async () => ({ contentType: 'application/json', body: `${JSON.stringify(await statusSnapshot(src), null, 2)}\n` });
}
