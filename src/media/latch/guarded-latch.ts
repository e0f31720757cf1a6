import type { Endpoint } from '../challenge';
import { rtcpSsrc, rtpSeq, rtpSsrc } from '../packet';
import type { DropReason, Latch, LatchHost, MediaClass } from './latch';
import { Rank, type SourceRank } from './source-rank';

export interface GuardedLatchOptions {
  learnWindowMs: number;
  lockAfterPackets: number;
  strictSourceIp: boolean;
  /** How far signalling vouches for an IP as this leg's media source (source-rank.ts). */
  rankOf: (ip: string) => SourceRank;
  /** The leg's permission for a source nobody named to lock as the sole plausible stream. */
  soleStream: SoleStreamGate;
  /** Whether this unlatched source is walking the relay's ports (source-spread.ts). */
  spraying: (from: Endpoint, now: number) => boolean;
  /** The locked source's SSRC, last sequence number and last packet time. */
  lockedStream: () => { ssrc: number; lastSeq: number; lastSeen: number } | null;
}

export interface SoleStreamGate {
  /** Open until the leg first locks (then its IP is named) or is contested; off if configured so. */
  open(): boolean;
  /** Two plausible unnamed streams competed for the leg: trust neither for the rest of the call. */
  contest(): void;
}

/** A locked source that has been silent this long may be replaced inside a learning window. */
const LOCKED_QUIET_MS = 500;
const MAX_SEQ_ADVANCE = 100;
/** An unnamed stream must look continuous: each packet at most this many sequence numbers on. */
const MAX_SEQ_STEP = 4;
/** Unnamed sources remembered per window; more than this cannot all be plausible anyway. */
const MAX_UNNAMED = 16;

interface Candidate {
  address: string;
  port: number;
  ssrc: number;
  rank: SourceRank;
  count: number;
  seq: number;
}

/**
 * Latching for softphones that cannot prove a key. It learns only inside a short window
 * after signalling and locks onto the best-named source that shows several consecutive
 * packets of one SSRC: an IP the ng caller asserted, a public SDP address, the SIP source,
 * in that order (source-rank.ts). A source nobody named (behind a proxy whose received-from
 * is only a SIP hop) may lock only as the one plausible stream on the port: one SSRC, a
 * continuing sequence, twice the packets, no rival stream and no sign of spraying. Once a
 * leg has locked, its IP is named and nothing unnamed is accepted again. An RTP Bleed sprayer
 * outside the window gets nothing; inside it, it can only make an unnamed leg go silent.
 */
