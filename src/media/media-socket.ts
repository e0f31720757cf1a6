import { loadNativeAddon } from '../native-addon';
import type { Endpoint } from './challenge';

/** Counters and RTP statistics the native fast path keeps per socket. */
export interface SocketStats {
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
  noDestination: number;
  sendErrors: number;
  lastSeen: number;
  ssrc: number;
  rtpExpected: number;
  rtpLost: number;
  jitterMs: number;
  lastSeq: number;
}

type OnPacket = (buf: Buffer, address: string, port: number) => void;

interface FastPath {
  open(family: 4 | 6, address: string, port: number, isRtcp: number, onPacket: OnPacket): number;
  close(id: number): void;
  send(id: number, buf: Buffer, address: string, port: number): boolean;
  setEndpoint(id: number, which: 0 | 1, address: string | null, port: number): void;
  setOutputs(id: number, rtpOut: number, rtcpOut: number): void;
  forward(id: number, buf: Buffer): void;
  setClockRate(id: number, rate: number): void;
  stats(id: number): SocketStats;
  lastSeen(id: number): number;
  ssrc(id: number): number;
  setSendBatching(mode: 0 | 1 | 2): void;
  setPollInterval(us: number): void;
  setIoMode(mode: 0 | 1 | 2): boolean;
  ioStats(): IoStats;
}

/** Process-wide figures of the fast path's receive paths (native/fastpath.c, "io_uring"). */
export interface IoStats {
  /** Open sockets receiving through io_uring's multishot recvmsg, and through the epoll set. */
  uringSockets: number;
  epollSockets: number;
  /** Sockets ever opened on each path in this process. */
  uringOpened: number;
  epollOpened: number;
  /** Multishot receives armed again after they ended (no free buffer, or an error). */
  rearms: number;
  /** Receives that found the shared buffer ring empty (-ENOBUFS). */
  noBuffers: number;
  ringErrors: number;
  /** Open sockets the ring names by their slot in its file table, and sockets ever given one. */
  fixedSockets: number;
  fixedOpened: number;
  /** Completions the kernel could not post to the ring's full completion queue (none expected). */
  cqOverflow?: number;
}

const fastPath = loadNativeAddon<FastPath>('src/media/media-socket.ts', {
  open: true, close: true, send: true, setEndpoint: true, setOutputs: true, forward: true, setClockRate: true,
  stats: true, lastSeen: true, ssrc: true, setSendBatching: true, setPollInterval: true, setIoMode: true, ioStats: true,
});

export type SendBatching = 'gso' | 'sendmmsg' | 'off';

/**
 * How the fast path sends the packets one recvmmsg brought in from one source (all bound for
 * one destination): one UDP GSO send, one sendmmsg, or one sendto each. Process-wide.
 */
export function setSendBatching(mode: SendBatching): void {
  fastPath.setSendBatching(mode === 'gso' ? 2 : mode === 'sendmmsg' ? 1 : 0);
}

/**
 * How often the fast path drains its sockets while media keeps arriving (media.pollIntervalUs):
 * 0 wakes on every arrival; otherwise, after a drain, the next comes this many microseconds
 * later, so that one wakeup carries many packets (native/fastpath.c, "Readiness"). Process-wide.
 */
export function setPollInterval(us: number): void {
  fastPath.setPollInterval(us);
}

export type IoMode = 'auto' | 'uring' | 'epoll';

/**
 * How sockets opened from now on receive (media.io): "uring", one multishot recvmsg each on one
 * io_uring whose completions a drain reads in batches and whose sends it submits together;
 * "epoll", one epoll set and a recvmmsg per ready socket; "auto", io_uring where the kernel
 * (or a container's seccomp policy) allows it. Sockets already open keep their path. Returns
 * the path new sockets get; "uring" that the machine refuses throws, as the operator asked for it.
 */
export function setIoMode(mode: IoMode): 'uring' | 'epoll' {
  const ring = fastPath.setIoMode(mode === 'auto' ? 0 : mode === 'uring' ? 1 : 2);
  if (mode === 'uring' && !ring) {
    throw new Error('media.io is "uring", but io_uring is not available here (not built with liburing, or refused by the kernel or a seccomp policy): use "auto" or "epoll"');
  }
  return ring ? 'uring' : 'epoll';
}

export function ioStats(): IoStats {
  return fastPath.ioStats();
}

/** The process-wide fast-path settings of a media config, as every process that relays applies them. */
export function tuneFastPath(media: { sendBatching: SendBatching; pollIntervalUs: number; io: IoMode }): void {
  setSendBatching(media.sendBatching);
  setPollInterval(media.pollIntervalUs);
  setIoMode(media.io);
}

const LATCHED = 0;
const DESTINATION = 1;

/**
 * A relay UDP socket owned by the native fast path (native/fastpath.c). Packets from the
 * latched source are forwarded in C to this socket's outputs; every other datagram comes to
 * `onPacket` for the TypeScript latch logic to judge.
 */
export class MediaSocket {
  private closed = false;

  private constructor(private readonly id: number, readonly port: number) {}

  /** Binds address:port; throws an Error whose `code` is e.g. EADDRINUSE. */
  static open(family: 4 | 6, address: string, port: number, isRtcp: boolean, onPacket: OnPacket): MediaSocket {
    return new MediaSocket(fastPath.open(family, address, port, isRtcp ? 1 : 0, onPacket), port);
  }

  /** The native socket id, for other parts of the addon (the room mixer, native/mixer.c). */
  get handle(): number {
    return this.id;
  }

  send(buf: Buffer, to: Endpoint): boolean {
    return !this.closed && fastPath.send(this.id, buf, to.address, to.port);
  }

  /** Datagrams from this source take the fast path; null sends everything to JS. */
  setLatched(source: Endpoint | null): void {
    if (!this.closed) fastPath.setEndpoint(this.id, LATCHED, source?.address ?? null, source?.port ?? 0);
  }

  /** Where media leaving through this socket goes; null drops it. */
  setDestination(to: Endpoint | null): void {
    if (!this.closed) fastPath.setEndpoint(this.id, DESTINATION, to?.address ?? null, to?.port ?? 0);
  }

  /** The sockets accepted RTP and RTCP leave through (the other leg's). */
  setOutputs(rtp: MediaSocket | null, rtcp: MediaSocket | null): void {
    if (!this.closed) fastPath.setOutputs(this.id, rtp?.id ?? -1, rtcp?.id ?? -1);
  }

  /** Forwards a packet JS accepted, exactly as the fast path would have. */
  forward(buf: Buffer): void {
    if (!this.closed) fastPath.forward(this.id, buf);
  }

  setClockRate(rate: number): void {
    if (!this.closed) fastPath.setClockRate(this.id, rate);
  }

  stats(): SocketStats {
    return fastPath.stats(this.id);
  }

  /** The SSRC the latched source last sent (RTP, or an RTCP sender's), -1 before any: stats().ssrc without the rest. */
  ssrc(): number {
    return this.closed ? -1 : fastPath.ssrc(this.id);
  }

  /** When media from the latched source last arrived (ms since the epoch). */
  lastSeen(): number {
    return fastPath.lastSeen(this.id);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fastPath.close(this.id);
  }
}
