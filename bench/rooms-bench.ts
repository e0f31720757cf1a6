/**
 * npm run bench:rooms — group calls through keylatch's room mixer (issue 12), the relay in its
 * own process pinned to core 1, this generator on core 0.
 *
 *  - mixing: rooms of 3, 10 and 50 G.711 participants, each sending a tone at 50 pps and getting
 *    the mix of the others back; the total grows until loss passes 0.1 % (or the generator
 *    cannot keep up, which is said).
 *  - forwarding: the same rooms, every participant taking the others' streams unchanged.
 *  - broadcast: 1 speaker, N listeners, each getting the speaker re-sequenced under its own SSRC.
 * In every section a sample of participants (about 120, or 200 listeners) is measured here;
 * the rest are sockets a Python sink holds, sends from and never reads: the relay's cost for
 * them is the same, this generator's would not be.
 *
 * Loss: sequence gaps at the receivers. Jitter: p99 of each packet's lateness against its
 * stream's 20 ms grid (for the mix that is also what the mixer adds beyond its jitter buffer,
 * whose mean depth is shown apart). Latency (forwarded and relayed): send to receive, one way;
 * in a broadcast it includes each listener's place in the fan-out (one speaker packet is N sends
 * in a row), which is why the measured listeners are spread through the room.
 * Relay CPU is the relay process's user+system time. On loopback that includes the receiving
 * side's kernel work for every packet it sends (about a third of it in perf), which a NIC
 * would take off the relay's core: the figures are an upper bound for a real network.
 * `--net veth` (root) puts the relay and the generator in two network namespaces joined by a
 * veth pair, each side's kernel receive work steered to its own core (bench/rooms-net.ts): by
 * veth's NAPI in a kernel thread pinned there, polling every 50 us (`--rx napi`, the default),
 * or by RPS (`--rx rps`, an IPI per packet at these rates); `--rx off` leaves it on the sending
 * core, to see what steering moves. In napi mode the relay's own receive work runs in that
 * thread, not the relay process: "core1 busy%" is then the relay's side's whole cost. The "kernel rx" columns are the packets
 * the kernel's receive path processed on core 0 and core 1 in the window, per second
 * (/proc/net/softnet_stat), and "core1 busy%" all the relay's core did, softirqs that ran
 * while the relay slept included (/proc/stat); NET_RX softirqs, softirq time and busy time
 * per core are printed under each row.
 *
 *   BENCH_MEASURE_MS=4000 BENCH_WARMUP_MS=1500 BENCH_SECTIONS=mix,forward,broadcast
 *   npm run bench:rooms -- [--sections mix,forward,broadcast] [--sizes 3,10,50] [--totals 500,1000]
 *                          [--listeners 2000,5000]     (one section, room size or step at a time)
 *                          [--perf out.data]           (perf record -g of the relay over each measured window, into out.data.SECTION-N)
 *                          [--net loopback|veth] [--rx rps|napi|off]
 *                          [--floor sendto,uring,connect,connect-uring,mmsg1,packet,packet-inline]
 *   --floor: after each broadcast row, the same step through bench/fanout-floor.c in each of
 *   these modes (what the kernel's socket path alone costs a fan-out; the file says what each
 *   mode does), same listeners, generator and measurement, the program pinned where the relay is.
 *   `packet` and `packet-inline` (AF_PACKET, below IP) run with --net veth only: on loopback the kernel drops its
 *   frames as martians (127.0.0.1 arriving without the output route), short of a host-wide
 *   route_localnet this bench will not set.
 *   --net veth under the namespace lock too: flock -x /tmp/keylatch-cpu.lock flock /tmp/keylatch-it.lock npm run bench:rooms -- --net veth
 */