export class GuardedLatch implements Latch {
  readonly policy = 'guarded';
  readonly sendsBeforeLatch = true;
  private learnUntil = 0;
  private candidate: Candidate | null = null;
  private lockedRank: SourceRank = Rank.unnamed;
  /** The window (its end) in which the current lock was taken. */
  private lockedIn = 0;
  /** Packets per unnamed, non-spraying RTP source in this window: who else could be the phone. */
  private readonly unnamed = new Map<string, number>();

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
    this.unnamed.clear();
  }

  tick(): void {
    // Nothing times out here: a lock holds until signalling or a rebinding moves it.
  }

  onForeignMedia(buf: Buffer, from: Endpoint, cls: MediaClass, now: number): boolean {
    const ssrc = cls === 'rtp' ? rtpSsrc(buf) : rtcpSsrc(buf);
    const seq = cls === 'rtp' ? rtpSeq(buf) : -1;
    const rank = this.opts.rankOf(from.address);
    // Every foreign datagram counts toward the relay-wide picture of who walks the ports,
    // whatever this port decides: a sprayer shows itself on the ports that refuse it too.
    const spraying = this.opts.spraying(from, now);
    if (this.host.latched) {
      const locked = this.opts.lockedStream();
      if (rank >= Rank.signalled && locked && this.isRebinding(locked, ssrc, seq)) return this.lock(from, rank, now);
      if (now > this.learnUntil) return this.refuse('unlatched-source');
      // Inside a window a better-named source may take the lock over; others only from a quiet lock.
      const quiet = !locked || now - locked.lastSeen >= LOCKED_QUIET_MS;
      if (!quiet && rank <= this.lockedRank && !(rank === Rank.unnamed && this.lockedRank === Rank.unnamed)) return this.refuse('unlatched-source');
    } else if (now > this.learnUntil) {
      return this.refuse('outside-learning-window');
    }
    if (rank === Rank.unnamed) return this.learnUnnamed(from, cls, ssrc, seq, spraying, now);
    return this.learn(from, rank, ssrc, seq, this.opts.lockAfterPackets, now);
  }

  /** Counts consecutive packets of one SSRC from one source; a weaker source never disturbs a stronger candidate. */
  private learn(from: Endpoint, rank: SourceRank, ssrc: number, seq: number, needed: number, now: number): boolean {
    const c = this.candidate;
    if (c && c.rank > rank) return this.refuse(rank === Rank.unnamed ? 'unexpected-source-ip' : 'unlatched-source');
    const same = c && c.address === from.address && c.port === from.port && c.ssrc === ssrc;
    // Unnamed sources must also keep their sequence going: a sprayer's burst or replay resets.
    const continues = rank > Rank.unnamed || (same && seqStep(c.seq, seq) >= 1 && seqStep(c.seq, seq) <= MAX_SEQ_STEP);
    if (same && continues) {
      c.count++;
      c.seq = seq;
    } else {
      this.candidate = { address: from.address, port: from.port, ssrc, rank, count: 1, seq };
    }
    if (this.candidate!.count < needed) return this.refuse(rank === Rank.unnamed ? 'unexpected-source-ip' : 'unlatched-source');
    return this.lock(from, rank, now);
  }

  private learnUnnamed(from: Endpoint, cls: MediaClass, ssrc: number, seq: number, spraying: boolean, now: number): boolean {
    const needed = this.opts.lockAfterPackets * 2;
    // Not strict (legacy): any IP locks after twice the persistence, which a sprayer can win.
    if (!this.opts.strictSourceIp) return this.learn(from, Rank.unnamed, ssrc, seq, needed, now);
    // RTCP carries no sequence to judge; its port waits until the RTP port has named the IP.
    if (cls !== 'rtp') return this.refuse('unexpected-source-ip');
    // An unnamed lock may be challenged in the window it was taken in (it may have been a racer's);
    // in later windows the learned IP is named and everything else is simply refused.
    const contesting = this.host.latched !== null && this.lockedRank === Rank.unnamed && this.lockedIn === this.learnUntil;
    if (!contesting && !this.opts.soleStream.open()) return this.refuse('unexpected-source-ip');
    if (spraying) return this.refuse('spraying-source');
    const key = `${from.address}|${from.port}`;
    if (this.unnamed.has(key) || this.unnamed.size < MAX_UNNAMED) this.unnamed.set(key, (this.unnamed.get(key) ?? 0) + 1);
    const rival = [...this.unnamed].some(([k, n]) => k !== key && n >= this.opts.lockAfterPackets);
    const wouldLock = this.candidateReaches(from, ssrc, seq, needed);
    if (!wouldLock) return this.learn(from, Rank.unnamed, ssrc, seq, needed, now);
    if (contesting || rival) {
      // Two plausible streams for one unnamed leg: one is not the phone, and nothing says which.
      // Silence beats sending the other side's audio to a stranger.
      this.candidate = null;
      if (contesting) this.host.unlatch();
      this.opts.soleStream.contest();
      return this.refuse('ambiguous-source');
    }
    return this.learn(from, Rank.unnamed, ssrc, seq, needed, now);
  }

  /** Would this packet bring the candidate to `needed`? (learn() decides; this only looks ahead.) */
  private candidateReaches(from: Endpoint, ssrc: number, seq: number, needed: number): boolean {
    const c = this.candidate;
    if (!c || c.rank !== Rank.unnamed || c.address !== from.address || c.port !== from.port || c.ssrc !== ssrc) return needed <= 1;
    const step = seqStep(c.seq, seq);
    return step >= 1 && step <= MAX_SEQ_STEP && c.count + 1 >= needed;
  }

  private isRebinding(locked: { ssrc: number; lastSeq: number }, ssrc: number, seq: number): boolean {
    if (locked.ssrc !== ssrc) return false;
    if (seq < 0) return true; // RTCP carries no sequence; SSRC and IP must do
    const advance = (seq - locked.lastSeq + 0x10000) % 0x10000;
    return advance > 0 && advance <= MAX_SEQ_ADVANCE;
  }

  private lock(from: Endpoint, rank: SourceRank, now: number): boolean {
    this.candidate = null;
    this.lockedRank = rank;
    this.lockedIn = this.learnUntil;
    this.host.latchTo({ address: from.address, port: from.port }, now);
    return true;
  }

  private refuse(reason: DropReason): false {
    this.host.drop(reason);
    return false;
  }
}

/** How far `seq` is past `prev`, modulo 2^16; -1 when there is no sequence (RTCP). */
function seqStep(prev: number, seq: number): number {
  if (prev < 0 || seq < 0) return -1;
  return (seq - prev + 0x10000) % 0x10000;
}
