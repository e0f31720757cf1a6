/**
 * npm run bench:relay — G.711 calls through keylatch on 1 and 2 relay workers and through
 * rtpengine (userspace, --table=-1), with no relay at all as the latency baseline, all in the
 * same run. The load comes from bench/rtpgen.c (compiled here with cc -O2), pinned to core 0;
 * rtpengine and the one-worker keylatch are pinned to core 1; keylatch's two workers are left
 * to the scheduler on both cores, sharing the machine with the generator. Each target's sweep
 * ends at its first step above 0.1 % loss; the whole sweep ends when the generator alone (no
 * relay) can no longer keep up.
 *
 * `floor` is bench/floor-relay.c, a relay that checks nothing: the kernel socket path alone,
 * the least any relay built on sockets can cost per packet here.
 *
 * What the CPU figures count. `us/pkt` is the relay processes' own utime + stime. On loopback
 * a send runs the receiver's side of the stack too (softirq, in the sender's context on this
 * kernel's tick accounting), so a relay's figure holds its receives, its sends and the delivery
 * of what it sent into the generator's sockets, while the delivery into the relay's sockets is
 * charged to the generator; that holds alike for every target pinned to core 1. `mach us/pkt`
 * counts instead everything the machine did beyond the no-relay run at the same load (busy
 * time of all cores, /proc/stat, softirq and ksoftirqd included), so it holds however the
 * work lands on cores; it also picks up other agents' jobs, so read it next to `us/pkt`.
 *
 * Where it runs (`--net`, bench/netns-pair.ts, shared with bench:rooms):
 *  - loopback (the default, as every take before the option): all on MEDIA_ADDRESS, the
 *    accounting above;
 *  - veth (root): the bench and the generator in one network namespace (198.18.90.2), every
 *    target in another (198.18.90.1, started there with `ip netns exec`, pinned as on loopback,
 *    ng over the veth), joined by a veth pair, as separate hosts. `--rx napi` (the default) runs
 *    each end's receive work in a threaded-NAPI kernel thread pinned to its side's core (GRO,
 *    polled every 50 us, SCHED_FIFO): that thread's time is in no process's utime + stime, so
 *    `us/pkt` is then the relay's syscalls and sends only and `rx us/pkt` the relay side's NAPI
 *    thread per packet (their sum is the relay side's whole cost; `gen rx%` is the generator's
 *    NAPI thread); `--rx rps` steers with RPS (an IPI per packet here), `--rx off` leaves the
 *    receive work on the sending core as on loopback. The no-relay step sends inside the
 *    generator's namespace, not over the veth. In veth mode the generator's endpoints share 8
 *    sockets by default (BENCH_GEN_SOCKETS; 0 = one socket per endpoint, loopback's default):
 *    one sendmmsg carries many calls' packets, each call still on its own relay port pair and
 *    each endpoint with its own SSRC, sequence and timestamps; the relay's work is the same.
 *
 * Starts rtpengine: run it under the global lock and the exclusive CPU lock:
 *   flock -x /tmp/keylatch-cpu.lock flock /tmp/keylatch-it.lock npm run bench:relay [-- --net loopback|veth] [--rx napi|rps|off]
 *
 *   BENCH_CALLS=500,1000,1500,2000  BENCH_MEASURE_MS=4000  BENCH_WARMUP_MS=1500
 *   BENCH_TARGETS=direct,floor,rtpengine,keylatch,keylatch-evt,keylatch-off,keylatch-mmsg,keylatch2,keylatch2-evt
 *     (and keylatch-uring, keylatch-epoll, keylatch-uring-evt, keylatch-epoll-evt: media.io forced)
 *     (and keylatch-pollN, keylatch2-pollN: draining at most every N us)
 *   BENCH_MAX_MS=480000: no step starts that would end after this (a take stays under 8 minutes)
 *   BENCH_GEN_SOCKETS=0 (loopback) / 8 (veth): sockets the generator's endpoints share
 */
