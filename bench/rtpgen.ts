/** Drives bench/rtpgen.c: compiles it once (cc -O2), runs one load step, returns its figures. */
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { buildC } from './build-c';
import { boosted } from './targets';

export interface GenResult {
  calls: number;
  nominal: number;
  sent: number;
  received: number;
  loss: number;
  /** Arrived, but more than 100 ms after it was sent. */
  late: number;
  send_errors: number;
  misrouted: number;
  late_sends: number;
  worst_send_lag_us: number;
  p50_us: number;
  p99_us: number;
  p999_us: number;
  max_us: number;
  endpoint_min: number;
  endpoint_max: number;
  rx_per_batch: number;
  cpu_s: number;
}

/** The generator binary. */
export const buildGenerator = (): string => buildC('rtpgen');

export interface GenStep {
  calls: number;
  /** Where the generator's sockets bind, and (relay) where the relay's ports are; the same on loopback. */
  address: string;
  relayAddress?: string;
  portBase: number;
  /** Sockets the endpoints share (even; 0: one per endpoint). */
  sockets?: number;
  warmupMs: number;
  measureMs: number;
  /** Pins the generator to one core (taskset), or null. */
  core: number | null;
  /** Given endpoint i's and i+1's ports (call i/2's sides A and B), where each must send; 0 = to its partner directly. */
  anchor(call: number, a: number, b: number): Promise<{ toA: number; toB: number }>;
  onMeasureStart(): void;
  onMeasureEnd(): void;
}

export async function runGenerator(step: GenStep): Promise<GenResult> {
  const args = ['--calls', String(step.calls), '--addr', step.address, '--peer', step.relayAddress ?? step.address, '--port-base', String(step.portBase), '--sockets', String(step.sockets ?? 0), '--warmup-ms', String(step.warmupMs), '--measure-ms', String(step.measureMs)];
  const bin = buildGenerator();
  const pinned = step.core === null ? [] : ['taskset', '-c', String(step.core)];
  const [cmd, ...rest] = boosted([...pinned, bin, ...args]);
  const child = spawn(cmd!, rest);
  child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<string> => {
    const r = await lines.next();
    if (r.done) throw new Error('rtpgen exited early');
    return r.value;
  };
  try {
    const ports = (await next()).split(' ').slice(1).map(Number);
    const targets = new Array<number>(ports.length).fill(0);
    // ng round trips in parallel, a bounded number at a time: setting up thousands of calls one by one takes longer than the step.
    const CONCURRENT = 32;
    for (let first = 0; first < step.calls; first += CONCURRENT) {
      await Promise.all(
        Array.from({ length: Math.min(CONCURRENT, step.calls - first) }, async (_, k) => {
          const c = first + k;
          const { toA, toB } = await step.anchor(c, ports[2 * c]!, ports[2 * c + 1]!);
          targets[2 * c] = toA;
          targets[2 * c + 1] = toB;
        }),
      );
    }
    child.stdin.write(`targets ${targets.join(' ')}\n`);
    for (;;) {
      const line = await next();
      if (line === 'measure-start') step.onMeasureStart();
      else if (line === 'measure-end') step.onMeasureEnd();
      else if (line.startsWith('{')) return JSON.parse(line) as GenResult;
    }
  } finally {
    child.kill('SIGKILL');
  }
}

/** Is the C compiler there? */
export function haveCompiler(): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v cc'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
