import { randomInt } from 'node:crypto';

export class PortPoolExhausted extends Error {
  override name = 'PortPoolExhausted';
  constructor(readonly min: number, readonly max: number) {
    super(`no free RTP/RTCP port pair left in ${min}-${max}`);
  }
}

/**
 * Even/odd RTP/RTCP pairs from a range, handed out at random so a port cannot be guessed from
 * the last one seen (the first step of an RTP Bleed sweep). O(1) take and give back.
 */
export class PortPool {
  private readonly free: number[] = [];
  private readonly taken = new Set<number>();

  constructor(readonly min: number, readonly max: number) {
    for (let p = min + (min % 2); p + 1 <= max; p += 2) this.free.push(p);
    if (this.free.length === 0) throw new RangeError(`port range ${min}-${max} holds no even/odd pair`);
  }

  get capacity(): number {
    return this.free.length + this.taken.size;
  }

  get inUse(): number {
    return this.taken.size;
  }

  /** The RTP port of a pair; RTCP is RTP + 1. */
  take(): number {
    if (this.free.length === 0) throw new PortPoolExhausted(this.min, this.max);
    const i = randomInt(this.free.length);
    const port = this.free[i]!;
    this.free[i] = this.free[this.free.length - 1]!;
    this.free.pop();
    this.taken.add(port);
    return port;
  }

  give(port: number): void {
    if (!this.taken.delete(port)) return;
    this.free.push(port);
  }

  /** A port some other process holds: keep it out of circulation rather than retry it forever. */
  retire(port: number): void {
    this.taken.delete(port);
  }

  /** Is this port (RTP or the RTCP above it) bound by us right now? */
  holds(port: number): boolean {
    return this.taken.has(port) || (port % 2 === 1 && this.taken.has(port - 1));
  }
}