import { fork, spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { buildC } from './build-c';
import { encodeG711, tone } from '../src/codec/g711';
import { currentPlan, kernelRx, kernelRxRate, mustEnterVeth, runAcrossVeth, type KernelRx, type RxSteering } from './rooms-net';
import { cpuSeconds, pinTo } from './targets';

/** The p-th percentile of an ascending array. */
function percentile(sorted: Float64Array, p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : NaN;
}

const measureMs = Number(process.env.BENCH_MEASURE_MS ?? 4000);
const warmupMs = Number(process.env.BENCH_WARMUP_MS ?? 1500);
/** `--name a,b` from the command line, as numbers or words; undefined when absent. */
function option(name: string): string[] | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 && process.argv[at + 1] ? process.argv[at + 1]!.split(',') : undefined;
}
const numbers = (name: string): number[] | undefined => option(name)?.map(Number);
const sections = new Set(option('sections') ?? (process.env.BENCH_SECTIONS ?? 'mix,forward,broadcast').split(','));
const onlySizes = numbers('sizes');
const onlyTotals = numbers('totals');
const onlyListeners = numbers('listeners');
const perfOut = option('perf')?.[0];
const FLOOR_MODES = ['sendto', 'uring', 'connect', 'connect-uring', 'mmsg1', 'packet', 'packet-inline'];
const floorModes = option('floor') ?? [];
const FLOOR_LABEL: Record<string, string> = { sendto: 'fl-sendto', uring: 'fl-uring', connect: 'fl-conn', 'connect-uring': 'fl-connur', mmsg1: 'fl-mmsg1', packet: 'fl-packet', 'packet-inline': 'fl-pkt-inl' };
for (const m of floorModes) if (!FLOOR_MODES.includes(m)) throw new Error(`--floor ${m}: one of ${FLOOR_MODES.join(', ')}`);
const netMode = option('net')?.[0] ?? 'loopback';
if (floorModes.some((m) => m.startsWith('packet')) && netMode !== 'veth') throw new Error('--floor packet needs --net veth: on loopback its frames are dropped as martians');
// napi by default: in this VM RPS's IPI per packet costs the sender more than the receive work it moves (docs/rooms.md).
const rx = (option('rx')?.[0] ?? 'napi') as RxSteering;
if (!['rps', 'napi', 'off'].includes(rx)) throw new Error(`--rx ${rx}: rps, napi or off`);
/** Addresses, and (veth) the relay's namespace: set by the outer process that built them. */
const net = currentPlan();
const LOSS_LIMIT = 0.001;
const PACKET = 172;
const TONE = encodeG711('PCMU', tone(440, 160));

// ---- the relay process ------------------------------------------------------------------

/** What a step measures on the relay's side: a process pinned to core 1. */
interface Measured {
  readonly pid: number;
  cpu(): number;
  /** The mixer's mean jitter buffer depth (NaN where there is none). */
  bufferMs(): Promise<number>;
}

class RelayProcess implements Measured {
  /** Whether the mixer's sends go through io_uring (BENCH_ROOMS_BATCHING=0 turns it off). */
  batched = false;
  private next = 1;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();
  private constructor(readonly child: ChildProcess) {
    child.on('message', (m: Record<string, unknown>) => {
      const id = m.id as number | undefined;
      if (id !== undefined) this.waiting.get(id)?.(m);
      if (id !== undefined) this.waiting.delete(id);
    });
  }

  static async start(): Promise<RelayProcess> {
    const execArgv = ['-r', path.join(__dirname, '..', 'test', 'helpers', 'ts-register.js')];
    const env = { ...process.env, KEYLATCH_LOG__LEVEL: 'warn', BENCH_ROOMS_RELAY_ADDRESS: net.relayAddress, BENCH_ROOMS_PEER_ADDRESS: net.peerAddress };
    // In veth mode the relay starts in its own namespace: `ip netns exec` execs node in place,
    // so the pid (pinned, its CPU read from /proc) and the IPC channel stay node's.
    const child = net.relayNs
      ? fork(path.join(__dirname, 'rooms-relay.ts'), [], { execPath: 'ip', execArgv: ['netns', 'exec', net.relayNs, process.execPath, ...execArgv], env })
      : fork(path.join(__dirname, 'rooms-relay.ts'), [], { execArgv, env });
    const ready = await new Promise<Record<string, unknown>>((resolve) => child.once('message', resolve));
    pinTo(1, child.pid!);
    const relay = new RelayProcess(child);
    relay.batched = ready.batched === true;
    return relay;
  }

