/**
 * Relay nodes for the pool tests, each its own process in a namespace of its own on the public
 * net: `keylatch relay` (the CLI, run from source) or rtpengine from Debian. And a watch on the
 * RTP a phone receives (tshark in its namespace), to measure how long audio stopped.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { decodeG711 } from '../../src/codec/g711';
import { blockToneShare } from '../../src/codec/goertzel';
import { NgClient } from '../../src/relay-pool/ng-client';
import { Topology } from './netns';
import { sleep, waitFor } from './peers';
import { hasCommand } from './tools';

export const rtpengineUnavailable = (): string | null => (hasCommand('rtpengine') ? null : 'rtpengine not installed (apt-get install rtpengine-daemon)');
export const tsharkUnavailable = (): string | null => (hasCommand('tshark') ? null : 'tshark not installed (apt-get install tshark)');

export interface RunningNode {
  url: string;
  ip: string;
  child: ChildProcess;
  log(): string;
  /** SIGKILL, the whole process group: a node dying without a word. */
  kill(): void;
}

async function untilPong(url: string, ip: string, port: number, log: () => string): Promise<void> {
  const client = new NgClient({ host: ip, port, timeoutMs: 300 });
  try {
    for (let i = 0; ; i++) {
      try {
        if ((await client.send('ping')).result === 'pong') return;
      } catch {
        if (i > 60) throw new Error(`${url} did not answer ng ping\n${log()}`);
      }
      await sleep(200);
    }
  } finally {
    client.close();
  }
}

function spawnNode(topo: Topology, ns: string, ip: string, cmd: string, args: string[]): { child: ChildProcess; log: () => string } {
  const child = topo.spawnIn(ns, cmd, args);
  let log = '';
  for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20000)));
  return { child, log: () => log };
}

/**
 * The secret the test relay nodes seal leg keys under on the ng link (control.ngKeySecret), and
 * the edge opens them with (media.relayPool.keySecret): the ng link crosses the test's network.
 */
export const TEST_NG_KEY_SECRET = 'test-only ng key secret, 32+ characters long';

/** `keylatch relay --ng IP:2223 --interface IP` in namespace `ns` (a public host at `ip`); `env`: more settings, e.g. KEYLATCH_MEDIA__TIMEOUTS__MEDIA_SEC=3. */
export async function startKeylatchRelay(topo: Topology, ns: string, ip: string, ports: string, env: string[] = []): Promise<RunningNode> {
  const cli = path.join(__dirname, '..', '..', 'src', 'cli.ts');
  const { child, log } = spawnNode(topo, ns, ip, 'env', ['KEYLATCH_LOG__LEVEL=warn', `KEYLATCH_CONTROL__NG_KEY_SECRET=${TEST_NG_KEY_SECRET}`, ...env, process.execPath, '-r', path.join(__dirname, 'ts-register.js'), cli, 'relay', '--ng', `${ip}:2223`, '--interface', ip, '--ports', ports]);
  const url = `ng://${ip}:2223`;
  await untilPong(url, ip, 2223, log);
  return { url, ip, child, log, kill: () => Topology.killGroup(child) };
}

/** rtpengine, userspace forwarding only (no kernel table), ng on IP:2223; `args`: more options, e.g. --timeout=3. */
export async function startRtpengine(topo: Topology, ns: string, ip: string, ports: [number, number], args: string[] = []): Promise<RunningNode> {
  const { child, log } = spawnNode(topo, ns, ip, 'rtpengine', [
    '--config-file=none', '--foreground', '--log-stderr', '--log-level=5', `--interface=${ip}`,
    `--listen-ng=${ip}:2223`, '--table=-1', `--port-min=${ports[0]}`, `--port-max=${ports[1]}`, ...args,
  ]);
  const url = `ng://${ip}:2223`;
  await untilPong(url, ip, 2223, log);
  return { url, ip, child, log, kill: () => Topology.killGroup(child) };
}

/** One RTP packet a phone received: when (ms), from which address, its SSRC, and its payload. */
export interface Arrival {
  t: number;
  src: string;
  ssrc: number;
  payload: Buffer;
}

/** The payload of an RTP packet (past CSRCs and a header extension), or null if it is not one. */
function rtpPayload(p: Buffer): { ssrc: number; payload: Buffer } | null {
  if (p.length < 12 || p[0]! >> 6 !== 2) return null;
  let off = 12 + (p[0]! & 0x0f) * 4;
  if (p[0]! & 0x10) {
    if (p.length < off + 4) return null;
    off += 4 + p.readUInt16BE(off + 2) * 4;
  }
  return off <= p.length ? { ssrc: p.readUInt32BE(8), payload: p.subarray(off) } : null;
}

/**
 * The UDP a phone receives other than SIP, as tshark in its namespace sees it: the phone's
 * audio, packet by packet. What the relay forwards is what the phone can play. Times are
 * tshark's capture times, but lines reach us some hundreds of ms late: count only windows
 * that ended a while ago.
 */
