/**
 * npm run bench:sip — each SIP front end's ceiling, found in the same run: keylatch's edge (in
 * this process, on a real drachtio-server, with the relay anchoring every call), the same edge
 * as N processes behind one drachtio-server (`keylatch edge --processes N`, bindings in Redis),
 * and Kamailio with rtpengine as the plain NAT-traversal proxy it is usually compared with
 * (bench/kamailio-nat-proxy.cfg: every REGISTER forwarded, every call record-routed and
 * anchored). The same sipp scenarios drive all of them; a sipp UAS plays the PBX.
 *
 * The offered rate climbs in steps, every front end in turn at each step, so all of them see
 * the machine in the same state; a front end drops out at the first step where more than
 * BENCH_MAX_FAILED (1 %) of what was offered failed, twice in a row (a failed step is run once
 * more: the machine is shared). Its ceiling is the last step it passed.
 *
 * REGISTER rows: each sipp call is a new registration then a refresh, two transactions. keylatch
 * forwards the first to the PBX and answers the refresh itself; Kamailio forwards both.
 * Call rows: INVITE with SDP, media anchored (offer and answer), ACK, BENCH_HOLD_MS, BYE.
 *
 * The edge logs as the product does (pino at the configured level, here to /dev/null), and
 * drachtio-server at notice (at info it writes every SIP message). CPU is each process's own
 * utime+stime over the row; "cpu ms/unit" divides it by what completed, so a row with failures
 * costs more per success, not less. It is only as good as sipp on the same 2 cores.
 *
 *   BENCH_REGISTER_RATES=1000:10000:1000  REGISTER transactions/s: from:to:step (or a list a,b,c)
 *   BENCH_CALL_RATES=100:900:100         calls/s, each held BENCH_HOLD_MS (1000)
 *   BENCH_SECONDS=5  BENCH_MAX_FAILED=0.01  BENCH_EDGE_PROCESSES=2
 *   BENCH_TARGETS=keylatch,keylatch-procs,kamailio  BENCH_LOG_LEVEL=info
 *   BENCH_EDGE_LOG=FILE   what keylatch edge --processes N prints, kept (else dropped once it is up)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { loadConfig } from '../src/config/load';
import { Relay } from '../src/media/relay';
import { startSipEdge } from '../src/sip/edge';
import { drachtioBinary, startDrachtio } from '../test/helpers/drachtio';
import { kamailioUnavailable } from '../test/helpers/kamailio';
import { redisUnavailable, startRedis } from '../test/helpers/redis';
import { testMediaConfig } from '../test/helpers/peers';
import { SCENARIOS, runSipp, sippUnavailable } from '../test/helpers/sipp';
import { cpuSeconds, processTree, rtpengine } from './targets';

/** "from:to:step" or "a,b,c". */
function rates(v: string | undefined, d: string): number[] {
  const spec = v ?? d;
  const m = /^(\d+):(\d+):(\d+)$/.exec(spec);
  if (!m) return spec.split(',').filter(Boolean).map(Number);
  const out: number[] = [];
  for (let r = Number(m[1]); r <= Number(m[2]); r += Number(m[3])) out.push(r);
  return out;
}
const registerRates = rates(process.env.BENCH_REGISTER_RATES, '1000:10000:1000');
const callRates = rates(process.env.BENCH_CALL_RATES, '100:900:100');
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const holdMs = Number(process.env.BENCH_HOLD_MS ?? 1000);
const maxFailed = Number(process.env.BENCH_MAX_FAILED ?? 0.01);
const edgeProcesses = Number(process.env.BENCH_EDGE_PROCESSES ?? 2);
/**
 * After a failed step, the front ends and sipp still retransmit its unanswered requests; a
 * retry straight away would count those against itself. Most are over after T2 twice.
 */
const DRAIN_AFTER_FAILURE_MS = 8000;
const TIMER_F_MS = 32_000;
const wanted = new Set((process.env.BENCH_TARGETS ?? 'keylatch,keylatch-procs,kamailio').split(','));
const PBX = { ip: '127.0.0.2', port: 25070 };