import { readFileSync } from 'node:fs';
import { napiThreads, netnsPair, type RxSteering } from './netns-pair';
import { runGenerator, type GenResult } from './rtpgen';
import { GENERATOR_PORT_BASE, MEDIA_ADDRESS, cpuSeconds, direct, floor, keylatch, rssBytes, rtpengine, useRelayNet, type Target } from './targets';

/** `--name value` from the command line, or undefined. */
function option(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : undefined;
}
const netMode = option('net') ?? 'loopback';
const rxMode = (option('rx') ?? 'napi') as RxSteering;
if (!['rps', 'napi', 'off'].includes(rxMode)) throw new Error(`--rx ${rxMode}: rps, napi or off`);
const pair = netnsPair({ bench: 'bench:relay', nsPrefix: 'klrelay', planEnv: 'BENCH_RELAY_NET_PLAN', loopback: { relayAddress: MEDIA_ADDRESS, peerAddress: MEDIA_ADDRESS } });
const net = pair.currentPlan();
if (net.relayNs) useRelayNet({ relayAddress: net.relayAddress, peerAddress: net.peerAddress, ngHost: net.relayAddress, ngClientAddress: net.peerAddress, relayNs: net.relayNs });
/** Threaded NAPI's kernel threads of the relay's veth end and the generator's (veth + napi only). */
const napiOf = (dev: string | undefined): number[] => (dev && net.rx === 'napi' ? napiThreads(dev) : []);
const relayRx = napiOf(net.relayDev);
const peerRx = napiOf(net.peerDev);

const steps = (process.env.BENCH_CALLS ?? '500,1000,1500,2000').split(',').map(Number);
const measureMs = Number(process.env.BENCH_MEASURE_MS ?? 4000);
const warmupMs = Number(process.env.BENCH_WARMUP_MS ?? 1500);
const maxMs = Number(process.env.BENCH_MAX_MS ?? 480000);
const LOSS_LIMIT = 0.001;
/**
 * The generator's sockets: 0 = one per endpoint (loopback's default, as every take before
 * --net), N = N shared sockets, half of them the calls' A sides and half the B sides (veth's
 * default 8), so one sendmmsg carries many calls' packets and one recvmmsg drains many.
 */
const genSockets = Number(process.env.BENCH_GEN_SOCKETS ?? (netMode === 'veth' ? 8 : 0));

type Make = (calls: number) => Promise<Target | null> | Target;
const TARGETS: Record<string, Make> = {
  direct,
  floor,
  rtpengine: () => rtpengine(),
  keylatch: () => keylatch(1),
  keylatch2: () => keylatch(2),
  // One worker with batched sends off or sendmmsg only (media.sendBatching): what batching is worth.
  'keylatch-off': () => keylatch(1, 'off'),
  'keylatch-mmsg': () => keylatch(1, 'sendmmsg'),
  // Waking for every arrival (media.pollIntervalUs: 0) instead of draining at most every 1 ms.
  'keylatch-evt': () => keylatch(1, 'gso', 0),
  'keylatch2-evt': () => keylatch(2, 'gso', 0),
  // One worker receiving through io_uring or through the epoll set (media.io), whatever "auto" picks here.
  'keylatch-uring': () => keylatch(1, 'gso', null, 'uring'),
  'keylatch-epoll': () => keylatch(1, 'gso', null, 'epoll'),
  'keylatch-uring-evt': () => keylatch(1, 'gso', 0, 'uring'),
  'keylatch-epoll-evt': () => keylatch(1, 'gso', 0, 'epoll'),
};
const chosen = (process.env.BENCH_TARGETS ?? 'direct,floor,rtpengine,keylatch,keylatch-evt,keylatch2,keylatch2-evt').split(',');
// keylatch-pollN / keylatch2-pollN: one or two workers draining at most every N us (media.pollIntervalUs)
for (const t of chosen) {
  const m = /^keylatch(2?)-poll(\d+)$/.exec(t);
  if (m) TARGETS[t] = () => keylatch(m[1] ? 2 : 1, 'gso', Number(m[2]));
}
for (const t of chosen) if (!TARGETS[t]) throw new Error(`BENCH_TARGETS: no target ${t} (known: ${Object.keys(TARGETS).join(', ')})`);

