import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { AggregatorRegistry, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { MediaConfig } from '../../config/schema';
import type { NgDict } from '../../control/ng-options';
import { silentLogger, type Logger } from '../../log';
import { findUp } from '../../paths';
import { Placement } from './placement';
import { splitPortRange, type PortShare } from './port-shares';
import type { FromWorker, ToWorker } from './protocol';

const REQUEST_TIMEOUT_MS = 5000;
const START_TIMEOUT_MS = 20000;
const RESTART_DELAY_MS = 500;
const MAX_RESTART_DELAY_MS = 30000;
/** A worker that lived this long before dying is restarted at once again, not after a growing delay. */
const STABLE_AFTER_MS = 60000;

export class WorkerUnavailable extends Error {
  override name = 'WorkerUnavailable';
}

export interface WorkerExit {
  index: number;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The calls the dispatcher had placed on it: gone with its sockets. */
  callsLost: number;
  restartInMs: number | null;
}

export interface WorkerInfo {
  index: number;
  pid: number | null;
  alive: boolean;
  share: PortShare;
  restarts: number;
}

interface Slot {
  index: number;
  share: PortShare;
  child: ChildProcess | null;
  alive: boolean;
  startedAt: number;
  restarts: number;
  restartDelayMs: number;
  restartTimer: NodeJS.Timeout | null;
  pending: Map<number, { resolve: (v: never) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>;
}

export interface ClusterEvents {
  'worker-ready': [{ index: number; pid: number }];
  'worker-exit': [WorkerExit];
}

/** Worker count from media.workers: "auto" is one per core, never more than the range has pairs for. */
export function resolveWorkers(setting: MediaConfig['workers'], cores: number): number {
  return setting === 'auto' ? Math.max(1, cores) : setting;
}

/**
 * N relay worker processes, each a full Relay on a disjoint share of the port range, and the
 * supervisor that keeps them: a worker that dies is reported (log, event, metric) and started
 * again on the same share, while the others go on untouched. Processes, not threads: the
 * native fast path keeps its socket table in process-wide statics, and a crash (a native one
 * included) then takes down one share, never the others.
 */
export class RelayCluster extends EventEmitter<ClusterEvents> {
  readonly shares: PortShare[];
  /** Which worker each call lives in; the ng dispatcher (dispatcher.ts) reads and writes it. */
  readonly placement: Placement;
  private readonly slots: Slot[];
  private nextId = 1;
  private closing = false;
  /**
   * The last time calls were lost here: the cluster's start, then each worker's death (its
   * calls go with its sockets). An edge pooling this relay reads it from ng `ping` and asks
   * after its calls when it moves (cluster-ng.ts), so a worker's restart costs a move, not a call.
   */
  callsLostAt = Date.now();
  private readonly script: string;
  private readonly execArgv: string[];
  /** Counted here because the worker that would count them is the one that died. */
  readonly exits: Array<{ index: number; code: number | null; signal: string | null }> = [];

  private constructor(private readonly media: MediaConfig, workers: number, private readonly log: Logger, private readonly logLevel: string) {
    super();
    this.shares = splitPortRange(media.portMin, media.portMax, workers);
    this.placement = new Placement(workers);
    this.slots = this.shares.map((share, index) => ({
      index, share, child: null, alive: false, startedAt: 0, restarts: 0, restartDelayMs: RESTART_DELAY_MS, restartTimer: null, pending: new Map(),
    }));
    // From the built package the worker is JavaScript; from source (tests, ts-register) it is TypeScript.
    const js = path.join(__dirname, 'worker.js');
    const fromSource = !existsSync(js);
    this.script = fromSource ? path.join(__dirname, 'worker.ts') : js;
    // The same young-generation cap the CLI's shebang gives the main process (src/cli.ts).
    this.execArgv = ['--max-semi-space-size=1', ...(fromSource ? ['-r', findUp('test/helpers/ts-register.js')] : [])];
  }

  /** Starts every worker and resolves once all are ready; rejects (stopping them) if one cannot start. */
  static async start(media: MediaConfig, opts: { workers: number; logger?: Logger; logLevel?: string }): Promise<RelayCluster> {
    const cluster = new RelayCluster(media, opts.workers, opts.logger ?? silentLogger, opts.logLevel ?? 'info');
    try {
      await Promise.all(cluster.slots.map((s) => cluster.spawn(s)));
    } catch (err) {
      await cluster.close();
      throw err;
    }
    return cluster;
  }

  get size(): number {
    return this.slots.length;
  }

  isAlive(index: number): boolean {
    return this.slots[index]?.alive ?? false;
  }

  info(): WorkerInfo[] {
    return this.slots.map((s) => ({ index: s.index, pid: s.child?.pid ?? null, alive: s.alive, share: s.share, restarts: s.restarts }));
  }

  /** Runs one ng request in one worker; rejects with WorkerUnavailable if it is down or dies first. */
  command(index: number, req: NgDict): Promise<NgDict> {
    return this.request(index, (id) => ({ type: 'ng', id, req }));
  }

  /** Prometheus metrics of every live worker, summed (per-call series are disjoint), plus the cluster's own. */
  async metrics(): Promise<Registry> {
    const parts = await Promise.all(
      this.slots.filter((s) => s.alive).map((s) => this.request<MetricObjectWithValues<MetricValue<string>>[]>(s.index, (id) => ({ type: 'metrics', id })).catch(() => [])),
    );
    const own = new Registry();
    const workers = new Gauge({ name: 'keylatch_relay_workers', help: 'Relay worker processes, by state', labelNames: ['state'], registers: [own] });
    workers.set({ state: 'alive' }, this.slots.filter((s) => s.alive).length);
    workers.set({ state: 'down' }, this.slots.filter((s) => !s.alive).length);
    const exits = new Counter({ name: 'keylatch_relay_worker_exits_total', help: 'Relay workers that exited unasked (then restarted)', labelNames: ['worker'], registers: [own] });
    for (const s of this.slots) exits.inc({ worker: String(s.index) }, this.exits.filter((e) => e.index === s.index).length);
    return AggregatorRegistry.aggregate([...parts, await own.getMetricsAsJSON()]);
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(
      this.slots.map(async (s) => {
        if (s.restartTimer) clearTimeout(s.restartTimer);
        const child = s.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, 'exit');
        if (child.connected) child.send({ type: 'stop' } satisfies ToWorker);
        else child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
  }

  private request<T>(index: number, make: (id: number) => ToWorker): Promise<T> {
    const slot = this.slots[index];
    if (!slot?.alive || !slot.child?.connected) return Promise.reject(new WorkerUnavailable(`relay worker ${index} is down`));
    const id = this.nextId++;
    const child = slot.child;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        slot.pending.delete(id);
        reject(new WorkerUnavailable(`relay worker ${index} did not answer within ${REQUEST_TIMEOUT_MS} ms`));
      }, REQUEST_TIMEOUT_MS);
      slot.pending.set(id, { resolve: resolve as (v: never) => void, reject, timer });
      child.send(make(id));
    });
  }

  private spawn(slot: Slot): Promise<void> {
    const child = fork(this.script, [], { execArgv: this.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    slot.child = child;
    slot.startedAt = Date.now();
    return new Promise<void>((resolve, reject) => {
      let started = false;
      const timer = setTimeout(() => {
        if (started) return;
        reject(new Error(`relay worker ${slot.index} did not start within ${START_TIMEOUT_MS} ms`));
        child.kill('SIGKILL');
      }, START_TIMEOUT_MS);
      child.on('message', (msg: FromWorker) => {
        if (msg.type === 'ready') {
          started = true;
          clearTimeout(timer);
          slot.alive = true;
          this.log.info({ worker: slot.index, pid: child.pid, ports: `${slot.share.portMin}-${slot.share.portMax}` }, 'relay worker ready');
          this.emit('worker-ready', { index: slot.index, pid: child.pid! });
          resolve();
        } else if (msg.type === 'failed') {
          clearTimeout(timer);
          reject(new Error(`relay worker ${slot.index}: ${msg.message}`));
        } else if (msg.type === 'ng-reply' || msg.type === 'metrics-reply') {
          const p = slot.pending.get(msg.id);
          if (!p) return;
          slot.pending.delete(msg.id);
          clearTimeout(p.timer);
          p.resolve((msg.type === 'ng-reply' ? msg.reply : msg.metrics) as never);
        }
      });
      child.on('error', (err) => this.log.warn({ worker: slot.index, err: err.message }, 'relay worker channel error'));
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (!started) reject(new Error(`relay worker ${slot.index} exited during start (code ${code}, signal ${signal})`));
        this.onExit(slot, child, code, signal, started);
      });
      const media = { ...this.media, portMin: slot.share.portMin, portMax: slot.share.portMax };
      child.send({ type: 'start', index: slot.index, media, fullRange: { portMin: this.media.portMin, portMax: this.media.portMax }, logLevel: this.logLevel } satisfies ToWorker);
    });
  }

  /** Reports the exit and fails its pending requests; restarts the worker unless we are closing or it never started. */
  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null, started: boolean): void {
    if (slot.child !== child) return;
    slot.alive = false;
    slot.child = null;
    for (const p of slot.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new WorkerUnavailable(`relay worker ${slot.index} exited`));
    }
    slot.pending.clear();
    if (this.closing) return;
    // A worker that failed its very first start fails start() instead; a failed restart retries.
    if (!started && slot.restarts === 0) return;
    slot.restartDelayMs = Date.now() - slot.startedAt > STABLE_AFTER_MS ? RESTART_DELAY_MS : slot.restartDelayMs;
    const delay = slot.restartDelayMs;
    slot.restartDelayMs = Math.min(MAX_RESTART_DELAY_MS, slot.restartDelayMs * 2);
    if (started) {
      this.exits.push({ index: slot.index, code, signal });
      const exit: WorkerExit = { index: slot.index, pid: child.pid!, code, signal, callsLost: this.placement.forgetWorker(slot.index), restartInMs: delay };
      if (exit.callsLost > 0) this.callsLostAt = Date.now();
      this.log.error({ ...exit, worker: slot.index }, 'relay worker died; its calls are gone from this relay (an edge pooling it places them again), the other workers go on');
      this.emit('worker-exit', exit);
    }
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = null;
      slot.restarts++;
      this.spawn(slot).catch((err: Error) => this.log.error({ worker: slot.index, err: err.message }, 'relay worker restart failed'));
    }, delay);
    slot.restartTimer.unref();
  }
}
