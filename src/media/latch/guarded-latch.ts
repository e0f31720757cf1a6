import type { Endpoint } from '../challenge';
import { rtcpSsrc, rtpSeq, rtpSsrc } from '../packet';
import type { Latch, LatchHost, MediaClass } from './latch';

export interface GuardedLatchOptions {
  learnWindowMs: number;
  lockAfterPackets: number;
  strictSourceIp: boolean;
  /** IPs we expect media from: where the signalling came from, and the SDP address. */
  preferredIps: () => ReadonlySet<string>;
  /** The locked source's SSRC, last sequence number and last packet time. */
  lockedStream: () => { ssrc: number; lastSeq: number; lastSeen: number } | null;
}

/** A locked source that has been silent this long may be replaced inside a learning window. */
const LOCKED_QUIET_MS = 500;
const MAX_SEQ_ADVANCE = 100;

/**
 * Latching for softphones that cannot prove a key. It learns only inside a short window
 * after signalling, wants several consecutive packets of one SSRC from one source, prefers
 * the IPs signalling named, and then locks. An RTP Bleed sprayer outside the window gets
 * nothing; inside it, it has to out-send the real phone from an unexpected IP.
 */
export class GuardedLatch implements Latch {
  readonly policy = 'guarded';
  readonly sendsBeforeLatch = true;
  private learnUntil = 0;
  private candidate: { address: string; port: number; ssrc: number; count: number } | null = null;

  constructor(private readonly host: LatchHost, private readonly opts: GuardedLatchOptions) {}

  get state(): string {
    return this.host.latched ? 'locked' : 'learning';
  }

  onStun(): void {
    this.host.drop('stun-invalid');
  }

  onSignalling(now: number): void {
    this.learnUntil = now + this.opts.learnWindowMs;
    this.candidate = null;
  }

  tick(): void {
    // Nothing times out here: a lock holds until signalling or a rebinding moves it.
  }

  onForeignMedia(buf: Buffer, from: Endpoint, cls: MediaClass, now: number): boolean {
    const ssrc = cls === 'rtp' ? rtpSsrc(buf) : rtcpSsrc(buf);
    const preferred = this.opts.preferredIps().has(from.address);
    if (this.host.latched) {
      const locked = this.opts.lockedStream();
      if (preferred && locked && this.isRebinding(locked, ssrc, cls === 'rtp' ? rtpSeq(buf) : -1)) return this.lock(from, now);
      if (now > this.learnUntil || (locked && now - locked.lastSeen < LOCKED_QUIET_MS)) return this.refuse('unlatched-source');
    } else if (now > this.learnUntil) {
      return this.refuse('outside-learning-window');
    }
    if (!preferred && this.opts.strictSourceIp) return this.refuse('unexpected-source-ip');
    const c = this.candidate;
    if (c && c.address === from.address && c.port === from.port && c.ssrc === ssrc) c.count++;
    else this.candidate = { address: from.address, port: from.port, ssrc, count: 1 };
    // Sources from an unexpected IP must show twice the persistence.
    const needed = this.opts.lockAfterPackets * (preferred ? 1 : 2);
    if (this.candidate!.count >= needed) return this.lock(from, now);
    return this.refuse('unlatched-source');
  }

  private isRebinding(locked: { ssrc: number; lastSeq: number }, ssrc: number, seq: number): boolean {
    if (locked.ssrc !== ssrc) return false;
    if (seq < 0) return true; // RTCP carries no sequence; SSRC and IP must do
    const advance = (seq - locked.lastSeq + 0x10000) % 0x10000;
    return advance > 0 && advance <= MAX_SEQ_ADVANCE;
  }

  private lock(from: Endpoint, now: number): boolean {
    this.candidate = null;
    this.host.latchTo({ address: from.address, port: from.port }, now);
    return true;
  }

  private refuse(reason: 'unlatched-source' | 'outside-learning-window' | 'unexpected-source-ip'): false {
    this.host.drop(reason);
    return false;
  }
}