/** Busy seconds of all cores together (everything but idle and iowait), from /proc/stat. */
function machineBusy(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f as [number, number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq + steal) / 100;
}

interface Row {
  target: string;
  calls: number;
  gen: GenResult;
  pps: number;
  cpuPct: number;
  usPerPkt: number;
  /** CPU seconds of each relay process over the window: how the load split between workers. */
  split: number[];
  rssMiB: number;
  kibPerCall: number;
  /** Busy seconds of the whole machine over the window. */
  machineS: number;
  /** CPU seconds of the relay's and the generator's veth NAPI threads over the window (veth + napi). */
  relayRxS: number;
  genRxS: number;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** The generator could not send at the nominal rate: its own core was full, or others' load starved it. */
const behind = (r: Row) => r.gen.sent < r.gen.nominal * 0.99;
/** Behind without having used its core: starved by other load on the (shared) machine; the step measured nothing. */
const starved = (r: Row) => behind(r) && r.gen.cpu_s < (measureMs / 1000) * 0.85;
/** Lost, or so late (> 100 ms) that a phone's jitter buffer would have dropped it. */
const lossOf = (g: GenResult) => (g.sent ? (g.sent - g.received + g.late) / g.sent : 0);
const ATTEMPTS = 2;

/**
 * One step. Repeated once if others' load starved the generator, and once if the target lost
 * more than the limit: on a shared machine one burst of someone else's work can cost a step,
 * and a sweep should end on the relay's limit, not on that.
 */
async function step(make: Make, calls: number): Promise<Row | null> {
  let r: Row | null = null;
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    r = await attemptStep(make, calls);
    if (!r) return r;
    if (starved(r)) {
      console.log(`  (${r.target} at ${calls} calls: the generator sent only ${r.gen.sent} of ${r.gen.nominal} at ${fmt((r.gen.cpu_s / (measureMs / 1000)) * 100, 0)} % CPU, starved by other load; ${attempt < ATTEMPTS ? 'again' : 'kept, flagged'})`);
    } else if (lossOf(r.gen) > LOSS_LIMIT && r.target !== 'no relay') {
      console.log(`  (${r.target} at ${calls} calls: ${fmt(lossOf(r.gen) * 100, 3)} % lost or late, p99 ${fmt(r.gen.p99_us / 1000)} ms; ${attempt < ATTEMPTS ? 'once more' : 'kept'})`);
    } else {
      return r;
    }
  }
  return r;
}

async function attemptStep(make: Make, calls: number): Promise<Row | null> {
  const target = await make(calls);
  if (!target) return null;
  try {
    const idle = sum(target.pids().map(rssBytes));
    let pids: number[] = [];
    let cpu0: number[] = [];
    let cpu1: number[] = [];
    let rss = 0;
    let machine0 = 0;
    let machine1 = 0;
    let rx0 = [0, 0];
    let rx1 = [0, 0];
    const rxNow = () => [sum(relayRx.map(cpuSeconds)), sum(peerRx.map(cpuSeconds))];
    const gen = await runGenerator({
      calls, address: net.peerAddress, relayAddress: net.relayAddress, portBase: GENERATOR_PORT_BASE, sockets: genSockets, warmupMs, measureMs, core: 0,
      anchor: (c, a, b) => target.anchor(`bench-${calls}-${c}`, a, b),
      onMeasureStart: () => {
        pids = target.pids();
        cpu0 = pids.map(cpuSeconds);
        rx0 = rxNow();
        machine0 = machineBusy();
      },
      onMeasureEnd: () => {
        cpu1 = pids.map(cpuSeconds);
        rx1 = rxNow();
        machine1 = machineBusy();
        rss = sum(pids.map(rssBytes));
      },
    });
    const split = cpu1.map((c, i) => c - cpu0[i]!);
    const cpu = sum(split);
    return {
      target: target.name,
      calls,
      gen,
      pps: Math.round(gen.received / (measureMs / 1000)),
      cpuPct: (cpu / (measureMs / 1000)) * 100,
      usPerPkt: target.pid && gen.received ? (cpu * 1e6) / gen.received : NaN,
      split,
      rssMiB: rss / 2 ** 20,
      kibPerCall: target.pid ? (rss - idle) / 1024 / calls : NaN,
      machineS: machine1 - machine0,
      relayRxS: rx1[0]! - rx0[0]!,
      genRxS: rx1[1]! - rx0[1]!,
    };
  } finally {
    await target.stop();
  }
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');
const COLUMNS: Array<[string, number]> = [
  ['target', 13], ['calls', 5], ['pps', 7], ['loss%', 7], ['p50+us', 7], ['p99+us', 7], ['cpu%', 6], ['us/pkt', 7], ['x rtpe', 6], ['mach us/pkt', 11], ['rx us/pkt', 9], ['KiB/call', 8], ['cpu split', 11], ['gen cpu%', 8], ['gen rx%', 7],
];
const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(COLUMNS[i]![1]) : c.padStart(COLUMNS[i]![1]))).join(' ');

