import { ChallengeVerifier, ProtocolError, decode, sameEndpoint, sealedSize, type Endpoint } from '../challenge';
import { PerSourceRateLimiter } from '../rate-limiter';
import type { Latch, LatchHost } from './latch';

export interface KeyLatchOptions {
  legId: string;
  key: Buffer;
  nonceTtlMs: number;
  rechallengeIntervalMs: number;
  consentTimeoutMs: number;
  challengesPerSecondPerSource: number;
}

/**
 * Latches only onto a source that proves the leg key. A new source (a NAT rebinding, or an
 * attacker) is challenged and takes over only once it has proved the key; until then the
 * current source keeps the latch. The latched source is re-challenged on an interval and
 * loses the latch if it stops proving (consent freshness).
 */
export class KeyLatch implements Latch {
  readonly policy = 'key';
  readonly sendsBeforeLatch = false;
  private readonly verifier: ChallengeVerifier;
  private readonly limiter: PerSourceRateLimiter;
  private lastProofAt = 0;
  private lastRechallengeAt = 0;
  private challenged = false;

  constructor(private readonly host: LatchHost, private readonly opts: KeyLatchOptions) {
    this.verifier = new ChallengeVerifier({ legId: opts.legId, key: opts.key, nonceTtlMs: opts.nonceTtlMs });
    this.limiter = new PerSourceRateLimiter(opts.challengesPerSecondPerSource);
  }

  get state(): string {
    if (this.host.latched) return 'authenticated';
    return this.challenged ? 'challenged' : 'unauthenticated';
  }

  onStun(buf: Buffer, from: Endpoint, now: number): void {
    let msg;
    try {
      msg = decode(buf);
    } catch (err) {
      if (err instanceof ProtocolError) return this.host.drop('stun-invalid');
      throw err;
    }
    if (msg.legId !== this.opts.legId) return this.host.drop('unknown-leg');
    if (msg.kind === 'hello') {
      if (!this.challenge(from, buf.length, now, msg.txid)) this.host.drop('rate-limited');
      return;
    }
    if (msg.kind !== 'proof') return this.host.drop('stun-invalid');
    const verdict = this.verifier.verify(msg, from);
    if (!verdict.ok) return this.host.drop('proof-rejected');
    this.lastProofAt = now;
    if (!this.host.latched || !sameEndpoint(this.host.latched, verdict.source)) this.host.latchTo(verdict.source, now);
    this.host.reply(verdict.success, verdict.source);
  }

  onForeignMedia(buf: Buffer, from: Endpoint, _cls: string, now: number): boolean {
    this.challenge(from, buf.length, now);
    this.host.drop('unlatched-source');
    return false;
  }

  onSignalling(): void {
    // Signalling changes nothing here: only a proof moves the latch.
  }

  tick(now: number): void {
    this.verifier.sweep();
    const latched = this.host.latched;
    if (!latched) return;
    if (now - this.lastProofAt > this.opts.consentTimeoutMs) {
      this.host.unlatch();
      this.challenged = false;
      return;
    }
    if (now - this.lastProofAt >= this.opts.rechallengeIntervalMs && now - this.lastRechallengeAt >= this.opts.rechallengeIntervalMs) {
      this.lastRechallengeAt = now;
      // Unsolicited, but only ever to the source that last proved the key.
      this.host.reply(this.verifier.challenge(latched), latched);
    }
  }

  /** Never answers with more bytes than arrived, and at most a few times a second per IP. */
  private challenge(from: Endpoint, triggerSize: number, now: number, txid?: Buffer): boolean {
    if (sealedSize(this.opts.legId, from.address) > triggerSize) return false;
    if (!this.limiter.allow(from.address, now)) return false;
    this.challenged = true;
    this.host.reply(this.verifier.challenge(from, txid), from);
    return true;
  }
}
