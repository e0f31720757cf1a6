/**
 * The keepalive scheduler against a simulated NAT, on fake time: the NAT forgets a mapping
 * after `timeoutMs` without a packet, and a phone behind it comes back from a new public port.
 * The real thing, with Linux conntrack and drachtio-server, is test/nat/adaptive-keepalive.test.ts.
 */
import type Srf from 'drachtio-srf';
import { Registry } from 'prom-client';
import { loadConfig } from '../../src/config/load';
import type { SipConfig } from '../../src/config/schema';
import { silentLogger } from '../../src/log';
import { newBindingId, type Binding } from '../../src/nat/binding';
import { MemoryBindingStore } from '../../src/nat/binding-store';
import { KeepaliveScheduler, registerKeepaliveMetrics } from '../../src/nat/keepalive';

const base = loadConfig({ env: {} }).sip;
const noPbx = { request: (_u: string, _o: unknown, cb: (err: Error) => void) => cb(new Error('no PBX here')) } as unknown as Srf;

/** One endpoint-dependent NAT mapping at a time, as Linux MASQUERADE --random-fully keeps it. */
class SimNat {
  port = 40000;
  private last = Date.now();
  /** Replies the phone "loses" (answers that never make it back). */
  dropReplies = 0;
  constructor(readonly timeoutMs: number) {}

  alive(): boolean {
    return Date.now() - this.last < this.timeoutMs;
  }

  /** The phone sends something: through the mapping if it still exists, else through a new one. */
  phoneSends(): number {
    if (!this.alive()) this.port++;
    this.last = Date.now();
    return this.port;
  }

  /** A keepalive from keylatch to a public port: answered only through a live mapping. */
  inbound(port: number): boolean {
    if (port !== this.port || !this.alive()) return false;
    this.last = Date.now();
    if (this.dropReplies > 0) {
      this.dropReplies--;
      return false;
    }
    return true;
  }
}

interface Run {
  store: MemoryBindingStore;
  scheduler: KeepaliveScheduler;
  nat: SimNat;
  id: string;
  /** Sample times (every 500 ms) at which a call to the phone could not have reached it. */
  unreachable: number[];
  firstLearnedAt: number | null;
  sends: number[];
  /** New bindings the phone's REGISTERs made after its old one was dropped. */
  registeredAgain: number;
}

const adaptations = async (s: KeepaliveScheduler, direction: string): Promise<number> =>
  (await s.metrics.adaptations.get()).values.find((v) => v.labels.direction === direction)?.value ?? 0;

/** Registers a phone behind `nat`, runs `minutes` of fake time; the phone REGISTERs every `registerEverySec` (0: never). */
async function simulate(opts: { natSec: number; keepalive?: Partial<SipConfig['keepalive']>; registerEverySec: number; minutes: number; newContactOnRegister?: boolean; onRegister?: (r: Run) => Promise<void> }): Promise<Run> {
  const nat = new SimNat(opts.natSec * 1000);
  const sip: SipConfig = { ...base, keepalive: { ...base.keepalive, ...opts.keepalive } };
  const store = new MemoryBindingStore();
  const sends: number[] = [];
  const ping = async (b: Binding): Promise<void> => {
    sends.push(Date.now());
    if (nat.inbound(b.source.port)) return;
    await new Promise((r) => setTimeout(r, sip.keepalive.timeoutMs));
    throw new Error('no answer');
  };
  const scheduler = new KeepaliveScheduler({ srf: noPbx, store, sip, log: silentLogger, ping });
  const b: Binding = {
    id: newBindingId(), aor: 'sip:bob@keylatch.test', contact: '<sip:bob@198.19.2.2:5060>', instance: null,
    source: { address: '198.18.0.12', port: nat.phoneSends() }, transport: 'udp', localSocket: 'udp', lastSeen: Date.now(),
    expires: Date.now() + 86_400_000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: Date.now() + 86_400_000, keylatch: false,
  };
  await store.put(b);
  const run: Run = { store, scheduler, nat, id: b.id, unreachable: [], firstLearnedAt: null, sends, registeredAgain: 0 };
  scheduler.start();
  let contactN = 0;
  const start = Date.now();
  let nextRegister = opts.registerEverySec ? start + opts.registerEverySec * 1000 : Infinity;
  try {
    while (Date.now() - start < opts.minutes * 60_000) {
      await jest.advanceTimersByTimeAsync(500);
      if (Date.now() >= nextRegister) {
        nextRegister += opts.registerEverySec * 1000;
        // What the registrar does with the REGISTER that came through the NAT: refresh the
        // binding (keeping what was learned on it), or make a new one if it was dropped.
        const port = nat.phoneSends();
        const now = await store.get(run.id);
        const contact = opts.newContactOnRegister ? `<sip:bob@198.19.2.2:${5061 + contactN++}>` : b.contact;
        if (now) await store.put({ ...now, contact, source: { ...now.source, port }, lastSeen: Date.now() });
        else {
          run.id = newBindingId();
          run.registeredAgain++;
          await store.put({ ...b, id: run.id, contact, source: { ...b.source, port }, lastSeen: Date.now() });
        }
      }
      const current = await store.get(run.id);
      if (run.firstLearnedAt === null && (await adaptations(scheduler, 'shorter')) > 0) run.firstLearnedAt = Date.now();
      if (!current || !nat.alive() || current.source.port !== nat.port) run.unreachable.push(Date.now());
    }
  } finally {
    scheduler.stop();
  }
  return run;
}