  call(msg: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, (m) => (m.error ? reject(new Error(String(m.error))) : resolve(m)));
      this.child.send({ ...msg, id });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  cpu(): number {
    return cpuSeconds(this.child.pid!);
  }

  async bufferMs(): Promise<number> {
    return Number((await this.call({ op: 'stats' })).bufferMs);
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}

/** What bench/fanout-floor.c measured itself over the window: each speaker packet's whole fan-out, receive to last send returned. */
interface FloorStats {
  bursts: number;
  sends: number;
  errors: number;
  partialSubmits: number;
  burstMeanMs: number;
  burstP50Ms: number;
  burstP99Ms: number;
  burstMaxMs: number;
}

/** bench/fanout-floor.c in one mode, where the relay would run (its namespace, core 1). */
class FloorProcess implements Measured {
  private readonly lines: AsyncIterator<string>;
  private constructor(private readonly child: ChildProcessWithoutNullStreams, readonly speakerPort: number, lines: AsyncIterator<string>) {
    this.lines = lines;
  }

  static async start(mode: string): Promise<FloorProcess> {
    const bin = buildC('fanout-floor', ['-l:liburing.a']);
    const args = [bin, '--addr', net.relayAddress, '--peer', net.peerAddress, '--mode', mode];
    // `ip netns exec` execs the program in place: the pid pinned and read is the floor's own.
    const child = net.relayNs ? spawn('ip', ['netns', 'exec', net.relayNs, ...args]) : spawn(args[0]!, args.slice(1));
    child.stderr.pipe(process.stderr);
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const first = await lines.next();
    const m = first.done ? null : /^speaker (\d+)$/.exec(first.value as string);
    if (!m) throw new Error(`fanout-floor --mode ${mode} did not start`);
    pinTo(1, child.pid!);
    return new FloorProcess(child, Number(m[1]), lines);
  }

  private async line(): Promise<string> {
    const next = await this.lines.next();
    if (next.done) throw new Error('fanout-floor ended');
    return next.value as string;
  }

  async listen(ports: number[]): Promise<void> {
    this.child.stdin.write(`listeners ${ports.join(' ')}\n`);
    if ((await this.line()) !== 'ready') throw new Error('fanout-floor did not bind its listeners');
  }

  mark(): void {
    this.child.stdin.write('mark\n');
  }

  async stats(): Promise<FloorStats> {
    this.child.stdin.write('stats\n');
    return JSON.parse(await this.line()) as FloorStats;
  }

  get pid(): number {
    return this.child.pid!;
  }

  cpu(): number {
    return cpuSeconds(this.child.pid!);
  }

  async bufferMs(): Promise<number> {
    return NaN;
  }

  stop(): void {
    this.child.stdin.end();
  }
}

// ---- the sink: participants whose sockets are never read ---------------------------------

// Most participants are simulated here: their sockets send (a tone, paced by the clock, or only
// the packets that latch them) and are never read, so what the relay sends them costs the
// relay as usual but costs this generator nothing. A sample is measured by Member below.
const SINK = `
import socket, sys, json, struct, threading, time
socks = {}
talking = []
tone = bytes.fromhex(sys.argv[1])
local, relay_ip = sys.argv[2], sys.argv[3]
def sender():
    start = time.monotonic()
    sent = {}
    while True:
        now = time.monotonic() - start
        for i, (s, relay) in enumerate(list(talking)):
            due = int((now - (i % 4) * 0.005) / 0.02) + 1
            n = sent.get(i, 0)
            while n < due:
                s.sendto(struct.pack('>BBHII', 0x80, 0, n & 0xffff, (n * 160) & 0xffffffff, 0x5000 + i) + tone, relay)
                n += 1
            sent[i] = n
        time.sleep(0.004)
threading.Thread(target=sender, daemon=True).start()
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == 'open':
        fresh = []
        for _ in range(int(cmd[1])):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.bind((local, 0))
            socks[s.getsockname()[1]] = s
            fresh.append(s.getsockname()[1])
        print(json.dumps(fresh), flush=True)
    elif cmd[0] == 'latch':
        port, relay = int(cmd[1]), int(cmd[2])
        for seq in range(1, 6):
            socks[port].sendto(struct.pack('>BBHII', 0x80, 0, seq, seq * 160, port) + bytes(160), (relay_ip, relay))
    elif cmd[0] == 'talk':
        talking.append((socks[int(cmd[1])], (relay_ip, int(cmd[2]))))
    elif cmd[0] == 'close':
        break
`;

class Sink {
  private readonly child = spawn('python3', ['-c', SINK, TONE.toString('hex'), net.peerAddress, net.relayAddress], { stdio: ['pipe', 'pipe', 'inherit'] });
  private buf = '';

