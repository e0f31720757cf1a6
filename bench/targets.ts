/** The relays a benchmark step can run against, each in its own process pinned to one core. */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Client } from 'rtpengine-client';

export interface Target {
  name: string;
  pid: number | null;
  /** Offer/answer over ng; returns the relay port each side must send to. */
  anchor(callId: string, a: number, b: number): Promise<{ toA: number; toB: number }>;
  remove(callId: string): Promise<void>;
  stop(): Promise<void>;
}

const NG_HOST = '127.0.0.1';
const sdp = (port: number) =>
  `v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n`;
const mediaPort = (text: string) => Number(/^m=audio (\d+)/m.exec(text)![1]);

export function pinTo(core: number, pid: number): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(core), String(pid)], { stdio: 'ignore' });
  } catch {
    /* no taskset: figures stay valid ratios, only noisier */
  }
}

async function ngTarget(name: string, child: ChildProcess, ngPort: number): Promise<Target> {
  const client = new Client({ localPort: 0, localAddress: NG_HOST, timeout: 5000 });
  const ng = { port: ngPort, host: NG_HOST };
  for (let i = 0; ; i++) {
    try {
      await client.ping(ng);
      break;
    } catch (err) {
      if (i > 50) throw new Error(`${name} did not answer ng ping: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  pinTo(1, child.pid!);
  return {
    name,
    pid: child.pid!,
    async anchor(callId, a, b) {
      const flags = { 'received-from': ['IP4', '127.0.0.1'] };
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

export async function keylatch(): Promise<Target> {
  // The built CLI, as the package and the image ship it (bench:relay builds it first), launched
  // with the flags of the bin's shebang (src/cli.ts).
  const cli = path.join(__dirname, '..', 'dist', 'src', 'cli.js');
  const child = spawn(process.execPath, ['--max-semi-space-size=1', cli, 'relay', '--ng', `${NG_HOST}:22290`, '--interface', '127.0.0.1', '--ports', '30000-39999'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, KEYLATCH_MEDIA__ALLOW_LOOPBACK_PEERS: 'true', KEYLATCH_LOG__LEVEL: 'warn' },
  });
  return ngTarget('keylatch', child, 22290);
}

export async function rtpengine(): Promise<Target | null> {
  try {
    execFileSync('sh', ['-c', 'command -v rtpengine'], { stdio: 'ignore' });
  } catch {
    return null;
  }
  const child = spawn('rtpengine', [
    '--config-file=none', '--foreground', '--log-stderr', '--log-level=3', '--interface=127.0.0.1',
    '--listen-ng=127.0.0.1:22291', '--table=-1', '--port-min=40000', '--port-max=49999',
  ], { stdio: ['ignore', 'ignore', 'ignore'] });
  return ngTarget('rtpengine', child, 22291);
}

/** No relay at all: each side sends straight to the other, for the latency baseline. */
export function direct(): Target {
  return {
    name: 'no relay',
    pid: null,
    anchor: async (_id, a, b) => ({ toA: b, toB: a }),
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
