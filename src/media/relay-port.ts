import type { Endpoint } from './challenge';
import type { DropReason, Latch, LatchHost } from './latch/latch';
import { MediaSocket, type SocketStats } from './media-socket';
import { classify } from './packet';

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
  /** The single gate for destinations: null if allowed, else why not. */
  denied(address: string, port: number): string | null;
  onDrop(reason: DropReason): void;
  onLatch(port: RelayPort, source: Endpoint | null): void;
  onError(err: Error): void;
}

/**
 * One local UDP port of one stream of one leg, and the latch guarding it. Media from the
 * latched source never reaches this class: the native fast path forwards it. What does reach
 * `receive` is everything the latch must judge: STUN, other sources, malformed datagrams.
 * Every decision is mirrored into the socket, so C and TypeScript never disagree.
 */
export class RelayPort implements LatchHost {
  latched: Endpoint | null = null;
  readonly socket: MediaSocket;
  private currentLatch: Latch;
  private signalled: Endpoint | null = null;
  private dropped = 0;
  private malformed = 0;

  constructor(
    family: 4 | 6,
    address: string,
    readonly port: number,
    readonly kind: 'rtp' | 'rtcp',
    private readonly ctx: PortContext,
    private readonly makeLatch: (host: RelayPort) => Latch,
  ) {
    this.socket = MediaSocket.open(family, address, port, kind === 'rtcp', (buf, a, p) => this.receive(buf, { address: a, port: p }));
    this.currentLatch = makeLatch(this);
  }

  get latch(): Latch {
    return this.currentLatch;
  }

  /** The leg changed hands (a hairpinned call): whatever the old latch trusted is forgotten. */
  relatch(): void {
    if (this.latched) this.unlatch();
    this.currentLatch = this.makeLatch(this);
    this.pushDestination();
  }

  /** The address signalling gave for this leg; used only by latches that allow it. */
  get target(): Endpoint | null {
    return this.signalled;
  }

  set target(ep: Endpoint | null) {
    this.signalled = ep;
    this.pushDestination();
  }

  /** Attacker-controlled input arrives here: whatever goes wrong is counted, never thrown into C. */
  receive(buf: Buffer, from: Endpoint): void {
    try {
      this.judge(buf, from);
    } catch (err) {
      this.drop('internal-error');
      this.ctx.onError(err as Error);
    }
  }

  private judge(buf: Buffer, from: Endpoint): void {
    const cls = classify(buf);
    const now = Date.now();
    if (cls === 'stun') return this.latch.onStun(buf, from, now);
    if (cls === 'malformed') {
      this.malformed++;
      return this.drop('malformed');
    }
    if (this.latch.onForeignMedia(buf, from, cls, now)) this.socket.forward(buf);
  }

  reply(buf: Buffer, to: Endpoint): void {
    if (this.ctx.denied(to.address, to.port)) return this.drop('no-destination');
    this.socket.send(buf, to);
  }

  latchTo(source: Endpoint, _now: number): void {
    if (this.ctx.denied(source.address, source.port)) return this.drop('no-destination');
    this.latched = { address: source.address, port: source.port };
    this.socket.setLatched(this.latched);
    this.pushDestination();
    this.ctx.onLatch(this, this.latched);
  }

  unlatch(): void {
    this.latched = null;
    this.socket.setLatched(null);
    this.pushDestination();
    this.ctx.onLatch(this, null);
  }

  drop(reason: DropReason): void {
    this.dropped++;
    this.ctx.onDrop(reason);
  }

  /** Native counters merged with the drops judged here. */
  counters(native: SocketStats = this.socket.stats()): PortCounters {
    return {
      packetsIn: native.packetsIn,
      bytesIn: native.bytesIn,
      packetsOut: native.packetsOut,
      bytesOut: native.bytesOut,
      dropped: this.dropped + native.noDestination + native.sendErrors,
      malformed: this.malformed,
    };
  }

  lastSeen(): number {
    return this.socket.lastSeen();
  }

  close(): void {
    this.socket.close();
  }

  /** Media toward this leg goes to the latched source, or, where the latch allows, to the SDP's address. */
  private pushDestination(): void {
    this.socket.setDestination(this.latched ?? (this.currentLatch?.sendsBeforeLatch ? this.signalled : null));
  }
}