/** What the machine did beyond the no-relay run at the same load, per forwarded packet. */
const machinePerPkt = (r: Row, base: Row | undefined): number => (base && r !== base && r.gen.received ? ((r.machineS - base.machineS) * 1e6) / r.gen.received : NaN);

/** The relay's veth NAPI thread (its side's kernel receive work) per forwarded packet: veth + napi only. */
const rxPerPkt = (r: Row): number => (relayRx.length && Number.isFinite(r.usPerPkt) && r.gen.received ? (r.relayRxS * 1e6) / r.gen.received : NaN);
/**
 * What `x rtpe` and the ratios compare: the relay processes' CPU per packet, plus (veth + napi)
 * the relay side's NAPI thread, where its sockets' receive work runs and, for an io_uring
 * relay, the completions of its multishot receives: without it the ratio would credit a relay
 * for work the kernel does for it in that thread.
 */
const sidePerPkt = (r: Row): number => r.usPerPkt + (relayRx.length ? rxPerPkt(r) : 0);

function printRow(r: Row, base: Row | undefined, rtpe: Row | undefined): void {
  const added = (p: 'p50_us' | 'p99_us') => (base && r !== base ? r.gen[p] - base.gen[p] : NaN);
  const split = r.split.length > 1 ? r.split.map((c) => `${Math.round((c / sum(r.split)) * 100)}`).join('/') : '-';
  console.log(line([
    r.target + (behind(r) ? '!' : ''), String(r.calls), String(r.pps), fmt(lossOf(r.gen) * 100, 3), fmt(added('p50_us'), 0), fmt(added('p99_us'), 0), fmt(r.cpuPct), fmt(r.usPerPkt, 2),
    fmt(rtpe && !behind(rtpe) ? sidePerPkt(r) / sidePerPkt(rtpe) : NaN, 2), fmt(machinePerPkt(r, base), 2), fmt(rxPerPkt(r), 2), fmt(r.kibPerCall), split, fmt((r.gen.cpu_s / (measureMs / 1000)) * 100, 0),
    relayRx.length ? fmt((r.genRxS / (measureMs / 1000)) * 100, 0) : '-',
  ]));
  if (process.env.BENCH_DEBUG) console.log(`  ${JSON.stringify(r.gen)}`);
  if (r.gen.misrouted) console.log(`  ! ${r.gen.misrouted} packets arrived at the wrong endpoint`);
}

