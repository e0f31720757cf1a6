/**
 * npm run bench:sip — SIP through a real drachtio-server plus keylatch's edge (in this
 * process, with the relay anchoring every call), driven by sipp on loopback; a sipp UAS plays
 * the PBX. Reports REGISTER transactions per second (a new registration forwarded to the PBX,
 * then a refresh keylatch answers itself) and call setups per second (INVITE with SDP, relay
 * offer and answer, ACK, BYE after BENCH_HOLD_MS). Each row runs a fixed offered rate for
 * BENCH_SECONDS; it is only as good as sipp and drachtio on the same 2 cores.
 *
 *   BENCH_REGISTER_RATES=250,500,750  BENCH_CALL_RATES=25,50,100,200  BENCH_SECONDS=5  BENCH_HOLD_MS=1000
 */
import path from 'node:path';
import { loadConfig } from '../src/config/load';
import { Relay } from '../src/media/relay';
import type { Binding } from '../src/nat/binding';
import { MemoryBindingStore } from '../src/nat/binding-store';
import { startSipEdge } from '../src/sip/edge';
import { drachtioBinary, startDrachtio } from '../test/helpers/drachtio';
import { testMediaConfig } from '../test/helpers/peers';
import { SCENARIOS, runSipp, sippUnavailable } from '../test/helpers/sipp';
import { cpuSeconds } from './targets';

const list = (v: string | undefined, d: string): number[] => (v ?? d).split(',').map(Number);
const registerRates = list(process.env.BENCH_REGISTER_RATES, '250,500,750');
const callRates = list(process.env.BENCH_CALL_RATES, '25,50,100,200');
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const holdMs = Number(process.env.BENCH_HOLD_MS ?? 1000);
const EDGE = { ip: '127.0.0.1', port: 25060 };
const PBX = { ip: '127.0.0.2', port: 25070 };

interface Row {
  kind: string;
  offered: number;
  done: number;
  failed: number;
  perSec: number;
  edgeCpu: number;
  drachtioCpu: number;
}

/** Successful and failed calls from sipp's final statistics screen (the cumulative column). */
function sippStats(out: string): { ok: number; failed: number } {
  const last = (label: string): number => {
    const all = [...out.matchAll(new RegExp(`${label}\\s+\\|\\s+\\d+\\s+\\|\\s+(\\d+)`, 'g'))];
    return all.length ? Number(all.at(-1)![1]) : 0;
  };
  return { ok: last('Successful call'), failed: last('Failed call') };
}

/**
 * When the edge finished each unit of work. sipp's own wall clock includes its start-up, the
 * call hold time and any straggler's retransmissions; the rate is taken between the first and
 * the last completion seen inside keylatch instead.
 */
class Completions {
  private times: number[] = [];
  mark(): void {
    this.times.push(performance.now());
  }
  reset(): void {
    this.times = [];
  }
  perSec(): number {
    const n = this.times.length;
    return n < 2 ? 0 : ((n - 1) * 1000) / (this.times[n - 1]! - this.times[0]!);
  }
}
const registrations = new Completions();
const calls = new Completions();

/** Every REGISTER transaction the edge completes writes its binding once. */
class TimedStore extends MemoryBindingStore {
  override async put(b: Binding): Promise<void> {
    await super.put(b);
    registrations.mark();
  }
}

/** Every call the edge anchored and then ended is deleted from the relay once. */
class TimedRelay extends Relay {
  override delete(req: { callId: string }) {
    const stats = super.delete(req);
    if (stats) calls.mark();
    return stats;
  }
}

async function measure(kind: string, rate: number, uac: string[], uas: string[], drachtioPid: number, done: Completions): Promise<Row> {
  done.reset();
  const total = Math.round(rate * seconds);
  const pbx = runSipp([...uas, '-i', PBX.ip, '-p', String(PBX.port), '-m', String(total)], { timeoutMs: (seconds + 20) * 1000 });
  await new Promise((r) => setTimeout(r, 300));
  const cpu0 = process.cpuUsage();
  const d0 = cpuSeconds(drachtioPid);
  const t0 = process.hrtime.bigint();
  const client = await runSipp([...uac, '-i', EDGE.ip, '-p', '0', '-r', String(rate), '-m', String(total), '-l', String(rate * 10), `${EDGE.ip}:${EDGE.port}`],
    { timeoutMs: (seconds + 15) * 1000 });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const dCpu = cpuSeconds(drachtioPid) - d0;
  const stats = sippStats(client.out);
  await pbx;
  return {
    kind, offered: rate, done: stats.ok, failed: total - stats.ok, perSec: done.perSec(),
    edgeCpu: ((cpu.user + cpu.system) / 1e6 / wall) * 100, drachtioCpu: (dCpu / wall) * 100,
  };
}

async function main(): Promise<void> {
  const missing = !drachtioBinary() ? 'drachtio-server not found (DRACHTIO_BIN or PATH)' : sippUnavailable();
  if (missing) {
    console.error(`bench:sip cannot run: ${missing}`);
    process.exit(2);
  }
  const drachtio = await startDrachtio({ contacts: [`sip:${EDGE.ip}:${EDGE.port};transport=udp`], adminPort: 25022 });
  const relay = new TimedRelay(testMediaConfig({ portMin: 40000, portMax: 49999 }));
  const defaults = loadConfig({ env: {} }).sip;
  const edge = await startSipEdge({
    drachtio: drachtio.admin, relay, store: new TimedStore(),
    sip: { ...defaults, pbx: `sip:${PBX.ip}:${PBX.port}`, advertisedAddress: `${EDGE.ip}:${EDGE.port}`, keepalive: { ...defaults.keepalive, intervalSec: 3600 } },
  });
  const rows: Row[] = [];
  try {
    for (const rate of registerRates) {
      rows.push(await measure('REGISTER', rate, ['-sf', path.join(__dirname, 'scenarios', 'register.xml')], ['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml')], drachtio.pid, registrations));
      console.error(JSON.stringify(rows.at(-1)));
    }
    for (const rate of callRates) {
      rows.push(await measure('call', rate,
        ['-sf', path.join(SCENARIOS, 'client-call.xml'), '-key', 'mport', '7000', '-d', String(holdMs)],
        ['-sf', path.join(SCENARIOS, 'pbx-answer.xml'), '-key', 'mport', '7002'], drachtio.pid, calls));
      console.error(JSON.stringify(rows.at(-1)));
      if (relay.callCount !== 0) console.error(`warning: ${relay.callCount} relay calls left after the run`);
    }
  } finally {
    await edge.close();
    await relay.close();
    await drachtio.stop();
  }
  const head = ['kind', 'offered/s', 'done', 'not done', 'achieved/s', 'edge cpu%', 'drachtio cpu%'];
  console.log(head.map((h) => h.padStart(15)).join(''));
  for (const r of rows) {
    console.log([r.kind, r.offered, r.done, r.failed, r.perSec.toFixed(0), r.edgeCpu.toFixed(0), r.drachtioCpu.toFixed(0)].map((v) => String(v).padStart(15)).join(''));
  }
  console.log('offered/s and done are sipp calls: for REGISTER, one new registration (forwarded to the PBX) and one refresh (answered by keylatch).');
  console.log('achieved/s is measured inside keylatch between first and last completion: REGISTER transactions, or calls set up and ended.');
  console.log(`Each call: INVITE with SDP, relay offer and answer, ACK, ${holdMs} ms, BYE. CPU% is of one core, averaged over sipp's whole run.`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