  async open(n: number): Promise<number[]> {
    pinTo(0, this.child.pid!);
    this.child.stdin!.write(`open ${n}\n`);
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        return JSON.parse(line) as number[];
      }
      const [chunk] = (await once(this.child.stdout!, 'data')) as [Buffer];
      this.buf += chunk.toString();
    }
  }

  /** A few packets, enough for a guarded leg to latch; then nothing. */
  latch(port: number, relayPort: number): void {
    this.child.stdin!.write(`latch ${port} ${relayPort}\n`);
  }

  /** 50 pps of tone from now on. */
  talk(port: number, relayPort: number): void {
    this.child.stdin!.write(`talk ${port} ${relayPort}\n`);
  }

  stop(): void {
    this.child.stdin!.end('close\n');
  }
}

// ---- generator endpoints ----------------------------------------------------------------

class Member {
  relayPort = 0;
  private seq = Math.floor(Math.random() * 0xffff);
  private ts = Math.floor(Math.random() * 0xffffffff);
  private readonly pkt = Buffer.alloc(PACKET);
  // Receive side, per source SSRC (forwarding brings several).
  private readonly streams = new Map<number, { first: number; last: number; count: number; t0: number; lateness: number[] }>();
  latencies: number[] = [];
  measuring = false;
  /** Only forwarded and relayed packets carry our send time; a mixed one is new audio. */
  timesLatency = false;

  private constructor(readonly socket: dgram.Socket, readonly port: number, ssrc: number) {
    this.pkt[0] = 0x80;
    this.pkt[1] = 0;
    this.pkt.writeUInt32BE(ssrc, 8);
    TONE.copy(this.pkt, 12);
    socket.on('message', (b) => this.receive(b));
  }

  static async open(ssrc: number): Promise<Member> {
    const s = dgram.createSocket('udp4');
    s.bind(0, net.peerAddress);
    await once(s, 'listening');
    return new Member(s, s.address().port, ssrc);
  }

  send(): void {
    this.pkt.writeUInt16BE(this.seq, 2);
    this.pkt.writeUInt32BE(this.ts >>> 0, 4);
    this.pkt.writeDoubleBE(performance.timeOrigin + performance.now(), 150);
    this.pkt[160] = this.measuring ? 1 : 0;
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + 160) >>> 0;
    this.socket.send(this.pkt, this.relayPort, net.relayAddress);
  }

  private receive(b: Buffer): void {
    if (!this.measuring || b.length < 12) return;
    const now = performance.timeOrigin + performance.now();
    const ssrc = b.readUInt32BE(8);
    const seq = b.readUInt16BE(2);
    let st = this.streams.get(ssrc);
    if (!st) this.streams.set(ssrc, (st = { first: seq, last: seq, count: 0, t0: now, lateness: [] }));
    // Extended sequence relative to the first packet of the window.
    let ext = seq;
    while (ext < st.last - 30000) ext += 65536;
    st.last = Math.max(st.last, ext);
    st.count++;
    st.lateness.push(now - (st.t0 + (ext - st.first) * 20));
    // Forwarded and relayed packets keep the sender's payload, send time included.
    if (this.timesLatency && b.length === PACKET && b[160] === 1) this.latencies.push(now - b.readDoubleBE(150));
  }

  /** Received, expected (by sequence span) and lateness against the 20 ms grid, per stream. */
  tally(): { received: number; expected: number; lateness: number[] } {
    let received = 0;
    let expected = 0;
    const lateness: number[] = [];
    for (const st of this.streams.values()) {
      received += st.count;
      expected += st.last - st.first + 1;
      const min = Math.min(...st.lateness);
      for (const l of st.lateness) lateness.push(l - min);
    }
    return { received, expected, lateness };
  }

  close(): void {
    this.socket.close();
  }
}

