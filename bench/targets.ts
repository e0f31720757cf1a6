/** The relays a benchmark step can run against, each in its own process pinned to one core. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Client } from 'rtpengine-client';
import { buildC } from './build-c';

export interface Target {
  name: string;
  pid: number | null;
  /** Every process whose CPU and memory count: the relay and, for keylatch's workers, its children. */
  pids(): number[];
  /** Offer/answer over ng; returns the relay port each side must send to. */
  anchor(callId: string, a: number, b: number): Promise<{ toA: number; toB: number }>;
  remove(callId: string): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Media runs on a loopback address of its own: the generator and the relays bind thousands of
 * fixed ports there, which must not collide with test suites running on 127.0.0.1 meanwhile.
 */
export const MEDIA_ADDRESS = '127.0.0.3';
/** The generator's ports start here, below both relays' ranges. */
export const GENERATOR_PORT_BASE = 2000;

/**
 * Where the relays run and how they are reached. Loopback (the default): media on
 * MEDIA_ADDRESS for both sides, ng on 127.0.0.1. bench:relay --net veth (bench/netns-pair.ts)
 * runs the bench in the generator's namespace and every relay in the relay's: media on the
 * relay's veth address, the calls' SDP and ng's source on the generator's, ng over the veth.
 */
export interface RelayNet {
  relayAddress: string;
  peerAddress: string;
  /** Where the relays listen for ng, and where this process's ng client binds. */
  ngHost: string;
  ngClientAddress: string;
  /** The namespace every relay is started in (`ip netns exec`, which execs in place: the pid stays the relay's). */
  relayNs?: string;
}
let net: RelayNet = { relayAddress: MEDIA_ADDRESS, peerAddress: MEDIA_ADDRESS, ngHost: '127.0.0.1', ngClientAddress: '127.0.0.1' };
/** bench:relay sets the veth plan's addresses before starting any target. */
export function useRelayNet(n: RelayNet): void {
  net = n;
}
/** A relay's command line, run in the relay's namespace when there is one. */
const inRelayNs = (argv: string[]): string[] => (net.relayNs ? ['ip', 'netns', 'exec', net.relayNs, ...argv] : argv);

const sdp = (port: number) =>
  `v=0\r\no=- 1 1 IN IP4 ${net.peerAddress}\r\ns=-\r\nc=IN IP4 ${net.peerAddress}\r\nt=0 0\r\nm=audio ${port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n`;
const mediaPort = (text: string) => Number(/^m=audio (\d+)/m.exec(text)![1]);

export function pinTo(core: number, pid: number): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
  } catch {
    /* no taskset: figures stay valid ratios, only noisier */
  }
}

let renice: boolean | null = null;

/**
 * A command line run at nice -10 where that is allowed. The machine is shared with other work;
 * at equal priority a relay pinned to one core gets only its fair share of it whenever others
 * run there, and the bench would measure the neighbours. Every target and the generator get
 * the same boost, so the comparison stays fair; CPU per packet (CPU time) does not change.
 */
export function boosted(argv: string[]): string[] {
  if (renice === null) {
    try {
      renice = execFileSync('nice', ['-n', '-10', 'nice'], { encoding: 'utf8' }).trim() === '-10';
    } catch {
      renice = false;
    }
  }
  return renice ? ['nice', '-n', '-10', ...argv] : argv;
}

/** A process and its children (keylatch's relay workers), from /proc. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

async function ngTarget(name: string, child: ChildProcess, ngPort: number, core: number | null = 1): Promise<Target> {
  const client = new Client({ localPort: 0, localAddress: net.ngClientAddress, timeout: 5000 });
  const ng = { port: ngPort, host: net.ngHost };
  for (let i = 0; ; i++) {
    try {
      await client.ping(ng);
      break;
    } catch (err) {
      if (i > 50) throw new Error(`${name} did not answer ng ping: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (core !== null) pinTo(core, child.pid!);
  return {
    name,
    pid: child.pid!,
    pids: () => processTree(child.pid!),
    async anchor(callId, a, b) {
      const flags = { 'received-from': ['IP4', net.peerAddress] };
      const offer = await client.offer(ng, { 'call-id': callId, 'from-tag': 'a', sdp: sdp(a), ...flags });
      if (offer.result !== 'ok') throw new Error(`${name} offer: ${offer['error-reason']}`);
      const answer = await client.answer(ng, { 'call-id': callId, 'from-tag': 'a', 'to-tag': 'b', sdp: sdp(b), ...flags });
      if (answer.result !== 'ok') throw new Error(`${name} answer: ${answer['error-reason']}`);
      return { toA: mediaPort(answer.sdp), toB: mediaPort(offer.sdp) };
    },
    async remove(callId) {
      await client.delete(ng, { 'call-id': callId, 'from-tag': 'a' });
    },
    async stop() {
      client.close();
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/**
 * keylatch relay with `workers` worker processes. One worker runs the relay in the ng process
 * itself, pinned to core 1 like rtpengine; several are left to the scheduler on every core,
 * sharing the machine with the generator (one per core is the product's default).
 */
