import dgram from 'node:dgram';
import { once } from 'node:events';
import { loadConfig } from '../../src/config/load';
import type { MediaConfig } from '../../src/config/schema';
import { ChallengeProver, decode, looksLikeStun, parseLegKey, type Endpoint } from '../../src/media/challenge';
import { Relay } from '../../src/media/relay';
import { setIoMode, type IoMode } from '../../src/media/media-socket';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Each testMediaConfig gets a range of 100 ports of its own among 100 such ranges (31000-40999),
 * in turn, across test files. The turn is kept in the environment because `npm test` runs every
 * file in one process (--runInBand), each with a fresh copy of this module: counted per module,
 * every file's first relay took the same ports, so a sender an earlier file left running would
 * reach a later file's relay, where a source on the peer's IP can latch a guarded leg before the
 * peer does (the likeliest reading of one CI run in which both relay-workers tests lost B->A on
 * fresh calls, while B's count, which took any packet for media, looked fine).
 * Parallel jest workers start at different turns (by pid) as before.
 */
const RANGE_TURN = 'KEYLATCH_TEST_RANGE_TURN';
/** Where testMediaConfig puts relays' port ranges: 100 ranges of 100 ports from 31000. */
const RELAY_PORTS = { min: 31000, max: 31000 + 100 * 100 - 1 };

function nextPortRange(): number {
  const turn = Number(process.env[RANGE_TURN] ?? (process.pid % 50) * 2);
  process.env[RANGE_TURN] = String(turn + 1);
  return RELAY_PORTS.min + (turn % 100) * 100;
}
export type MediaOverrides = Partial<Omit<MediaConfig, 'key' | 'guarded' | 'timeouts'>> & {
  key?: Partial<MediaConfig['key']>;
  guarded?: Partial<MediaConfig['guarded']>;
  timeouts?: Partial<MediaConfig['timeouts']>;
};

/**
 * KEYLATCH_TEST_MEDIA_IO=uring|epoll runs a file's relays on that receive path (media.io):
 * test/relay/io-paths.ts runs the relay's behaviour suites under each. In-process relays take
 * it from setIoMode here, as the services do from their config; worker processes from their config.
 */
function testIoMode(): IoMode | null {
  const io = process.env.KEYLATCH_TEST_MEDIA_IO;
  if (io !== 'uring' && io !== 'epoll') return null;
  setIoMode(io);
  return io;
}

export function testMediaConfig(over: MediaOverrides = {}): MediaConfig {
  const base = loadConfig({ env: {} }).media;
  const portMin = nextPortRange();
  const io = testIoMode();
  return {
    ...base,
    interface: '127.0.0.1',
    allowLoopbackPeers: true,
    portMin,
    portMax: portMin + 99,
    ...(io ? { io } : {}),
    ...over,
    key: { ...base.key, ...over.key },
    guarded: { ...base.guarded, ...over.guarded },
    timeouts: { ...base.timeouts, ...over.timeouts },
  };
}

export function rtp(seq: number, ts: number, ssrc = 0x1234, payload = 160, pt = 0): Buffer {
  const b = Buffer.alloc(12 + payload, 0xd5);
  b[0] = 0x80;
  b[1] = pt;
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE(ts >>> 0, 4);
  b.writeUInt32BE(ssrc >>> 0, 8);
  return b;
}

export function rtcpSr(ssrc = 0x1234): Buffer {
  const b = Buffer.alloc(28);
  b[0] = 0x80;
  b[1] = 200;
  b.writeUInt16BE(6, 2);
  b.writeUInt32BE(ssrc, 4);
  return b;
}

export function sdp(ip: string, port: number, opts: { mux?: boolean; video?: number; direction?: string; keylatch?: boolean; rtcpPort?: number } = {}): string {
  const lines = ['v=0', `o=- 1 1 IN IP4 ${ip}`, 's=-', `c=IN IP4 ${ip}`, 't=0 0'];
  if (opts.keylatch) lines.push('a=keylatch:v1');
  lines.push(`m=audio ${port} RTP/AVP 0 101`, 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000');
  if (opts.rtcpPort) lines.push(`a=rtcp:${opts.rtcpPort}`);
  if (opts.mux) lines.push('a=rtcp-mux');
  if (opts.direction) lines.push(`a=${opts.direction}`);
  if (opts.video !== undefined) lines.push(`m=video ${opts.video} RTP/AVP 96`, 'a=rtpmap:96 H264/90000');
  return lines.join('\r\n') + '\r\n';
}

/** A UDP endpoint that records everything it receives. */
export class Peer {
  readonly received: Array<{ buf: Buffer; from: Endpoint }> = [];
  private constructor(readonly socket: dgram.Socket, readonly address: string, readonly port: number) {
    socket.on('message', (buf, r) => this.received.push({ buf, from: { address: r.address, port: r.port } }));
  }

  /**
   * A peer on `port`, or on one the kernel picks. Its pick comes from the ephemeral range
   * (32768-60999 on Linux), which the test relays' ranges overlap: a peer on 127.0.0.1 whose port
   * lies in a relay's range is one of that relay's own ports to it (a relay worker counts its
   * whole node's range), and is rightly never sent to. So a pick there is drawn again.
   */
  static async open(address = '127.0.0.1', port = 0): Promise<Peer> {
    for (let tries = 0; ; tries++) {
      const s = dgram.createSocket('udp4');
      s.bind(port, address);
      await once(s, 'listening');
      const got = s.address().port;
      if (port !== 0 || got < RELAY_PORTS.min || got > RELAY_PORTS.max || tries >= 50) return new Peer(s, address, got);
      s.close();
    }
  }

  get endpoint(): Endpoint {
    return { address: this.address, port: this.port };
  }

  send(buf: Buffer, to: Endpoint): void {
    this.socket.send(buf, to.port, to.address);
  }

  media(): Buffer[] {
    return this.received.filter((r) => !looksLikeStun(r.buf)).map((r) => r.buf);
  }

  stun(): Buffer[] {
    return this.received.filter((r) => looksLikeStun(r.buf)).map((r) => r.buf);
  }

  clear(): void {
    this.received.length = 0;
  }

  close(): void {
    this.socket.close();
  }
}

/** Proves the leg key from a peer's socket, as the plugin will: hello, answer the challenge. */
export async function prove(peer: Peer, relayEp: Endpoint, legId: string, key: Buffer, timeoutMs = 1000): Promise<Endpoint> {
  const prover = new ChallengeProver(legId, key);
  return new Promise<Endpoint>((resolve, reject) => {
    const timer = setTimeout(() => {
      peer.socket.off('message', onMsg);
      reject(new Error('no success from relay'));
    }, timeoutMs);
    const onMsg = (buf: Buffer, r: dgram.RemoteInfo): void => {
      if (!looksLikeStun(buf)) return;
      const ev = prover.onMessage(decode(buf), { address: r.address, port: r.port });
      if (ev.type === 'proof-sent') peer.send(ev.reply, ev.to);
      if (ev.type === 'latched') {
        clearTimeout(timer);
        peer.socket.off('message', onMsg);
        resolve(ev.mapping);
      }
    };
    peer.socket.on('message', onMsg);
    peer.send(prover.hello(), relayEp);
  });
}

/** Keeps answering re-challenges, as a live client does. Returns a stop function. */
export function answerChallenges(peer: Peer, legId: string, key: Buffer): () => void {
  const prover = new ChallengeProver(legId, key);
  const onMsg = (buf: Buffer, r: dgram.RemoteInfo): void => {
    if (!looksLikeStun(buf)) return;
    const ev = prover.onMessage(decode(buf), { address: r.address, port: r.port });
    if (ev.type === 'proof-sent') peer.send(ev.reply, ev.to);
  };
  peer.socket.on('message', onMsg);
  return () => peer.socket.off('message', onMsg);
}

/** Reads a=keylatch:v1 leg=… key=… from SDP the relay produced. */
export function keyFromSdp(text: string): { legId: string; key: Buffer } | null {
  for (const m of text.matchAll(/^a=keylatch:(.*?)\r?$/gm)) {
    const key = parseLegKey(m[1]!);
    if (key) return key;
  }
  return null;
}

export function mediaPorts(text: string): number[] {
  return [...text.matchAll(/^m=\w+ (\d+)/gm)].map((m) => Number(m[1]));
}

export function rtcpPorts(text: string): number[] {
  return [...text.matchAll(/^a=rtcp:(\d+)/gm)].map((m) => Number(m[1]));
}

/** A peer factory for one test file: every peer it opens is closed after each test. */
export function testPeers(): (address?: string) => Promise<Peer> {
  const open: Peer[] = [];
  afterEach(() => open.splice(0).forEach((p) => p.close()));
  return async (address = '127.0.0.1') => {
    const p = await Peer.open(address);
    open.push(p);
    return p;
  };
}

export async function waitFor(cond: () => boolean, timeoutMs = 2000, stepMs = 5): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await sleep(stepMs);
  }
}

/** waitFor for a condition that must ask something asynchronous, such as a binding store. */
export async function waitForAsync(cond: () => Promise<boolean>, timeoutMs: number, stepMs = 50): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

export function newRelay(over: Parameters<typeof testMediaConfig>[0] = {}): Relay {
  return new Relay(testMediaConfig(over));
}