interface Row {
  section: string;
  roomSize: number;
  participants: number;
  ppsOut: number;
  loss: number;
  cpuPct: number;
  cpuPerParticipant: number;
  jitterP99: number;
  latencyP50: number;
  latencyP99: number;
  bufferMs: number;
  generatorShort: boolean;
  /** Broadcast: relay CPU per listener send, in us (CPU time / (50 x listeners) a second). */
  perSendUs?: number;
  /** Floor rows: the fan-out as bench/fanout-floor.c timed it. */
  floor?: FloorStats;
  /** Per core, per second over the measured window: packets through the kernel's receive path, NET_RX softirqs. */
  kernel: KernelRx;
}

/** One step: `senders` send at 50 pps (in four 5 ms slots), every Member measured. */
/** perStream: packets a second each receiver should get (50 for the mix, 50 x (size-1) forwarded). */
async function runStep(relay: Measured, senders: Member[], receivers: Member[], label: Pick<Row, 'section' | 'roomSize' | 'participants'>, perParticipant: number, perStream: number): Promise<Row> {
  // Paced by the clock, as a sound card is: each sender owes one packet per 20 ms from its
  // slot's start, whatever the 5 ms timer's own lateness.
  let sent = 0;
  let measuringSends = false;
  const start = performance.now();
  const owed = new Float64Array(senders.length);
  // This process's own lateness: past a few ms, its receive times say more about it than the relay.
  const lag: number[] = [];
  let expectedAt = 5;
  const timer = setInterval(() => {
    const now = performance.now() - start;
    if (measuringSends) lag.push(now - expectedAt);
    expectedAt = now + 5;
    for (let i = 0; i < senders.length; i++) {
      const due = Math.floor((now - (i % 4) * 5) / 20) + 1;
      while (owed[i]! < due) {
        senders[i]!.send();
        owed[i]!++;
        if (measuringSends) sent++;
      }
    }
  }, 5);
  await new Promise((r) => setTimeout(r, warmupMs));
  for (const m of receivers) m.measuring = true;
  for (const m of senders) m.measuring = true;
  measuringSends = true;
  if (relay instanceof FloorProcess) relay.mark();
  const cpu0 = relay.cpu();
  const rx0 = kernelRx();
  const t0 = performance.now();
  // Where the relay's time goes (perf's own cost lands on core 0, the generator's).
  const perf = perfOut ? spawn('perf', ['record', '-q', '-F', '1999', '-g', '-p', String(relay.pid), '-o', `${perfOut}.${label.section}-${label.participants}`, '--', 'sleep', String(measureMs / 1000)], { stdio: 'ignore' }) : null;
  if (perf) pinTo(0, perf.pid!);
  await new Promise((r) => setTimeout(r, measureMs));
  if (perf && perf.exitCode === null) await once(perf, 'exit');
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = relay.cpu() - cpu0;
  const kernel = kernelRxRate(rx0, kernelRx(), elapsed);
  measuringSends = false;
  for (const m of senders) m.measuring = false;
  await new Promise((r) => setTimeout(r, 200));
  for (const m of receivers) m.measuring = false;
  clearInterval(timer);
  const bufferMs = await relay.bufferMs();
  const floor = relay instanceof FloorProcess ? await relay.stats() : undefined;
  let received = 0;
  let expected = 0;
  const lateness: number[] = [];
  const latencies: number[] = [];
  for (const m of receivers) {
    const t = m.tally();
    received += t.received;
    expected += t.expected;
    lateness.push(...t.lateness);
    latencies.push(...m.latencies);
  }
  const sorted = (a: number[]) => Float64Array.from(a).sort();
  const cpuPct = (cpu / elapsed) * 100;
  // The mix and relayed streams are 50 pps each whether or not the seq numbers show a gap (a
  // mixer that misses ticks sends fewer packets, not gaps): loss is against that rate.
  const nominal = perStream * receivers.length * elapsed;
  return {
    ...label,
    ppsOut: Math.round(received / elapsed),
    loss: Math.max(0, 1 - received / Math.max(expected, nominal)),
    cpuPct,
    cpuPerParticipant: cpuPct / perParticipant,
    jitterP99: percentile(sorted(lateness), 99),
    latencyP50: percentile(sorted(latencies), 50),
    latencyP99: percentile(sorted(latencies), 99),
    bufferMs,
    floor,
    // Sends lag when this process cannot keep its 5 ms timer: then it, not the relay, is measured.
    generatorShort: sent < senders.length * 50 * elapsed * 0.97 || percentile(sorted(lag), 99) > 4,
    kernel,
  };
}