beforeEach(() => jest.useFakeTimers());
afterEach(() => jest.useRealTimers());

describe('adaptive keepalives against a simulated NAT', () => {
  it('with the defaults keeps a phone behind a 20 s NAT reachable all along, learning nothing', async () => {
    const r = await simulate({ natSec: 20, registerEverySec: 0, minutes: 10 });
    expect(r.unreachable).toEqual([]);
    expect(await adaptations(r.scheduler, 'shorter')).toBe(0);
    const gaps = r.sends.slice(1).map((t, i) => t - r.sends[i]!);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(15000);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(14000); // early by at most one tick
    expect((await r.store.get(r.id))!.keepaliveIntervalMs).toBeUndefined();
  });

  it.each([
    // [NAT timeout s, configured interval s]: each NAT shorter than the interval, so the first keepalive
    // is lost, and at least ceilingFactor x the interval, the range the requirement is met for.
    [20, 25],
    [10, 15],
    [8, 15],
    [30, 40],
  ])('NAT %i s, interval %i s: after the first lost mapping is learned from, the phone is reachable at every moment', async (natSec, intervalSec) => {
    const r = await simulate({ natSec, keepalive: { intervalSec }, registerEverySec: 60, minutes: 30 });
    expect(r.firstLearnedAt).not.toBeNull();
    expect(r.unreachable.length).toBeGreaterThan(0); // the NAT did bite before it was learned from
    expect(r.unreachable.filter((t) => t > r.firstLearnedAt!)).toEqual([]);
    const b = (await r.store.get(r.id))!;
    // The gap that failed was the configured interval, give or take the one-second tick.
    expect(b.keepaliveFailedMs).toBeGreaterThan((intervalSec - 1.5) * 1000);
    expect(b.keepaliveFailedMs).toBeLessThanOrEqual(intervalSec * 1000);
    expect(b.keepaliveIntervalMs).toBeLessThan(natSec * 1000);
    expect(b.keepaliveIntervalMs).toBeLessThanOrEqual(b.keepaliveFailedMs! * base.keepalive.ceilingFactor);
    expect(b.keepaliveIntervalMs).toBeGreaterThan(b.keepaliveFailedMs! * base.keepalive.shortenFactor); // it grew back some
    expect(await adaptations(r.scheduler, 'shorter')).toBe(1);
    expect(await adaptations(r.scheduler, 'longer')).toBeGreaterThan(0);
  });

  it('learns when the phone comes back while the keepalive to its old mapping is still waiting for an answer', async () => {
    // Sent at ~24-25 s, given up at ~29-30 s: the REGISTER at 26 s lands in between.
    const r = await simulate({ natSec: 20, keepalive: { intervalSec: 25 }, registerEverySec: 26, minutes: 5 });
    expect(await adaptations(r.scheduler, 'shorter')).toBe(1);
    expect(r.unreachable.filter((t) => t > r.firstLearnedAt!)).toEqual([]);
    expect((await r.store.get(r.id))!.keepaliveFailedMs).toBeGreaterThan(23500);
  });

  it('learns from a binding it dropped when the same device registers again from the same IP', async () => {
    const r = await simulate({ natSec: 20, keepalive: { intervalSec: 25, maxFailures: 2 }, registerEverySec: 120, minutes: 10 });
    expect(r.registeredAgain).toBe(1);
    expect((await r.scheduler.metrics.dropped.get()).values[0]!.value).toBe(1);
    expect(r.unreachable.filter((t) => t > r.firstLearnedAt!)).toEqual([]);
    expect((await r.store.get(r.id))!.keepaliveIntervalMs).toBeLessThan(20000);
  });

  it('a NAT faster than half the gap that failed costs one more lost mapping, which is learned from in turn', async () => {
    const r = await simulate({ natSec: 6, keepalive: { intervalSec: 25 }, registerEverySec: 60, minutes: 20 });
    const b = (await r.store.get(r.id))!;
    expect(await adaptations(r.scheduler, 'shorter')).toBe(2);
    expect(b.keepaliveIntervalMs).toBe(5000); // the floor
    const lastLoss = Math.max(...r.unreachable);
    expect(Date.now() - lastLoss).toBeGreaterThan(15 * 60_000); // nothing lost in the last 15 minutes
  });

  it('learns nothing when the phone comes back with a new Contact: the phone changed, not the NAT', async () => {
    const r = await simulate({ natSec: 20, keepalive: { intervalSec: 25 }, registerEverySec: 60, minutes: 3, newContactOnRegister: true });
    expect(await adaptations(r.scheduler, 'shorter')).toBe(0);
    expect(await r.scheduler.metrics.unanswered.get()).not.toMatchObject({ values: [{ value: 0 }] });
    expect((await r.store.get(r.id))!.keepaliveIntervalMs).toBeUndefined();
  });

  it('learns nothing from a lost answer when the flow then answers on the same mapping', async () => {
    const nat20 = { natSec: 60, registerEverySec: 0, minutes: 0 };
    const r = await simulate(nat20);
    r.nat.dropReplies = 1;
    r.scheduler.start();
    try {
      await jest.advanceTimersByTimeAsync(60_000);
    } finally {
      r.scheduler.stop();
    }
    expect((await r.scheduler.metrics.unanswered.get()).values[0]!.value).toBe(1);
    expect(await adaptations(r.scheduler, 'shorter')).toBe(0);
    expect(await r.store.get(r.id)).not.toBeNull();
  });

  it('puts its metrics on the registry /metrics serves', async () => {
    const r = await simulate({ natSec: 20, keepalive: { intervalSec: 25 }, registerEverySec: 60, minutes: 3 });
    const registry = new Registry();
    registerKeepaliveMetrics(r.scheduler, registry);
    const text = await registry.metrics();
    expect(text).toMatch(/^keylatch_keepalive_adaptations_total\{direction="shorter"\} 1$/m);
    expect(text).toMatch(/^keylatch_keepalive_unanswered_total [1-9]\d*$/m);
    expect(text).toMatch(/^keylatch_keepalive_interval_seconds_bucket\{le="12.5"\} [1-9]\d*$/m);
    expect(text).toMatch(/^keylatch_keepalive_flows\{learned="true"\} 1$/m);
  });
});

