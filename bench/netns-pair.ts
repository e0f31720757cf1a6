/**
 * Where a benchmark (bench:rooms, bench:relay) puts the relay and the generator on the network.
 *
 *  - loopback (the default): both on a loopback address. A loopback send runs the receiving socket's side
 *    of the stack (IP and UDP receive, socket lookup, queueing) in the sender's context, so the
 *    relay's CPU includes its listeners' kernel receive work: an upper bound.
 *  - veth (`--net veth`, root only): the relay in a network namespace of its own on 198.18.90.1,
 *    the generator and all on its side (bench:rooms: also its Python sink) in another on
 *    198.18.90.2, joined by a veth pair and nothing else (neither namespace has a route anywhere, the host's own
 *    namespace gets no interface or address). RPS on each veth end steers the receive work of
 *    what arrives there to that side's core: the generator's end to core 0, the relay's to
 *    core 1, as separate hosts' NICs would. `--rx napi` (the default) turns on veth's NAPI (GRO),
 *    runs it in a kernel thread pinned to the receiving side's core and lets it poll again after
 *    50 us rather than be woken per packet, as a NIC's interrupt coalescing does. `--rx rps`
 *    uses RPS instead, which hands packets over with an IPI whenever the other core's backlog has
 *    run dry (about one per packet here, and in a VM each is an exit the sender pays). `--rx off` leaves the receive work where veth puts it
 *    (the sending CPU), for comparison.
 *
 * The bench process that is started (in the host's namespace) only builds the namespaces, runs
 * itself again inside the generator's namespace and waits; whatever way that ends (done, an
 * error, Ctrl-C, SIGTERM) it then ends what is left in the namespaces and deletes them.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { hasCommand } from '../test/helpers/tools';

/** How the receive work of what arrives on each veth end is put on that side's core. */
export type RxSteering = 'rps' | 'napi' | 'off';

export interface NetPlan {
  mode: 'loopback' | 'veth';
  /** The relay's media address, and where the generator's sockets live. */
  relayAddress: string;
  peerAddress: string;
  /** veth only: the namespace the relay is started in, and whether RPS steers receive work. */
  relayNs?: string;
  rx?: RxSteering;
  /** veth only: the relay's and the generator's veth ends (their NAPI threads are napi/<dev>-<id>). */
  relayDev?: string;
  peerDev?: string;
}

/** Which bench builds the pair: named in its messages, in its namespaces' names and in the variable handing the plan down. */
export interface PairOptions {
  /** As the user runs it, for messages: `bench:rooms`. */
  bench: string;
  /** Namespaces are `<prefix><pid>g` and `<prefix><pid>r`: an earlier run's are known by it. */
  nsPrefix: string;
  /** Set in the generator's namespace by the outer process: the plan it built. */
  planEnv: string;
  /** The loopback plan's addresses. */
  loopback: { relayAddress: string; peerAddress: string };
}

/** The same functions for every bench, bound to that bench's names. */
export interface NetnsPair {
  /** The plan this process runs with: loopback, or the veth plan its outer process handed down. */
  currentPlan(): NetPlan;
  /** Whether this process must build the namespaces and run the bench inside them. */
  mustEnterVeth(mode: string): boolean;
  /** One line saying why --net veth cannot run here, or null. */
  vethUnavailable(): string | null;
  /** Builds the two namespaces, runs this bench again in the generator's, cleans up; resolves to its exit code. */
  runAcrossVeth(rx: RxSteering): Promise<number>;
}