const fmt = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '-');
const HEADER = ['section', 'room', 'particip.', 'sampled pkts/s', 'loss%', 'relay cpu%', 'cpu%/part.', 'jitter p99 ms', 'lat p50 ms', 'lat p99 ms', 'buffer ms', 'kernel rx kpkt/s core0/core1', 'core1 busy%'];
const perCore = (a: number[], scale: number) => a.map((v) => fmt(v / scale)).join('/');
function print(r: Row): void {
  console.log([
    r.section.padEnd(10), String(r.roomSize).padStart(4), String(r.participants).padStart(9), String(r.ppsOut).padStart(10), fmt(r.loss * 100, 3).padStart(7),
    fmt(r.cpuPct).padStart(10), fmt(r.cpuPerParticipant, 3).padStart(10), fmt(r.jitterP99, 2).padStart(13), fmt(r.latencyP50, 2).padStart(10), fmt(r.latencyP99, 2).padStart(10),
    fmt(r.bufferMs).padStart(9), perCore(r.kernel.processed, 1000).padStart(12), fmt(r.kernel.busy[1] ?? NaN).padStart(6), r.generatorShort ? '  (generator could not keep up)' : '',
  ].join(' '));
  console.log(`    per core 0/1: NET_RX softirqs/s ${perCore(r.kernel.netRx, 1)}, softirq time % ${perCore(r.kernel.softirq, 1)}, busy % ${perCore(r.kernel.busy, 1)}`);
  if (r.perSendUs !== undefined) {
    const f = r.floor;
    const own = f ? `; fan-out as timed inside: mean ${fmt(f.burstMeanMs, 2)} ms, p50 ${fmt(f.burstP50Ms, 2)}, p99 ${fmt(f.burstP99Ms, 2)}, max ${fmt(f.burstMaxMs, 2)} (${fmt((f.burstMeanMs * 1000) / r.participants, 2)} us a send, wall); ${f.sends} sends, ${f.errors} failed` : '';
    // Where receive work runs in softirqs on core 1 (loopback, fl-pkt-inl), it is in the sender's CPU: without it, the send side alone.
    const lessRx = ((r.cpuPct - (r.kernel.softirq[1] ?? 0)) / 100 / (50 * r.participants)) * 1e6;
    console.log(`    per send: ${fmt(r.perSendUs, 2)} us of CPU (${fmt(lessRx, 2)} less core 1's softirq time)${own}`);
  }
}

/** Mixed participants measured per step: the rest live in the sink. */
const SAMPLE = 120;