export async function keylatch(workers = 1, sendBatching: 'gso' | 'sendmmsg' | 'off' = 'gso', pollIntervalUs: number | null = null, io: 'uring' | 'epoll' | null = null): Promise<Target> {
  // The built CLI, as the package and the image ship it (bench:relay builds it first), launched
  // with the flags of the bin's shebang (src/cli.ts).
  const cli = path.join(__dirname, '..', 'dist', 'src', 'cli.js');
  const [cmd, ...args] = inRelayNs(boosted([process.execPath, '--max-semi-space-size=1', cli, 'relay', '--ng', `${net.ngHost}:22290`, '--interface', net.relayAddress, '--ports', '16000-35999', '--workers', String(workers)]));
  const child = spawn(cmd!, args, {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, KEYLATCH_MEDIA__ALLOW_LOOPBACK_PEERS: 'true', KEYLATCH_LOG__LEVEL: 'warn', KEYLATCH_MEDIA__SEND_BATCHING: sendBatching,
      // null: the product's default (config/default.yaml)
      ...(pollIntervalUs === null ? {} : { KEYLATCH_MEDIA__POLL_INTERVAL_US: String(pollIntervalUs) }),
      ...(io === null ? {} : { KEYLATCH_MEDIA__IO: io }),
    },
  });
  const name = `keylatch${workers === 1 ? '' : ` x${workers}`}${sendBatching === 'gso' ? '' : ` ${sendBatching}`}${pollIntervalUs === null ? '' : ` poll${pollIntervalUs}`}${io === null ? '' : ` ${io}`}`;
  return ngTarget(name, child, 22290, workers === 1 ? 1 : null);
}

/**
 * rtpengine in userspace (no kernel table). The defaults are bench:relay's (media on
 * the relay address, pinned to core 1, nice -10); bench:sip runs it as Kamailio's media proxy on
 * another interface and ng port, unpinned, at normal priority like the SIP processes.
 */
export async function rtpengine(opts: { iface?: string; ngPort?: number; ports?: [number, number]; core?: number | null; boost?: boolean; extraArgs?: string[] } = {}): Promise<Target | null> {
  try {
    execFileSync('sh', ['-c', 'command -v rtpengine'], { stdio: 'ignore' });
  } catch {
    return null;
  }
  const ngPort = opts.ngPort ?? 22291;
  const [min, max] = opts.ports ?? [40000, 59999];
  const argv = ['rtpengine',
    '--config-file=none', '--foreground', '--log-stderr', '--log-level=3', `--interface=${opts.iface ?? net.relayAddress}`,
    `--listen-ng=${net.ngHost}:${ngPort}`, '--table=-1', `--port-min=${min}`, `--port-max=${max}`, ...(opts.extraArgs ?? []),
  ];
  const [cmd, ...args] = inRelayNs(opts.boost === false ? argv : boosted(argv));
  const child = spawn(cmd!, args, { stdio: ['ignore', 'ignore', 'ignore'] });
  return ngTarget('rtpengine', child, ngPort, opts.core === undefined ? 1 : opts.core);
}

/** bench/floor-relay.c's ports: between keylatch's (16000-35999) and rtpengine's (40000-59999). */
const FLOOR_PORT_BASE = 36000;
export const FLOOR_MAX_CALLS = 2000;

/**
 * bench/floor-relay.c, pinned to core 1 like rtpengine and keylatch: a relay that checks
 * nothing and only pays the kernel's socket path (epoll, recvmmsg, one sendto per packet), the
 * floor under any relay built on sockets. Call c's sides send to FLOOR_PORT_BASE + 2c and + 2c + 1.
 */
export async function floor(calls: number): Promise<Target | null> {
  if (calls > FLOOR_MAX_CALLS) return null;
  const bin = buildC('floor-relay');
  const [cmd, ...args] = inRelayNs(boosted([bin, '--addr', net.relayAddress, '--base', String(FLOOR_PORT_BASE), '--calls', String(calls)]));
  const child = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done || first.value !== 'ready') throw new Error('floor-relay did not start');
  pinTo(1, child.pid!);
  return {
    name: 'floor',
    pid: child.pid!,
    pids: () => [child.pid!],
    anchor: async (id) => {
      const c = Number(id.split('-').pop());
      return { toA: FLOOR_PORT_BASE + 2 * c, toB: FLOOR_PORT_BASE + 2 * c + 1 };
    },
    remove: async () => undefined,
    async stop() {
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/**
 * No relay at all: each side sends straight to the other, for the latency baseline (port 0:
 * rtpgen sends to the partner on its own address, which with --net veth stays in its namespace).
 */
export function direct(): Target {
  return {
    name: 'no relay',
    pid: null,
    pids: () => [],
    anchor: async () => ({ toA: 0, toB: 0 }),
    remove: async () => undefined,
    stop: async () => undefined,
  };
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}
