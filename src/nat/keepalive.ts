import type Srf from 'drachtio-srf';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import { contactUri } from '../sip/registration';
import { requestWithTimeout, unregisterUpstream } from '../sip/upstream';
import type { Binding } from './binding';
import type { BindingStore } from './binding-store';
import { DueQueue } from './due-queue';
import { afterAnswered, afterMappingLost, learnedOf, policyFrom, type KeepalivePolicy, type LearnedInterval } from './keepalive-policy';

/** How often the schedule is looked at; a keepalive may leave up to this much early, never late. */
const TICK_MS = 1000;
/**
 * How often every binding is read to find new ones and forget gone ones. Between these only the
 * flows that are due are touched. A binding written elsewhere (another process, another edge's
 * refresh) is found within this; its flow is due no sooner than floorSec after it was last seen,
 * so a resync at most that often never finds a flow already overdue.
 */
const RESYNC_MAX_MS = 5000;
/** How long a dropped binding's lesson waits for its device to register again. */
const LOST_TTL_MS = 3_600_000;
const LOST_MAX = 10_000;

/** What the scheduler knows of one flow beyond the stored binding; per instance, in memory. */
interface Flow {
  /** "address:port" the binding was last seen on: a change is a new NAT mapping. */
  source: string;
  contact: string;
  lastProbeAt: number;
  inFlight: boolean;
  failures: number;
  /** The first unanswered keepalive on `source`, until the flow answers again or moves. */
  unanswered: { source: string; gapMs: number } | null;
  answeredInARow: number;
  /** When this flow's next keepalive is due, as queued in `due`; entries at other times are stale. */
  dueAt: number;
  /** Its interval as last read from the binding (learned, or the configured one). */
  intervalMs: number;
}

/** A binding dropped for a dead flow: if its device comes back from the same IP, its NAT forgot it. */
interface Lost {
  address: string;
  port: number;
  gapMs: number;
  learned: LearnedInterval;
  at: number;
}

const keyOf = (s: Binding['source']): string => `${s.address}:${s.port}`;
const deviceOf = (b: Binding): string => `${b.aor}\n${contactUri(b.contact)}`;
const eligible = (b: Binding, now: number): boolean => b.natted && b.transport === 'udp' && b.expires > now;

/** Sends one keepalive down a binding's flow; resolves if the client answered, rejects if not. */
export type Ping = (b: Binding) => Promise<void>;

/**
 * Keeps NATed UDP flows open from our side (RFC 5626 section 4.4) and notices dead ones: an
 * OPTIONS down each flow once it has idled its interval (client requests count as traffic).
 * Any response, even an error, proves the flow; after maxFailures silences in a row the
 * binding is dropped and the PBX told. The interval is learned per flow (keepalive-policy.ts)
 * and kept on the binding, so every instance sharing a Redis store uses what one learned.
 */
export class KeepaliveScheduler {
  private readonly flows = new Map<string, Flow>();
  private readonly lost = new Map<string, Lost>();
  private readonly policy: KeepalivePolicy;
  private readonly ping: Ping;
  private timer: NodeJS.Timeout | null = null;
  private scanning = false;
  private readonly due = new DueQueue();
  private resyncAt = 0;
  private readonly resyncMs: number;
  private queue: Promise<unknown> = Promise.resolve();
  private stopped = false;

  /** Registered on the edge's Prometheus registry by registerKeepaliveMetrics. */
  readonly metrics = {
    sent: new Histogram({
      name: 'keylatch_keepalive_interval_seconds', help: 'Keepalives sent down NATed UDP flows, by the interval the flow was on',
      buckets: [5, 7.5, 10, 12.5, 15, 20, 25, 30, 60], registers: [],
    }),
    unanswered: new Counter({ name: 'keylatch_keepalive_unanswered_total', help: 'Keepalives that got no answer from the client', registers: [] }),
    adaptations: new Counter({
      name: 'keylatch_keepalive_adaptations_total', help: 'Per-flow keepalive intervals changed: shorter after a NAT forgot a mapping, longer after a run of answers',
      labelNames: ['direction'], registers: [],
    }),
    dropped: new Counter({ name: 'keylatch_keepalive_bindings_dropped_total', help: 'Bindings dropped because their flow stopped answering', registers: [] }),
    flows: new Gauge({ name: 'keylatch_keepalive_flows', help: 'NATed UDP flows kept alive, by whether their interval was learned', labelNames: ['learned'], registers: [] }),
  };