async function roomsStep(relay: RelayProcess, section: 'mix' | 'forward', size: number, total: number): Promise<Row> {
  const members: Member[] = [];
  const sink = new Sink();
  try {
    // The first participants are measured (filling whole rooms in order, so forwarded streams
    // between them carry send times); everyone talks. A forwarding participant receives size-1
    // streams: fewer are measured, so this process keeps up.
    const sample = section === 'mix' ? SAMPLE : Math.max(2, Math.floor(12000 / (50 * (size - 1))));
    const measured = (i: number): boolean => i < sample;
    const sinkPorts = total > sample ? await sink.open(total - sample) : [];
    for (let i = 0; i < total; i++) {
      const room = `${section}-${size}-${Math.floor(i / size)}`;
      if (measured(i)) {
        const m = await Member.open(1000 + i);
        m.relayPort = Number((await relay.call({ op: 'join', room, who: `sip:p${i}@bench`, port: m.port, forward: section === 'forward' })).relayPort);
        m.timesLatency = section === 'forward';
        // Send at once, as a phone does: a guarded leg learns only for a while after signalling.
        for (let k = 0; k < 5; k++) m.send();
        members.push(m);
      } else {
        const port = sinkPorts.pop()!;
        sink.talk(port, Number((await relay.call({ op: 'join', room, who: `sip:p${i}@bench`, port, forward: section === 'forward' })).relayPort));
      }
    }
    return await runStep(relay, members, members, { section, roomSize: size, participants: total }, total, section === 'mix' ? 50 : 50 * (size - 1));
  } finally {
    members.forEach((m) => m.close());
    sink.stop();
    await relay.call({ op: 'reset' });
  }
}

/** The broadcast step through keylatch (relay), or through bench/fanout-floor.c in one mode (floorMode). */
async function broadcastStep(relay: RelayProcess, listeners: number, floorMode?: string): Promise<Row> {
  const speaker = await Member.open(7);
  const measured: Member[] = [];
  const sink = new Sink();
  const floor = floorMode ? await FloorProcess.start(floorMode) : null;
  try {
    if (floor) return await floorBroadcast(floor, floorMode!, speaker, measured, sink, listeners);
    speaker.relayPort = Number((await relay.call({ op: 'join', room: 'broadcast', who: 'sip:speaker@bench', port: speaker.port, forward: false })).relayPort);
    for (let k = 0; k < 5; k++) speaker.send();
    // The measured listeners are spread evenly through the room (every listeners/200-th joins
    // from here, the rest from the sink), so their latencies sample every position of the
    // fan-out burst rather than only its first or last 200.
    const sampled = Math.min(listeners, 200);
    const ports = listeners > sampled ? await sink.open(listeners - sampled) : [];
    for (let i = 0; i < listeners; i++) {
      if (measured.length < sampled && i >= (measured.length * listeners) / sampled) {
        const m = await Member.open(2000 + measured.length);
        m.relayPort = Number((await relay.call({ op: 'join', room: 'broadcast', who: `sip:l${measured.length}@bench`, port: m.port, forward: false })).relayPort);
        for (let k = 0; k < 5; k++) m.send();
        m.timesLatency = true;
        measured.push(m);
      } else {
        const port = ports.pop()!;
        const r = await relay.call({ op: 'join', room: 'broadcast', who: `sip:s${port}@bench`, port, forward: false });
        sink.latch(port, Number(r.relayPort));
      }
    }
    for (let i = 0; i < 50 && Number((await relay.call({ op: 'stats' })).latched) < listeners; i++) await new Promise((r) => setTimeout(r, 100));
    return withPerSend(await runStep(relay, [speaker], measured, { section: 'broadcast', roomSize: listeners + 1, participants: listeners }, listeners, 50));
  } finally {
    speaker.close();
    measured.forEach((m) => m.close());
    sink.stop();
    floor?.stop();
    if (!floor) await relay.call({ op: 'reset' });
  }
}

const withPerSend = (r: Row): Row => ({ ...r, perSendUs: (r.cpuPct / 100 / (50 * r.participants)) * 1e6 });

/** The same room through the floor: the same sampled listeners (spread through the fan-out order), the rest in the sink. */
async function floorBroadcast(floor: FloorProcess, mode: string, speaker: Member, measured: Member[], sink: Sink, listeners: number): Promise<Row> {
  speaker.relayPort = floor.speakerPort;
  const sampled = Math.min(listeners, 200);
  const sinkPorts = listeners > sampled ? await sink.open(listeners - sampled) : [];
  const order: number[] = [];
  for (let i = 0; i < listeners; i++) {
    if (measured.length < sampled && i >= (measured.length * listeners) / sampled) {
      const m = await Member.open(2000 + measured.length);
      m.timesLatency = true;
      measured.push(m);
      order.push(m.port);
    } else {
      order.push(sinkPorts.pop()!);
    }
  }
  await floor.listen(order);
  return withPerSend(await runStep(floor, [speaker], measured, { section: FLOOR_LABEL[mode]!, roomSize: listeners + 1, participants: listeners }, listeners, 50));
}