export class RtpWatch {
  readonly arrivals: Arrival[] = [];
  private readonly child: ChildProcess;
  private stderr = '';
  private partial = '';

  constructor(topo: Topology, ns: string, phoneIp: string) {
    // RTP only (version 2, payload type below 64): not RTCP, nor keylatch's challenges and proofs.
    const rtp = '(udp[8] & 0xc0) = 0x80 and (udp[9] & 0x7f) < 64';
    this.child = topo.spawnIn(ns, 'tshark', ['-i', 'eth0', '-l', '-n', '-f', `udp and dst host ${phoneIp} and not port 5060 and ${rtp}`, '-T', 'fields', '-e', 'frame.time_epoch', '-e', 'ip.src', '-e', 'udp.payload']);
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.child.stdout!.on('data', (d: Buffer) => {
      const lines = (this.partial + d.toString()).split('\n');
      this.partial = lines.pop()!;
      for (const l of lines) {
        const [t, src, hex] = l.trim().split('\t');
        const rtp = hex ? rtpPayload(Buffer.from(hex.replace(/:/g, ''), 'hex')) : null;
        if (t && src && rtp) this.arrivals.push({ t: Math.round(Number(t) * 1000), src, ...rtp });
      }
    });
  }

  /** Resolves once tshark captures. */
  async ready(): Promise<void> {
    await waitFor(() => this.stderr.includes('Capturing on'), 15000).catch(() => {
      throw new Error(`tshark did not start: ${this.stderr}`);
    });
  }

  /** The longest silence between two packets received in [from, to], and the packets in it. */
  longestGap(from: number, to: number): { gapMs: number; endedAt: number | null; packets: number } {
    const inside = this.arrivals.filter((a) => a.t >= from && a.t <= to);
    let gapMs = 0;
    let endedAt: number | null = null;
    for (let i = 1; i < inside.length; i++) {
      const g = inside[i]!.t - inside[i - 1]!.t;
      if (g > gapMs) [gapMs, endedAt] = [g, inside[i]!.t];
    }
    return { gapMs, endedAt, packets: inside.length };
  }

  /**
   * Share of the audio energy received in [from, to] at `hz` (PCMU decoded, Goertzel): whose
   * tone reached the phone, on the wire, whatever the phone then made of it.
   */
  /**
   * How much of what arrived in [from, to] is the tone at `hz`, block by block (50 ms): one
   * Goertzel over seconds of packets laid end to end in arrival order adds any reordered or
   * missing packet's audio with the wrong phase, and a single one of those could sink it
   * (seen: 0.24 for a stream whose every second was clean in the phone's own recording).
   */
  toneShare(from: number, to: number, hz: number): number {
    const inside = this.arrivals.filter((a) => a.t >= from && a.t <= to);
    return blockToneShare(decodeG711('PCMU', Buffer.concat(inside.map((a) => a.payload))), hz);
  }

  /**
   * What arrived in [from, to], for a failure message: packets, SSRCs, payload sizes, the 50 ms
   * blocks where the tone at `hz` is weak (ms into the window: share) and the gaps over 40 ms. A
   * stream forwarded twice shows as twice the packets, a second source as a second SSRC.
   */
  describe(from: number, to: number, hz: number): string {
    const inside = this.arrivals.filter((a) => a.t >= from && a.t <= to);
    const weak: string[] = [];
    for (let i = 0; i + 5 <= inside.length; i += 5) {
      const share = blockToneShare(decodeG711('PCMU', Buffer.concat(inside.slice(i, i + 5).map((a) => a.payload))), hz);
      if (share < 0.9) weak.push(`+${inside[i]!.t - from}: ${share.toFixed(2)}`);
    }
    const gaps = inside.slice(1).map((a, i) => [a.t - inside[i]!.t, a.t - from] as const).filter(([g]) => g > 40).map(([g, at]) => `${g} ms at +${at}`);
    const distinct = (xs: Array<number | string>): string => [...new Set(xs)].join(',');
    return `${inside.length} packets, ssrc ${distinct(inside.map((a) => a.ssrc))}, sizes ${distinct(inside.map((a) => a.payload.length))}, sources ${distinct(inside.map((a) => a.src))}; weak blocks [${weak.join('; ')}]; gaps [${gaps.join('; ')}]`;
  }

  /**
   * Waits until tshark has reported a packet captured after `t` (its lines come late on a busy
   * machine), or 3 s: what is counted up to `t` is then all there is.
   */
  async caughtUp(t: number): Promise<void> {
    await waitFor(() => (this.arrivals.at(-1)?.t ?? 0) > t, 3000).catch(() => undefined);
  }

  /** Where the packets captured in [from, to] came from; waits for tshark to report up to `to`. */
  async sourcesIn(from: number, to = Date.now()): Promise<string[]> {
    await this.caughtUp(to);
    return [...new Set(this.arrivals.filter((a) => a.t >= from && a.t <= to).map((a) => a.src))];
  }

  stop(): void {
    Topology.killGroup(this.child);
  }

  log(): string {
    return this.stderr.slice(-2000);
  }
}