export function netnsPair(opts: PairOptions): NetnsPair {
  const currentPlan = (): NetPlan => {
    const inner = process.env[opts.planEnv];
    return inner ? (JSON.parse(inner) as NetPlan) : { mode: 'loopback', ...opts.loopback };
  };
  const mustEnterVeth = (mode: string): boolean => {
    if (mode !== 'loopback' && mode !== 'veth') throw new Error(`--net ${mode}: loopback or veth`);
    return mode === 'veth' && !process.env[opts.planEnv];
  };
  const vethUnavailable = (): string | null => {
    if (process.getuid?.() !== 0) return `${opts.bench} --net veth needs root: it creates two network namespaces and a veth pair (run as root, or leave out --net for loopback)`;
    if (!hasCommand('ip')) return `${opts.bench} --net veth needs the ip command (iproute2), which is not on PATH`;
    if (!hasCommand('taskset')) return `${opts.bench} --net veth needs taskset (util-linux) to pin the relay and the generator`;
    return null;
  };
  return { currentPlan, mustEnterVeth, vethUnavailable, runAcrossVeth: (rx) => runAcrossVeth(opts, vethUnavailable, rx) };
}

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Ends the processes still in a namespace (only this bench's: nothing else runs there) and deletes it. */
function removeNamespace(ns: string): void {
  try {
    for (const pid of ip('netns', 'pids', ns).split('\n').filter(Boolean).map(Number)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
    }
    ip('netns', 'del', ns);
  } catch {
    /* already gone */
  }
}

/** Namespaces an earlier run left behind when it was killed outright (SIGKILL): its pid is in their name. */
function removeStale(prefix: string): void {
  for (const line of ip('netns', 'list').split('\n')) {
    const m = new RegExp(`^(${prefix}(\\d+)[gr])\\b`).exec(line);
    if (m && !alive(Number(m[2]))) removeNamespace(m[1]!);
  }
}

/** A veth end's dropped packets, received and sent, from ip -s. */
function vethDrops(ns: string, dev: string): string {
  try {
    const [link] = JSON.parse(ip('-n', ns, '-s', '-j', 'link', 'show', 'dev', dev)) as Array<{ stats64: { rx: { dropped: number }; tx: { dropped: number } } }>;
    return `rx ${link!.stats64.rx.dropped} / tx ${link!.stats64.tx.dropped}`;
  } catch {
    return '?';
  }
}

/** The kernel threads that run dev's NAPI polls (threaded NAPI): their pids. */
export function napiThreads(dev: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').startsWith(`napi/${dev}-`)) out.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Pins the kernel threads that run dev's NAPI polls to one core. */
function pinNapiThreads(dev: string, core: number): void {
  let pinned = 0;
  for (const entry of napiThreads(dev).map(String)) {
    execFileSync('taskset', ['-p', '-c', String(core), entry], { stdio: 'ignore' });
    // Above the bench's own processes on that core, as a NIC's softirq work is.
    execFileSync('chrt', ['-f', '-p', '10', entry], { stdio: 'ignore' });
    pinned++;
  }
  if (!pinned) throw new Error(`no NAPI thread for ${dev}: this kernel's veth did not go threaded`);
}

async function runAcrossVeth(opts: PairOptions, vethUnavailable: () => string | null, rx: RxSteering): Promise<number> {
  const why = vethUnavailable();
  if (why) {
    console.error(why);
    return 2;
  }
  removeStale(opts.nsPrefix);
  if (rx === 'napi' && !hasCommand('ethtool')) {
    console.error(`${opts.bench} --rx napi needs ethtool (to turn on veth GRO, which gives it NAPI)`);
    return 2;
  }
  const gen = `${opts.nsPrefix}${process.pid}g`;
  const rel = `${opts.nsPrefix}${process.pid}r`;
  const created: string[] = [];
  const cleanup = (): void => {
    while (created.length) removeNamespace(created.pop()!);
  };
  process.on('exit', cleanup);
  try {
    for (const ns of [gen, rel]) {
      ip('netns', 'add', ns);
      created.push(ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
    }
    // Created inside the generator's namespace with its peer moved straight into the relay's:
    // the host's namespace never holds either end.
    // Named after this process so that their NAPI threads (napi/<dev>-<id>) are known to be ours.
    const id = process.pid % 100000;
    const ends = [[gen, `g${id}`, '198.18.90.2', 0], [rel, `r${id}`, '198.18.90.1', 1]] as const;
    ip('-n', gen, 'link', 'add', ends[0][1], 'type', 'veth', 'peer', 'name', ends[1][1], 'netns', rel);
    const plan: NetPlan = { mode: 'veth', relayAddress: ends[1][2], peerAddress: ends[0][2], relayNs: rel, rx, relayDev: ends[1][1], peerDev: ends[0][1] };
    for (const [ns, dev, addr, core] of ends) {
      ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
      ip('-n', ns, 'link', 'set', dev, 'up');
      // What arrives on this end is processed (IP, UDP, socket queueing) on the CPUs of this
      // mask instead of the CPU that sent it: core 0 (mask 1) for the generator's side, core 1
      // (mask 2) for the relay's. `ip netns exec` mounts the namespace's own /sys.
      const sys = (file: string, value: string | number) => execFileSync('ip', ['netns', 'exec', ns, 'sh', '-c', `echo ${value} > /sys/class/net/${dev}/${file}`]);
      sys('queues/rx-0/rps_cpus', rx === 'rps' ? 1 << core : 0);
      if (rx === 'napi') {
        // veth takes its NAPI path for a socket's UDP only when the receiving end may GRO-forward UDP.
        execFileSync('ip', ['netns', 'exec', ns, 'ethtool', '-K', dev, 'gro', 'on', 'rx-udp-gro-forwarding', 'on']);
        sys('threaded', 1);
        // After a poll that found nothing, poll again in 50 us instead of waiting to be woken,
        // twice before sleeping: the sender then seldom has to wake the thread (an IPI).
        sys('napi_defer_hard_irqs', 2);
        sys('gro_flush_timeout', 50000);
        pinNapiThreads(dev, core);
      }
    }
    const child = spawn('ip', ['netns', 'exec', gen, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, [opts.planEnv]: JSON.stringify(plan) },
    });
    // Ctrl-C reaches the whole process group, the bench inside included; SIGTERM/SIGHUP sent to
    // this process alone are passed on. Either way this process stays to clean up after it.
    const pass = (sig: NodeJS.Signals) => () => {
      if (child.exitCode === null) child.kill(sig);
    };
    const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => [sig, pass(sig)] as const);
    for (const [sig, h] of handlers) process.on(sig, h);
    const code = await new Promise<number>((resolve) => child.on('exit', (c, sig) => resolve(c ?? (sig === 'SIGINT' ? 130 : 1))));
    for (const [sig, h] of handlers) process.off(sig, h);
    console.log(`veth drops over the whole run: ${ends.map(([ns, dev]) => `${dev} ${vethDrops(ns, dev)}`).join(', ')}`);
    return code;
  } finally {
    cleanup();
  }
}

/**
 * Per CPU: packets the kernel's receive path processed (/proc/net/softnet_stat), NET_RX softirqs
 * run (/proc/softirqs), and time busy and in softirqs (/proc/stat, in USER_HZ ticks: 100 a
 * second, so a rate of them is a percentage). Softirq time is charged to whichever task a tick
 * finds running: on the relay's core it counts in the relay's CPU when it interrupted the
 * relay, and only in the core's busy time when it ran while the relay slept.
 */
export interface KernelRx {
  processed: number[];
  netRx: number[];
  busy: number[];
  softirq: number[];
}

export function kernelRx(): KernelRx {
  const processed = readFileSync('/proc/net/softnet_stat', 'utf8').trim().split('\n').map((l) => parseInt(l.trim().split(/\s+/)[0]!, 16));
  const line = readFileSync('/proc/softirqs', 'utf8').split('\n').find((l) => l.trim().startsWith('NET_RX:'));
  const netRx = line ? line.trim().split(/\s+/).slice(1).map(Number) : [];
  // cpuN user nice system idle iowait irq softirq steal ...
  const cpus = readFileSync('/proc/stat', 'utf8').split('\n').filter((l) => /^cpu\d/.test(l)).map((l) => l.split(/\s+/).slice(1, 9).map(Number));
  const busy = cpus.map((f) => f.reduce((a, b) => a + b, 0) - f[3]! - f[4]!);
  const softirq = cpus.map((f) => f[6]!);
  return { processed, netRx, busy, softirq };
}

/** Per-CPU rates between two readings, per second (the counters are 32 bits and wrap). */
export function kernelRxRate(a: KernelRx, b: KernelRx, seconds: number): KernelRx {
  const rate = (x: number[], y: number[]) => y.map((v, i) => (v - (x[i] ?? 0) + 2 ** 32) % 2 ** 32 / seconds);
  return { processed: rate(a.processed, b.processed), netRx: rate(a.netRx, b.netRx), busy: rate(a.busy, b.busy), softirq: rate(a.softirq, b.softirq) };
}