const RX_LINE: Record<RxSteering, string> = {
  rps: 'RPS: receive work of what arrives on the generator\'s side on core 0, on the relay\'s side on core 1',
  napi: 'threaded veth NAPI (GRO, polled every 50 us): receive work of what arrives on the generator\'s side on core 0, on the relay\'s side on core 1',
  off: 'no steering: receive work on the sending core',
};
const NET_LINE = {
  loopback: 'net: loopback (127.0.0.1): the relay\'s CPU includes its receivers\' kernel receive work (an upper bound)',
  veth: `net: veth (relay ${net.relayAddress} in its own namespace, generator ${net.peerAddress}), ${RX_LINE[net.rx ?? 'off']}`,
};

async function main(): Promise<void> {
  if (mustEnterVeth(netMode)) process.exit(await runAcrossVeth(rx));
  pinTo(0, process.pid);
  const relay = await RelayProcess.start();
  console.log(`keylatch rooms benchmark: G.711 (172 B at 50 pps), warm-up ${warmupMs} ms, measured ${measureMs} ms per step; relay pinned to core 1, generator to core 0; mixer sends ${relay.batched ? 'batched through io_uring' : 'one sendto each'}`);
  console.log(NET_LINE[net.mode]);
  console.log('cpu%/part.: relay CPU per participant (broadcast: per listener); jitter: lateness against the 20 ms grid; lat: one way, forwarded/relayed packets only');
  if (floorModes.length) {
    console.log('fl-*: bench/fanout-floor.c, the speaker fanned out and nothing else: fl-sendto one sendto each, fl-uring all N sends (with addresses) in one io_uring_enter,');
    console.log('      fl-conn connect()ed listener sockets and one send each, fl-connur connected sockets in one io_uring_enter, fl-mmsg1 one socket for all (sendmmsg; not a relay: wrong source ports),');
    console.log('      fl-packet whole frames from each listener\'s port through an AF_PACKET TX ring, one send for all (below UDP/IP: no routing, neighbour or netfilter),');
    console.log('      fl-pkt-inl the same with veth running the listeners\' receive work on the sender\'s core (its softirq time is then in the cpu%)');
  }
  console.log(HEADER.join(' | '));
  try {
    for (const section of ['mix', 'forward'] as const) {
      if (!sections.has(section)) continue;
      for (const size of onlySizes ?? [3, 10, 50]) {
        // Forwarding sends each participant size-1 streams: its totals are that much smaller.
        const totals = onlyTotals ?? (section === 'mix' ? [150, 500, 1000, 1500, 2000, 3000] : size === 3 ? [90, 300, 600, 1200] : size === 10 ? [40, 100, 200, 400] : [50, 100, 200]);
        for (const t of totals) {
          const total = Math.max(size, Math.round(t / size) * size);
          const row = await roomsStep(relay, section, size, total);
          print(row);
          if (row.loss > LOSS_LIMIT) {
            console.log(`  ${section}, rooms of ${size}: loss passed 0.1 % at ${total} participants${row.generatorShort ? ' (with the generator short of its rate: a bound, not the relay\'s limit)' : ''}`);
            break;
          }
          if (row.generatorShort) {
            console.log(`  ${section}, rooms of ${size}: the generator is the limit from ${total} participants; the relay's own limit lies above`);
            break;
          }
        }
      }
    }
    if (sections.has('broadcast')) {
      for (const n of onlyListeners ?? [500, 1000, 2000, 5000, 8000]) {
        const row = await broadcastStep(relay, n);
        print(row);
        for (const mode of floorModes) print(await broadcastStep(relay, n, mode));
        if (row.loss > LOSS_LIMIT) {
          console.log(`  broadcast: loss passed 0.1 % at ${n} listeners`);
          // Steps named on the command line all run: their rows are wanted side by side.
          if (!onlyListeners) break;
        }
      }
    }
  } finally {
    relay.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