describe('what the scheduler reads', () => {
  it('reads only the bindings that are due between resyncs, not every binding every tick', async () => {
    const store = new MemoryBindingStore();
    const reads = { all: 0, get: 0 };
    const all = store.all.bind(store);
    const get = store.get.bind(store);
    store.all = async () => (reads.all++, all());
    store.get = async (id) => (reads.get++, get(id));
    const now = Date.now();
    const n = 1500;
    for (let i = 0; i < n; i++) {
      // Last seen spread over the past 15 s: about n / 15 fall due each second.
      await store.put({
        id: newBindingId(), aor: `sip:u${i}@keylatch.test`, contact: `<sip:u${i}@10.0.0.1:5060>`, instance: null, source: { address: '203.0.113.5', port: 2000 + i },
        transport: 'udp', localSocket: 'udp', lastSeen: now - (i % 15) * 1000, expires: now + 3_600_000, natted: true, natTests: ['private-contact'], secure: false,
        upstreamExpires: now + 3_600_000, keylatch: false,
      });
    }
    const pinged: number[] = [];
    const scheduler = new KeepaliveScheduler({ srf: noPbx, store, sip: base, log: silentLogger, ping: async () => void pinged.push(Date.now()) });
    scheduler.start();
    try {
      await jest.advanceTimersByTimeAsync(30_000);
    } finally {
      scheduler.stop();
    }
    // Each flow two or three times in 30 s at the 15 s interval (a keepalive may leave a tick early).
    expect(pinged.length).toBeGreaterThanOrEqual(2 * n - n / 15);
    expect(pinged.length).toBeLessThanOrEqual(2.5 * n);
    // The whole store is read once per resync (every 5 s), not once a second; beyond that, a
    // read per keepalive (the binding as it is when due, and again by the keepalive itself).
    expect(reads.all).toBeLessThanOrEqual(7);
    expect(reads.get).toBeLessThanOrEqual(2 * pinged.length + n / 15);
  });
});