const RX_LINE: Record<RxSteering, string> = {
  napi: 'threaded veth NAPI (GRO, polled every 50 us), its kernel thread pinned to the receiving side\'s core: receive work of what arrives for the generator on core 0, for the relay on core 1',
  rps: 'RPS: receive work of what arrives for the generator on core 0, for the relay on core 1 (softirqs, charged to whatever a tick finds running there)',
  off: 'no steering: receive work on the sending core, as on loopback',
};
const CPU_LINE: Record<RxSteering, string> = {
  napi: 'us/pkt: the relay processes\' utime+stime: their receives\' syscalls and sends (veth transmit included), NOT their sockets\' kernel receive work (nor io_uring\'s receive completions), which run in the NAPI thread on core 1: that is rx us/pkt; x rtpe and the ratios compare us/pkt + rx us/pkt, the relay side\'s whole cost; gen rx%: the generator\'s NAPI thread, of core 0',
  rps: 'us/pkt: the relay processes\' utime+stime, with whatever of core 1\'s receive softirqs ran while they did; mach us/pkt holds all of it',
  off: 'us/pkt: the relay processes\' utime+stime, which (as on loopback) holds the generator\'s receive work for what the relay sends, while the relay\'s own is charged to the generator',
};
function netLine(): string {
  if (net.mode === 'loopback') return `net: loopback (${MEDIA_ADDRESS}): a send runs its receiver's kernel receive path in the sender's context, so us/pkt holds the generator's receive work for what the relay sends and core 0 pays the relay's; the CPU columns are upper bounds for separate hosts`;
  const rx = net.rx ?? 'off';
  return `net: veth (relay ${net.relayAddress} in namespace ${net.relayNs}, generator ${net.peerAddress} in its own), ${RX_LINE[rx]};\n  ${CPU_LINE[rx]}; mach us/pkt: all cores' busy time beyond the no-relay step (which sends straight to itself, not over the veth)`;
}

async function main(): Promise<void> {
  if (pair.mustEnterVeth(netMode)) process.exit(await pair.runAcrossVeth(rxMode));
  // This script is not pinned: it only sets calls up, and whatever it spawns inherits its affinity.
  console.log(`keylatch relay benchmark: G.711 calls (2 x 50 pps x 172 B), C generator (bench/rtpgen.c) on core 0, warm-up ${warmupMs} ms, measured ${measureMs} ms per step`);
  console.log(netLine());
  console.log('p50+/p99+: latency added over the no-relay baseline at the same load; cpu: all relay processes; us/pkt: relay CPU per forwarded packet;');
  console.log('loss: packets lost or more than 100 ms late; cpu split: share of relay CPU per process (dispatcher, worker 0, worker 1);');
  console.log('x rtpe: us/pkt over rtpengine\'s at the same step of this run; mach us/pkt: the whole machine\'s busy time beyond the no-relay step, per packet;');
  console.log('floor: bench/floor-relay.c, no checks at all, only the kernel socket path (epoll, recvmmsg, sendto): the least a socket relay costs here;');
  console.log('keylatch x2: two worker processes, left to the scheduler on both cores and so sharing them with the generator (the others are pinned to core 1);');
  console.log('gen cpu%: the generator, of its one core; a target marked ! is a step where the generator could not send at the nominal rate');
  console.log(line(COLUMNS.map(([h]) => h)));
  const all: Row[] = [];
  const active = new Set(chosen.filter((t) => t !== 'direct'));
  const started = Date.now();
  let longestStep = 0;
  /** Runs one step unless it would likely end after BENCH_MAX_MS. */
  const timed = async (make: Make, calls: number, name: string): Promise<Row | null | 'late'> => {
    if (Date.now() - started + longestStep > maxMs) {
      console.log(`  (${name} at ${calls} calls not run: the take would pass BENCH_MAX_MS=${maxMs})`);
      return 'late';
    }
    const t0 = Date.now();
    const r = await step(make, calls);
    longestStep = Math.max(longestStep, Date.now() - t0);
    return r;
  };
  sweep: for (const calls of steps) {
    const b = chosen.includes('direct') ? await timed(direct, calls, 'no relay') : null;
    if (b === 'late') break;
    const base = b;
    if (base) {
      printRow(base, undefined, undefined);
      all.push(base);
    }
    if (base && (lossOf(base.gen) > LOSS_LIMIT || behind(base))) {
      console.log(`  ! without a relay the generator lost ${fmt(lossOf(base.gen) * 100, 3)} % and sent ${base.gen.sent} of ${base.gen.nominal}: at ${calls} calls it, not a relay, sets the limit; sweep ends`);
      break;
    }
    for (const name of [...active]) {
      const r = await timed(TARGETS[name]!, calls, name);
      if (r === 'late') break sweep;
      if (!r) {
        active.delete(name);
        continue;
      }
      const rtpe = all.find((x) => x.target === 'rtpengine' && x.calls === calls);
      printRow(r, base ?? undefined, rtpe);
      all.push(r);
      if (lossOf(r.gen) > LOSS_LIMIT && !starved(r)) {
        console.log(`  ${r.target} lost ${fmt(lossOf(r.gen) * 100, 3)} % at ${calls} calls: above 0.1 %, its sweep ends`);
        active.delete(name);
      }
    }
    if (active.size === 0) break;
  }
  summary(all);
  console.log(`take: ${fmt((Date.now() - started) / 60000)} min`);
}