/**
 * Processes this bench started, killed however it ends (a crash included): orphans would hold
 * the bench's ports for the next run.
 */
const started = new Set<number>();
process.on('exit', () => {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

/** One SIP front end under test: where sipp sends, and the processes whose CPU counts. */
interface Front {
  name: string;
  addr: { ip: string; port: number };
  /** CPU seconds so far per process role, e.g. { edge, drachtio }. */
  cpu(): Record<string, number>;
  stop(): Promise<void>;
}

interface Row {
  front: string;
  kind: 'REGISTER' | 'call';
  offered: number;
  /** Transactions (REGISTER) or calls that completed, and those that did not. */
  done: number;
  failed: number;
  perSec: number;
  cpuPct: Record<string, number>;
  /** CPU milliseconds, all processes of the front end together, per completed unit. */
  cpuMsPer: number;
  /** At most BENCH_MAX_FAILED of what was offered failed: the front end carried this step. */
  passed: boolean;
  /** The phones' sipp left no statistics (killed or died): nothing is known of the step, which counts as not passed. */
  noSippStats?: true;
}

/**
 * Successful and failed calls from sipp's final statistics screen (the cumulative column), or
 * null when there is none: sipp prints it only as it exits, so a sipp that was killed or died
 * leaves none, and the step's traffic is then unknown, not failed.
 */
function sippStats(out: string): { ok: number; failed: number } | null {
  const last = (label: string): number | null => {
    const all = [...out.matchAll(new RegExp(`${label}\\s+\\|\\s+\\d+\\s+\\|\\s+(\\d+)`, 'g'))];
    return all.length ? Number(all.at(-1)![1]) : null;
  };
  const ok = last('Successful call');
  const failed = last('Failed call');
  return ok === null || failed === null ? null : { ok, failed };
}

const sumCpu = (pids: number[]): number =>
  pids.reduce((t, pid) => {
    try {
      return t + cpuSeconds(pid);
    } catch {
      return t; // a child that exited meanwhile
    }
  }, 0);

async function keylatchFront(level: string): Promise<Front> {
  const addr = { ip: '127.0.0.1', port: 25060 };
  const drachtio = await startDrachtio({ contacts: [`sip:${addr.ip}:${addr.port};transport=udp`], adminPort: 25022, loglevel: 'notice' });
  started.add(drachtio.pid);
  // The product's logger (src/log.ts) at the product's level, written where it costs what a
  // file would but fills no disk.
  const logger = pino({ level, base: { app: 'keylatch' } }, pino.destination({ dest: process.env.BENCH_LOG_FILE ?? '/dev/null', sync: false }));
  const relay = new Relay(testMediaConfig({ portMin: 40000, portMax: 49999 }), { logger });
  const defaults = loadConfig({ env: {} }).sip;
  const edge = await startSipEdge({
    drachtio: drachtio.admin, relay, logger,
    sip: { ...defaults, pbx: `sip:${PBX.ip}:${PBX.port}`, advertisedAddress: `${addr.ip}:${addr.port}`, keepalive: { ...defaults.keepalive, intervalSec: 3600 } },
  });
  return {
    name: 'keylatch',
    addr,
    cpu: () => {
      const own = process.cpuUsage();
      return { edge: (own.user + own.system) / 1e6, drachtio: sumCpu([drachtio.pid]) };
    },
    async stop() {
      if (relay.callCount !== 0) console.error(`warning: ${relay.callCount} relay calls left after the run`);
      await edge.close();
      await relay.close();
      await drachtio.stop();
    },
  };
}

/**
 * `keylatch edge --processes n` as an operator runs it (the CLI, its supervisor and n edge
 * processes) on a drachtio-server of its own, bindings in a Redis of its own. Redis counts as
 * part of this front end's CPU: one process does not need it.
 */
async function keylatchProcessesFront(level: string, n: number): Promise<Front> {
  const addr = { ip: '127.0.0.1', port: 25160 };
  const drachtio = await startDrachtio({ contacts: [`sip:${addr.ip}:${addr.port};transport=udp`], adminPort: 25122, loglevel: 'notice' });
  started.add(drachtio.pid);
  const redis = await startRedis();
  const redisPid = Number((await new Promise<string>((resolve) => {
    const r = spawn('redis-cli', ['-u', redis.url, 'info', 'server']);
    let out = '';
    r.stdout.on('data', (d: Buffer) => (out += d.toString()));
    r.on('exit', () => resolve(/process_id:(\d+)/.exec(out)?.[1] ?? '0'));
  })));
  const root = path.join(__dirname, '..');
  const env = {
    ...process.env,
    KEYLATCH_LOG__LEVEL: level,
    KEYLATCH_SIP__DRACHTIO__HOST: drachtio.admin.host, KEYLATCH_SIP__DRACHTIO__PORT: String(drachtio.admin.port), KEYLATCH_SIP__DRACHTIO__SECRET: drachtio.admin.secret,
    KEYLATCH_SIP__PBX: `sip:${PBX.ip}:${PBX.port}`, KEYLATCH_SIP__ADVERTISED_ADDRESS: `${addr.ip}:${addr.port}`, KEYLATCH_SIP__BINDING_STORE: redis.url,
    KEYLATCH_SIP__KEEPALIVE__INTERVAL_SEC: '3600',
    KEYLATCH_MEDIA__INTERFACE: '127.0.0.1', KEYLATCH_MEDIA__ALLOW_LOOPBACK_PEERS: 'true', KEYLATCH_MEDIA__PORT_MIN: '40000', KEYLATCH_MEDIA__PORT_MAX: '49999',
  };
  // Compiled on the fly as the tests run it; the product's shebang flag kept.
  const cli = spawn(process.execPath, ['--max-semi-space-size=1', '-r', path.join(root, 'test/helpers/ts-register.js'), path.join(root, 'src/cli.ts'), 'edge', '--processes', String(n)],
    { env, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(cli.pid!);
  let log = '';
  // What the product says when every process can answer (the supervisor's line, after each
  // process's drachtio-server routes are confirmed): the bench starts sending then, as a user would.
  let up = false;
  cli.stdout!.on('data', (d: Buffer) => {
    log = (log + d.toString()).slice(-4000);
    up ||= /"msg":"keylatch edge started"/.test(log);
  });
  cli.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  for (let i = 0; !up; i++) {
    if (cli.exitCode !== null || i > 300) throw new Error(`keylatch edge --processes ${n} did not come up:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  // The processes log at the product's level; what they print is read only until they are up,
  // or kept in BENCH_EDGE_LOG (a crash or a restart shows there, nowhere else).
  cli.stdout!.removeAllListeners('data').resume();
  if (process.env.BENCH_EDGE_LOG) {
    const out = fs.createWriteStream(process.env.BENCH_EDGE_LOG);
    out.write(log);
    cli.stdout!.on('data', (d: Buffer) => out.write(d));
    cli.stderr!.on('data', (d: Buffer) => out.write(d));
  }
  for (const pid of processTree(cli.pid!)) started.add(pid);
  return {
    name: `keylatch x${n}`,
    addr,
    cpu: () => ({ edges: sumCpu(processTree(cli.pid!)), drachtio: sumCpu([drachtio.pid]), redis: redisPid ? sumCpu([redisPid]) : 0 }),
    async stop() {
      cli.kill('SIGTERM');
      if (cli.exitCode === null) await once(cli, 'exit');
      await redis.stop();
      await drachtio.stop();
    },
  };
}

async function kamailioFront(): Promise<Front> {
  const addr = { ip: '127.0.0.1', port: 25080 };
  const ngPort = 22292;
  // Ports freed at the BYE, as keylatch's relay frees them: rtpengine's default delete delay
  // (30 s) kept every call's four ports that long, and by the 400 calls/s step the range was
  // full of ended calls; that, not Kamailio, was where its call failures came from.
  const rtpe = await rtpengine({ iface: '127.0.0.1', ngPort, ports: [50000, 59999], core: null, boost: false, extraArgs: ['--delete-delay=0'] });
  if (!rtpe) throw new Error('rtpengine not installed (apt-get install rtpengine-daemon)');
  started.add(rtpe.pid!);
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kl-bench-kamailio-'));
  // 1 GiB of shared memory: tm keeps each transaction a few seconds after it ends, and with the
  // 64 MiB this bench used to give it, Kamailio ran out at 2,000 REGISTER tx/s ("out of mem"
  // in t_newtran), which is what its failures in the old tables were, not its ceiling.
  const args = ['-f', path.join(__dirname, 'kamailio-nat-proxy.cfg'), '-DD', '-E', '-m', '1024', '-M', '16', '-Y', runDir, '-P', path.join(runDir, 'pid'),
    '-l', `udp:${addr.ip}:${addr.port}`, '-A', `PBX_URI="sip:${PBX.ip}:${PBX.port}"`, '-A', `RTPENGINE_SOCK="udp:127.0.0.1:${ngPort}"`];
  // Its own process group, so that stopping it stops every worker it forked.
  const kam: ChildProcess = spawn('kamailio', args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  started.add(-kam.pid!); // its whole process group
  let log = '';
  kam.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
  // Listening once its workers exist (main + udp children + timers).
  for (let i = 0; processTree(kam.pid!).length < 3; i++) {
    if (kam.exitCode !== null || i > 100) {
      await rtpe.stop();
      throw new Error(`kamailio did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await new Promise((r) => setTimeout(r, 300));
  return {
    name: 'kamailio',
    addr,
    cpu: () => ({ kamailio: sumCpu(processTree(kam.pid!)), rtpengine: sumCpu([rtpe.pid!]) }),
    async stop() {
      if (process.env.BENCH_DEBUG) console.error(`kamailio log:\n${log}`);
      process.kill(-kam.pid!, 'SIGTERM');
      if (kam.exitCode === null) await once(kam, 'exit');
      await rtpe.stop();
      fs.rmSync(runDir, { recursive: true, force: true });
    },
  };
}

async function measure(front: Front, kind: Row['kind'], rate: number): Promise<Row> {
  const total = Math.round(rate * seconds);
  const reg = kind === 'REGISTER';
  // Kamailio forwards the refresh too: its PBX answers both REGISTERs of each sipp call.
  const pbxRegister = front.name === 'kamailio' ? path.join(__dirname, 'scenarios', 'pbx-register-twice.xml') : path.join(SCENARIOS, 'pbx-register-ok.xml');
  const uac = reg
    ? ['-sf', path.join(__dirname, 'scenarios', 'register.xml')]
    : ['-sf', path.join(SCENARIOS, 'client-call.xml'), '-key', 'mport', '7000', '-d', String(holdMs)];
  const uas = reg ? ['-sf', pbxRegister] : ['-sf', path.join(SCENARIOS, 'pbx-answer.xml'), '-key', 'mport', '7002'];
  // Big socket buffers: at these rates sipp itself drops datagrams with the default ones.
  const buffers = ['-buff_size', String(4 << 20)];
  // The PBX waits for `total` calls; when some never reach it, it must not hold the row up long.
  const pbx = runSipp([...uas, ...buffers, '-i', PBX.ip, '-p', String(PBX.port), '-m', String(total)], { timeoutMs: (seconds + holdMs / 1000 + 5) * 1000 });
  await new Promise((r) => setTimeout(r, 300));
  const cpu0 = front.cpu();
  const t0 = process.hrtime.bigint();
  // A call that got no answer for 2 s has failed: its timeout must not stretch the row.
  const client = await runSipp([...uac, ...buffers, '-recv_timeout', '2000', '-i', front.addr.ip, '-p', '0', '-r', String(rate), '-m', String(total), '-l', String(rate * 10), `${front.addr.ip}:${front.addr.port}`],
    { timeoutMs: (seconds + 10) * 1000 });
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu1 = front.cpu();
  await pbx;
  const counted = sippStats(client.out);
  // Said loudly: such a step once read as "no REGISTER answered at all" (docs/sip-throughput.md).
  if (!counted) console.error(`${front.name} ${kind} ${rate}: the phones' sipp left no statistics (exit code ${client.code}); its output ends:\n${client.out.slice(-1500)}`);
  const stats = counted ?? { ok: 0, failed: 0 };
  if (process.env.BENCH_DEBUG && stats.ok < total) console.error(`${front.name} ${kind} ${rate}: sipp said\n${client.out.slice(-2500)}\nPBX side:\n${(await pbx).out.slice(-1500)}`);
  const perCall = reg ? 2 : 1;
  const done = stats.ok * perCall;
  const cpuPct: Record<string, number> = {};
  let cpuTotal = 0;
  for (const [role, s] of Object.entries(cpu1)) {
    const used = s - (cpu0[role] ?? 0);
    cpuTotal += used;
    cpuPct[role] = (used / wall) * 100;
  }
  // The last calls end holdMs after they start; the rate is over the time offered work took.
  const active = Math.max(wall - (reg ? 0 : holdMs / 1000), 0.001);
  const failed = (total - stats.ok) * perCall;
  const perSec = done / active;
  // Failures only: a call sipp gave up on after 2 s is a failure, so a front end that falls
  // behind fails here. The achieved rate is not a test: a few late failures stretch the wall.
  const passed = failed <= maxFailed * total * perCall;
  return { front: front.name, kind, offered: rate * perCall, done, failed, perSec, cpuPct, cpuMsPer: done ? (cpuTotal * 1000) / done : NaN, passed: passed && counted !== null, ...(counted ? {} : { noSippStats: true as const }) };
}

function print(rows: Row[], fronts: string[]): void {
  const head = ['front end', 'kind', 'offered/s', 'done', 'failed', 'achieved/s', 'cpu% (procs)', 'cpu ms/unit', 'x kamailio', 'passed'];
  const widths = [12, 9, 10, 8, 8, 11, 42, 12, 11, 7];
  const line = (cells: string[]): string => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' ');
  console.log(line(head));
  for (const r of rows) {
    const ref = rows.find((k) => k.front === 'kamailio' && k.kind === r.kind && k.offered === r.offered);
    const ratio = ref && r.front !== 'kamailio' && ref.cpuMsPer > 0 ? (r.cpuMsPer / ref.cpuMsPer).toFixed(2) : '';
    const procs = Object.entries(r.cpuPct).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(' + ');
    const total = Object.values(r.cpuPct).reduce((a, b) => a + b, 0);
    console.log(line([r.front, r.kind, String(r.offered), String(r.done), String(r.failed), r.perSec.toFixed(0), `${total.toFixed(0)} = ${procs}`, r.cpuMsPer.toFixed(3), ratio, r.passed ? 'yes' : 'NO']));
  }
  console.log('REGISTER units are transactions (two per sipp call: a new registration and a refresh; Kamailio forwards both, keylatch answers the refresh itself).');
  console.log(`call units are calls: INVITE with SDP, media anchored, ACK, ${holdMs} ms, BYE. cpu% is of one core over the sipp run; cpu ms/unit is all the front end's processes per completed unit.`);
  console.log(`x kamailio: cpu ms/unit over Kamailio+rtpengine's at the same offered rate. passed: at most ${(maxFailed * 100).toFixed(1)} % failed (a step that did not is run once more; the table shows the second try).`);
  console.log('');
  console.log('Ceilings: the highest offered rate each front end passed ("-" none; ">" it passed the last step tried), its cpu ms per unit there,');
  console.log('and 1000 / that: the units one core of its processes carries (a ceiling sipp on this box cannot show when the front end is not the limit).');
  const cw = [12, 30, 22, 30, 22];
  const cline = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(cw[i]!) : c.padStart(cw[i]!))).join(' ');
  console.log(cline(['front end', 'REGISTER tx/s', 'of kamailio', 'calls/s', 'of kamailio']));
  // Per core: 1000 / cpu ms per unit at the ceiling, what one core of the front end's processes carries.
  const ceiling = (front: string, kind: Row['kind']): { rate: number; open: boolean } | null => {
    const mine = rows.filter((r) => r.front === front && r.kind === kind);
    const ok = mine.filter((r) => r.passed);
    if (!ok.length) return null;
    const best = Math.max(...ok.map((r) => r.offered));
    const last = kind === 'REGISTER' ? registerRates.at(-1)! : callRates.at(-1)!;
    return { rate: best, open: best >= last && mine.every((r) => r.passed) };
  };
  for (const f of fronts) {
    const cells = [f];
    for (const kind of ['REGISTER', 'call'] as const) {
      const c = ceiling(f, kind);
      const k = ceiling('kamailio', kind);
      const cpu = c ? rows.find((r) => r.front === f && r.kind === kind && r.offered === c.rate)!.cpuMsPer.toFixed(3) : '';
      cells.push(c ? `${c.open ? '>' : ''}${c.rate} (${cpu} ms, ${(1000 / Number(cpu)).toFixed(0)}/core)` : '-');
      cells.push(c && k && f !== 'kamailio' ? `${(c.rate / k.rate).toFixed(2)}x${k.open ? ' (kamailio >)' : ''}` : '');
    }
    console.log(cline(cells));
  }
}

async function main(): Promise<void> {
  const missing = sippUnavailable()
    ?? ((wanted.has('keylatch') || wanted.has('keylatch-procs')) && !drachtioBinary() ? 'drachtio-server not found (DRACHTIO_BIN or PATH)' : null)
    ?? (wanted.has('keylatch-procs') ? redisUnavailable() : null)
    ?? (wanted.has('kamailio') ? kamailioUnavailable() : null);
  if (missing) {
    console.error(`bench:sip cannot run: ${missing}`);
    process.exit(2);
  }
  const level = process.env.BENCH_LOG_LEVEL ?? loadConfig({ env: {} }).log.level;
  const fronts: Front[] = [];
  const rows: Row[] = [];
  try {
    if (wanted.has('keylatch')) fronts.push(await keylatchFront(level));
    if (wanted.has('keylatch-procs')) fronts.push(await keylatchProcessesFront(level, edgeProcesses));
    if (wanted.has('kamailio')) fronts.push(await kamailioFront());
    const ramps: Array<[Row['kind'], number[]]> = [['REGISTER', registerRates], ['call', callRates]];
    for (const [kind, steps] of ramps) {
      // The last phase's failed transactions are still being retransmitted toward the PBX's port
      // (up to Timer F, 32 s): the next phase's PBX would take them for calls of its own.
      if (rows.length) await new Promise((r) => setTimeout(r, TIMER_F_MS));
      let climbing = [...fronts];
      for (const rate of steps) {
        if (!climbing.length) break;
        for (const front of [...climbing]) {
          // REGISTER rates are transactions; sipp's are calls of two.
          let row = await measure(front, kind, kind === 'REGISTER' ? rate / 2 : rate);
          // Once more before it drops out: the machine is shared, and one bad step is noise as often as a ceiling.
          if (!row.passed) {
            console.error(JSON.stringify({ ...row, retried: true }));
            await new Promise((r) => setTimeout(r, DRAIN_AFTER_FAILURE_MS));
            row = await measure(front, kind, kind === 'REGISTER' ? rate / 2 : rate);
          }
          rows.push(row);
          console.error(JSON.stringify(row));
          if (!row.passed) climbing = climbing.filter((f) => f !== front);
        }
      }
    }
  } finally {
    for (const f of fronts) await f.stop().catch((err: Error) => console.error(`stopping ${f.name}: ${err.message}`));
  }
  print(rows, fronts.map((f) => f.name));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
