/**
 * npm run bench:relay — sweeps the number of G.711 calls through keylatch, rtpengine
 * (userspace, --table=-1) and no relay at all, side by side, until keylatch loses more than
 * 0.1 %. Relays run pinned to core 1, this load generator to core 0.
 *
 *   BENCH_CALLS=50,100,200,400,600,800  BENCH_MEASURE_MS=5000  BENCH_WARMUP_MS=1500
 */
import { Load, percentile } from './load';
import { cpuSeconds, direct, keylatch, pinTo, rssBytes, rtpengine, type Target } from './targets';

const steps = (process.env.BENCH_CALLS ?? '50,100,200,400,600,800,1000').split(',').map(Number);
const measureMs = Number(process.env.BENCH_MEASURE_MS ?? 5000);
const warmupMs = Number(process.env.BENCH_WARMUP_MS ?? 1500);
const LOSS_LIMIT = 0.001;

interface Row {
  target: string;
  calls: number;
  pps: number;
  loss: number;
  p50: number;
  p99: number;
  cpuPct: number;
  usPerPkt: number;
  rssMiB: number;
  /** RSS the calls cost once set up, before any media. */
  kibPerCallIdle: number;
  /** The same under load: includes the heap growth that the packet rate itself causes. */
  kibPerCall: number;
}

async function step(make: () => Promise<Target | null> | Target, calls: number): Promise<Row | null> {
  const target = await make();
  if (!target) return null;
  const load = new Load();
  try {
    const idle = target.pid ? rssBytes(target.pid) : 0;
    for (let i = 0; i < calls; i++) await load.addCall(i, (a, b) => target.anchor(`bench-${calls}-${i}`, a, b));
    const setUp = target.pid ? rssBytes(target.pid) : 0;
    let cpu0 = 0;
    let cpu1 = 0;
    const r = await load.run(
      warmupMs,
      measureMs,
      () => (cpu0 = target.pid ? cpuSeconds(target.pid) : 0),
      () => (cpu1 = target.pid ? cpuSeconds(target.pid) : 0),
    );
    const rss = target.pid ? rssBytes(target.pid) : 0;
    const cpu = cpu1 - cpu0;
    return {
      target: target.name,
      calls,
      pps: Math.round(r.received / (measureMs / 1000)),
      loss: r.sent ? 1 - r.received / r.sent : 0,
      p50: percentile(r.latenciesUs, 50),
      p99: percentile(r.latenciesUs, 99),
      cpuPct: (cpu / (measureMs / 1000)) * 100,
      usPerPkt: r.received ? (cpu * 1e6) / r.received : NaN,
      rssMiB: rss / 2 ** 20,
      kibPerCallIdle: target.pid ? (setUp - idle) / 1024 / calls : NaN,
      kibPerCall: target.pid ? (rss - idle) / 1024 / calls : NaN,
    };
  } finally {
    load.close();
    await target.stop();
  }
}

const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

function print(rows: Row[], base: Row | undefined): void {
  for (const r of rows) {
    const added50 = base && r.target !== base.target ? r.p50 - base.p50 : NaN;
    const added99 = base && r.target !== base.target ? r.p99 - base.p99 : NaN;
    console.log(
      [
        r.target.padEnd(10), String(r.calls).padStart(5), String(r.pps).padStart(7), fmt(r.loss * 100, 3).padStart(7),
        fmt(added50).padStart(9), fmt(added99).padStart(9), fmt(r.cpuPct).padStart(6), fmt(r.usPerPkt, 2).padStart(8),
        fmt(r.rssMiB).padStart(7), fmt(r.kibPerCallIdle, 1).padStart(9), fmt(r.kibPerCall, 1).padStart(9),
      ].join(' '),
    );
  }
}

async function main(): Promise<void> {
  pinTo(0, process.pid);
  console.log(`keylatch relay benchmark: G.711 calls (2 x 50 pps x 172 B), warm-up ${warmupMs} ms, measured ${measureMs} ms per step`);
  console.log('latency is added over the no-relay baseline at the same load; CPU is the relay process, pinned to one core');
  console.log(['target'.padEnd(10), 'calls'.padStart(5), 'pps'.padStart(7), 'loss%'.padStart(7), 'p50+us'.padStart(9), 'p99+us'.padStart(9), 'cpu%'.padStart(6), 'us/pkt'.padStart(8), 'rssMiB'.padStart(7), 'KiB/c.set'.padStart(9), 'KiB/c.run'.padStart(9)].join(' '));
  const all: Row[] = [];
  for (const calls of steps) {
    const base = await step(direct, calls);
    const rows = [base, await step(rtpengine, calls), await step(keylatch, calls)].filter((r): r is Row => r !== null);
    print(rows, base ?? undefined);
    all.push(...rows);
    const nominal = calls * 2 * (1000 / 20);
    if (base && base.pps < nominal * 0.9) {
      console.log(`  ! the generator reached only ${base.pps} of ${nominal} pps without a relay: at ${calls} calls it, not the relay, sets the pace`);
    }
    const ours = rows.find((r) => r.target === 'keylatch');
    if (ours && ours.loss > LOSS_LIMIT) {
      console.log(`keylatch lost ${fmt(ours.loss * 100, 3)} % at ${calls} calls: above 0.1 %, sweep ends`);
      break;
    }
  }
  const ratio = (calls: number) => {
    const k = all.find((r) => r.target === 'keylatch' && r.calls === calls);
    const e = all.find((r) => r.target === 'rtpengine' && r.calls === calls);
    return k && e ? k.usPerPkt / e.usPerPkt : NaN;
  };
  const common = [...new Set(all.filter((r) => r.target === 'rtpengine').map((r) => r.calls))];
  console.log(`CPU per packet, keylatch / rtpengine: ${common.map((c) => `${c} calls ${fmt(ratio(c), 2)}`).join(', ')}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