/** Per target, the figures at the most calls it carried at < 0.1 % loss. */
function summary(all: Row[]): void {
  console.log('\nsummary: at the most calls each carried at < 0.1 % loss');
  console.log('| target | calls at <0.1 % loss | pps | CPU per packet | x rtpengine | machine CPU per packet | relay rx NAPI per packet | p99 added latency | RSS per call | load split |');
  console.log('|---|---|---|---|---|---|---|---|---|---|');
  const names = [...new Set(all.map((r) => r.target))].filter((n) => n !== 'no relay');
  for (const name of names) {
    const ok = all.filter((r) => r.target === name && lossOf(r.gen) <= LOSS_LIMIT && !behind(r));
    const best = ok[ok.length - 1];
    if (!best) {
      console.log(`| ${name} | none | | | | | | | | |`);
      continue;
    }
    const base = all.find((r) => r.target === 'no relay' && r.calls === best.calls);
    const p99 = base ? best.gen.p99_us - base.gen.p99_us : best.gen.p99_us;
    const split = best.split.length > 1 ? best.split.map((c) => `${Math.round((c / sum(best.split)) * 100)} %`).join(' / ') : '-';
    const more = all.some((r) => r.target === name && r.calls > best.calls) ? '' : '+';
    const rtpe = all.find((r) => r.target === 'rtpengine' && r.calls === best.calls && !behind(r));
    const ratio = rtpe && name !== 'rtpengine' ? `${fmt(sidePerPkt(best) / sidePerPkt(rtpe), 2)}x` : '-';
    console.log(`| ${name} | ${best.calls}${more} | ${best.pps} | ${fmt(best.usPerPkt, 2)} us | ${ratio} | ${fmt(machinePerPkt(best, base), 2)} us | ${relayRx.length ? `${fmt(rxPerPkt(best), 2)} us` : '-'} | ${fmt(p99 / 1000, 2)} ms | ${fmt(best.kibPerCall)} KiB | ${split} |`);
  }
  console.log('N+: carried at the last step the sweep ran (the generator\'s limit or BENCH_CALLS), so maybe more');
  const ratios = (t: string, over: string): string => {
    const at = (name: string, c: number) => all.find((r) => r.target === name && r.calls === c && !behind(r));
    const calls = [...new Set(all.map((r) => r.calls))].filter((c) => at(t, c) && at(over, c));
    return calls.map((c) => `${c} calls ${fmt(sidePerPkt(at(t, c)!) / sidePerPkt(at(over, c)!), 2)}`).join(', ') || '-';
  };
  console.log(`CPU per packet, keylatch / rtpengine: ${ratios('keylatch', 'rtpengine')}`);
  console.log(`CPU per packet, floor / rtpengine (the best any socket relay could do): ${ratios('floor', 'rtpengine')}`);
  console.log(`CPU per packet, keylatch / floor: ${ratios('keylatch', 'floor')}`);
  console.log(`CPU per packet, keylatch x2 / keylatch: ${ratios('keylatch x2', 'keylatch')}`);
  console.log(`CPU per packet, keylatch (sendBatching gso) / off: ${ratios('keylatch', 'keylatch off')}`);
  console.log(`CPU per packet, keylatch (sendBatching gso) / sendmmsg: ${ratios('keylatch', 'keylatch sendmmsg')}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