  /**
   * holdsFlow: whether this instance's drachtio-server holds a binding's flow. Edges sharing a
   * store each keep alive their own flows only: another edge's OPTIONS would leave from an
   * address the client's NAT never saw, go unanswered, and drop a binding that is fine.
   */
  constructor(private readonly deps: { srf: Srf; store: BindingStore; sip: SipConfig; log: Logger; ping?: Ping; holdsFlow?: (b: Binding) => boolean }) {
    this.policy = policyFrom(deps.sip.keepalive);
    this.resyncMs = Math.max(TICK_MS, Math.min(RESYNC_MAX_MS, this.policy.floorMs));
    this.ping = deps.ping ?? ((b) => this.options(b));
  }

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => void this.tick(), TICK_MS);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // Started again, it reads every binding first (flows stay: what they learned is kept).
    this.resyncAt = 0;
  }

  /** One keepalive down every flow right now, whether due or not; exposed so tests need not wait. */
  async round(): Promise<void> {
    await Promise.all(await this.serialized(() => this.scan(true)));
  }

  /** The timer's pass: keepalives for the flows that are due; they finish in the background. */
  async tick(): Promise<void> {
    if (this.scanning) return; // a slow scan must not pile up behind itself
    await this.serialized(() => this.scan(false)).catch((err: Error) => this.deps.log.warn({ err: err.message }, 'keepalive scan failed'));
  }

  /** One scan at a time: a round() asked for during a tick's scan runs after it, not never. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /**
   * The due flows' keepalives (all flows' with `all`), after a resync when one is due. A due
   * flow's binding is read again first: a client request since (lastSeen) pushes it back.
   */
  private async scan(all: boolean): Promise<Array<Promise<void>>> {
    this.scanning = true;
    const started: Array<Promise<void>> = [];
    try {
      const now = Date.now();
      if (all || now >= this.resyncAt) await this.resync(now);
      if (all) {
        for (const [id, flow] of this.flows) if (!flow.inFlight) started.push(this.probe(id, flow));
        return started;
      }
      const holds = this.deps.holdsFlow ?? (() => true);
      for (let next = this.due.popDue(now + TICK_MS); next; next = this.due.popDue(now + TICK_MS)) {
        const flow = this.flows.get(next.id);
        if (!flow || flow.dueAt !== next.at || flow.inFlight) continue; // stale, or its probe reschedules it
        const b = await this.deps.store.get(next.id);
        if (!b || !eligible(b, now) || !holds(b)) {
          this.flows.delete(next.id);
          continue;
        }
        await this.observe(b);
        const dueAt = this.dueAt(b, flow);
        if (now < dueAt - TICK_MS) this.schedule(next.id, flow, dueAt);
        else started.push(this.probe(next.id, flow, b));
      }
    } finally {
      this.scanning = false;
    }
    return started;
  }

  /** Every binding this instance keeps alive, read once: new ones queued, gone ones forgotten. */
  private async resync(now: number): Promise<void> {
    this.resyncAt = now + this.resyncMs;
    const holds = this.deps.holdsFlow ?? (() => true);
    const bindings = (await this.deps.store.all()).filter((b) => eligible(b, now) && holds(b));
    const present = new Set<string>();
    let learned = 0;
    for (const b of bindings) {
      present.add(b.id);
      const flow = await this.observe(b);
      if (b.keepaliveIntervalMs !== undefined) learned++;
      // Sooner than queued (an interval learned elsewhere, a new flow): queue it at the new time.
      const dueAt = this.dueAt(b, flow);
      if (!flow.inFlight && dueAt < flow.dueAt) this.schedule(b.id, flow, dueAt);
    }
    for (const id of this.flows.keys()) if (!present.has(id)) this.flows.delete(id);
    for (const [device, l] of this.lost) if (now - l.at > LOST_TTL_MS) this.lost.delete(device);
    this.metrics.flows.set({ learned: 'true' }, learned);
    this.metrics.flows.set({ learned: 'false' }, bindings.length - learned);
  }

  private schedule(id: string, flow: Flow, at: number): void {
    flow.dueAt = at;
    this.due.push(at, id);
  }

  /** The flow of a binding as just read from the store; learns when it shows a new mapping. */
  private async observe(b: Binding): Promise<Flow> {
    const intervalMs = learnedOf(b, this.policy).intervalMs;
    let flow = this.flows.get(b.id);
    // As learned anywhere (the store is shared), before what this read teaches; not while a
    // probe is out, whose own lesson may be newer than this read.
    if (flow && !flow.inFlight) flow.intervalMs = intervalMs;
    if (!flow) {
      flow = { source: keyOf(b.source), contact: contactUri(b.contact), lastProbeAt: 0, inFlight: false, failures: 0, unanswered: null, answeredInARow: 0, dueAt: Infinity, intervalMs };
      this.flows.set(b.id, flow);
      await this.cameBack(b);
      return flow;
    }
    if (keyOf(b.source) === flow.source) return flow;
    // The client spoke from a new public port. If our keepalive to the old one had gone
    // unanswered, the NAT had forgotten it; if the Contact changed too, the phone itself did.
    const lesson = flow.unanswered && contactUri(b.contact) === flow.contact ? flow.unanswered.gapMs : null;
    this.deps.log.debug({ binding: b.id, from: flow.source, to: keyOf(b.source), lesson }, 'keepalive flow moved');
    Object.assign(flow, { source: keyOf(b.source), contact: contactUri(b.contact), failures: 0, unanswered: null, answeredInARow: 0 });
    if (lesson !== null) await this.learn(b, lesson, 'client came back from a new mapping');
    return flow;
  }

  /** A binding new to us: the device of a binding we dropped, back from the same IP on a new port? */
  private async cameBack(b: Binding): Promise<void> {
    const l = this.lost.get(deviceOf(b));
    if (!l || l.address !== b.source.address || l.port === b.source.port) return;
    this.lost.delete(deviceOf(b));
    await this.learn(b, l.gapMs, 'client re-registered after its binding was dropped', l.learned);
  }

  /** flow.intervalMs is the binding's as observe() read it, or what was learned since. */
  private dueAt(b: Binding, flow: Flow): number {
    return Math.max(b.lastSeen, flow.lastProbeAt) + flow.intervalMs;
  }

  /** read: the binding as the caller just read it, so the keepalive need not read it again. */
  private async probe(id: string, flow: Flow, read?: Binding): Promise<void> {
    if (flow.inFlight) return;
    flow.inFlight = true;
    try {
      await this.probeOnce(id, flow, read);
    } finally {
      flow.inFlight = false;
      // Next due an interval after this one left; the binding is read again then, so a client
      // request meanwhile, or an interval learned by this probe, moves it on from there.
      if (this.flows.get(id) === flow && !this.stopped) this.schedule(id, flow, flow.lastProbeAt + flow.intervalMs);
    }
  }

  private async probeOnce(id: string, flow: Flow, read?: Binding): Promise<void> {
    const { store, log } = this.deps;
    const b = read ?? (await store.get(id));
    if (!b || !eligible(b, Date.now())) return;
    const source = keyOf(b.source);
    const sentAt = Date.now();
    const gapMs = sentAt - Math.max(b.lastSeen, flow.lastProbeAt);
    flow.lastProbeAt = sentAt;
    this.metrics.sent.observe(learnedOf(b, this.policy).intervalMs / 1000);
    let error: Error | null = null;
    await this.ping(b).catch((err: Error) => (error = err));
    if (this.stopped) return;
    if (!error) {
      if (source !== flow.source) return; // proves a mapping the client has already left
      Object.assign(flow, { failures: 0, unanswered: null, answeredInARow: flow.answeredInARow + 1 });
      // Read again (to write back) only when this answer lengthens the interval: most never do.
      if (afterAnswered(learnedOf(b, this.policy), flow.answeredInARow, this.policy)) await this.answered(b, flow);
      return;
    }
    this.metrics.unanswered.inc();
    const now = await store.get(id);
    if (!now) return;
    if (keyOf(now.source) !== source) {
      // The client reappeared on a new mapping while this keepalive to the old one went unanswered.
      if (flow.source === source) {
        flow.unanswered ??= { source, gapMs };
        await this.observe(now);
      } else if (contactUri(now.contact) === flow.contact) {
        await this.learn(now, gapMs, 'client came back from a new mapping'); // the move was seen while this one was out
      }
      return;
    }
    flow.unanswered ??= { source, gapMs };
    flow.failures++;
    log.info({ binding: id, aor: b.aor, failures: flow.failures, gapMs, err: (error as Error).message }, 'keepalive failed');
    if (flow.failures < this.deps.sip.keepalive.maxFailures) return;
    await this.drop(now, flow.unanswered.gapMs);
  }

  private async answered(b: Binding, flow: Flow): Promise<void> {
    const changed = await this.relearn(b.id, (now) => afterAnswered(now, flow.answeredInARow, this.policy));
    if (!changed) return;
    flow.answeredInARow = 0;
    this.metrics.adaptations.inc({ direction: 'longer' });
    this.deps.log.info({ binding: b.id, aor: b.aor, intervalMs: changed.after.intervalMs, failedMs: changed.after.failedMs }, 'keepalive interval lengthened');
  }

  /** The NAT forgot a mapping after `gapMs` idle; `from` is what was learned before, when not on the binding itself. */
  private async learn(b: Binding, gapMs: number, why: string, from?: LearnedInterval): Promise<void> {
    const changed = await this.relearn(b.id, (now) => afterMappingLost(from ?? now, gapMs, this.policy));
    if (!changed) return; // the same loss seen twice (a move and a late failure) teaches nothing new
    const flow = this.flows.get(b.id);
    if (flow) flow.answeredInARow = 0;
    this.metrics.adaptations.inc({ direction: 'shorter' });
    const { before, after } = changed;
    const atFloor = after.intervalMs <= this.policy.floorMs && after.intervalMs >= before.intervalMs;
    this.deps.log[atFloor ? 'warn' : 'info']({ binding: b.id, aor: b.aor, gapMs, intervalMs: after.intervalMs, failedMs: after.failedMs, why }, atFloor ? 'NAT forgets mappings faster than the keepalive floor' : 'keepalive interval shortened');
  }

  /**
   * Applies `change` to what is learned on the binding as it is now, and writes it back:
   * re-read first, so a move or refresh that landed meanwhile is kept. (A store with a field
   * update would close the last gap between the read and the write; the stores have none.)
   */
  private async relearn(id: string, change: (now: LearnedInterval) => LearnedInterval | null): Promise<{ before: LearnedInterval; after: LearnedInterval } | null> {
    const b = await this.deps.store.get(id);
    if (!b || this.stopped) return null;
    const before = learnedOf(b, this.policy);
    const after = change(before);
    if (!after || (after.intervalMs === before.intervalMs && after.failedMs === before.failedMs)) return null;
    await this.deps.store.put({ ...b, keepaliveIntervalMs: after.intervalMs, ...(after.failedMs !== null ? { keepaliveFailedMs: after.failedMs } : {}) });
    const flow = this.flows.get(id);
    if (flow) flow.intervalMs = after.intervalMs; // the next keepalive is queued at the new interval
    return { before, after };
  }

  private async drop(b: Binding, gapMs: number): Promise<void> {
    const { srf, sip, log, store } = this.deps;
    this.flows.delete(b.id);
    if (this.lost.size >= LOST_MAX) this.lost.delete(this.lost.keys().next().value!);
    this.lost.set(deviceOf(b), { address: b.source.address, port: b.source.port, gapMs, learned: learnedOf(b, this.policy), at: Date.now() });
    await store.remove(b.id);
    this.metrics.dropped.inc();
    log.warn({ binding: b.id, aor: b.aor, source: b.source }, 'flow dead: binding dropped');
    await unregisterUpstream(srf, sip, b).catch((e: Error) => log.warn({ binding: b.id, err: e.message }, 'could not unregister upstream'));
  }

  private async options(b: Binding): Promise<void> {
    const { srf, sip } = this.deps;
    const res = await requestWithTimeout(srf, contactUri(b.contact), {
      method: 'OPTIONS',
      headers: { From: `<sip:keylatch@${sip.advertisedAddress}>`, To: `<${b.aor}>` },
      proxy: `sip:${b.source.address}:${b.source.port}`,
    }, sip.keepalive.timeoutMs);
    // An ICMP port-unreachable makes the stack answer 503 itself, with no source address:
    // that is the flow being dead, not the phone answering.
    if (!res.source_address) throw new Error(`${res.status} generated locally: flow unreachable`);
  }
}

/** Puts the scheduler's metrics on the registry /metrics serves. */
export function registerKeepaliveMetrics(k: KeepaliveScheduler, registry: Registry): void {
  for (const m of Object.values(k.metrics)) registry.registerMetric(m);
}
