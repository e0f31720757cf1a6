import type { RemoteInfo, Socket } from 'node:dgram';
import type { Endpoint } from './challenge';
import type { DropReason, Latch, LatchHost } from './latch/latch';
import { classify, rtcpSsrc, rtpSsrc } from './packet';
import { RtpReceiveStats } from './rtp-stats';

export interface PortCounters {
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
  dropped: number;
  malformed: number;
}

export const emptyCounters = (): PortCounters => ({ packetsIn: 0, bytesIn: 0, packetsOut: 0, bytesOut: 0, dropped: 0, malformed: 0 });

/** What a port needs from its surroundings; kept narrow so the port can be tested alone. */
export interface PortContext {
  /** Where a packet accepted on this port goes next (the partner leg's port), or null. */
  forward(buf: Buffer, isRtcp: boolean): void;
  /** The single gate for destinations: null if allowed, else why not. */
  denied(address: string, port: number): string | null;
  onDrop(reason: DropReason): void;
  onLatch(port: RelayPort, source: Endpoint | null): void;
}

/**
 * One local UDP port of one stream of one leg: the socket, the latch guarding it, and its
 * counters. Media to this leg leaves from this same port (symmetric RTP).
 */
export class RelayPort implements LatchHost {
  latched: Endpoint | null = null;
  /** The address signalling gave for this leg; used only by latches that allow it. */
  target: Endpoint | null = null;
  lastSeen: number;
  ssrc = -1;
  readonly counters = emptyCounters();
  readonly rtpStats = new RtpReceiveStats();
  latch!: Latch;

  constructor(
    readonly socket: Socket,
    readonly port: number,
    readonly kind: 'rtp' | 'rtcp',
    private readonly ctx: PortContext,
    now: number,
  ) {
    this.lastSeen = now;
    socket.on('message', (buf, rinfo) => this.receive(buf, rinfo));
  }

  receive(buf: Buffer, from: RemoteInfo): void {
    const c = this.counters;
    c.packetsIn++;
    c.bytesIn += buf.length;
    const cls = classify(buf);
    const now = Date.now();
    if (cls === 'stun') return this.latch.onStun(buf, from, now);
    if (cls === 'malformed') {
      c.malformed++;
      return this.drop('malformed');
    }
    const l = this.latched;
    if (l === null || from.port !== l.port || from.address !== l.address) {
      if (!this.latch.onForeignMedia(buf, from, cls, now)) return;
    }
    this.lastSeen = now;
    if (cls === 'rtp') {
      this.ssrc = rtpSsrc(buf);
      this.rtpStats.update(buf, now);
    } else if (this.kind === 'rtcp') {
      this.ssrc = rtcpSsrc(buf);
    }
    this.latch.seen?.(now);
    this.ctx.forward(buf, cls === 'rtcp');
  }

  /** Media toward this leg's endpoint. */
  send(buf: Buffer): void {
    const to = this.latched ?? (this.latch.sendsBeforeLatch ? this.target : null);
    if (to === null) return this.drop('no-destination');
    this.socket.send(buf, to.port, to.address);
    this.counters.packetsOut++;
    this.counters.bytesOut += buf.length;
  }

  reply(buf: Buffer, to: Endpoint): void {
    if (this.ctx.denied(to.address, to.port)) return this.drop('no-destination');
    this.socket.send(buf, to.port, to.address);
  }

  latchTo(source: Endpoint, now: number): void {
    if (this.ctx.denied(source.address, source.port)) return this.drop('no-destination');
    this.latched = { address: source.address, port: source.port };
    this.lastSeen = now;
    this.ctx.onLatch(this, this.latched);
  }

  unlatch(): void {
    this.latched = null;
    this.ctx.onLatch(this, null);
  }

  drop(reason: DropReason): void {
    this.counters.dropped++;
    this.ctx.onDrop(reason);
  }
}
