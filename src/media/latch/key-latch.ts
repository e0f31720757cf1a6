import { ChallengeVerifier, HELLO_FLAG_DIRECT, ProtocolError, ReplayWindow, decode, sameEndpoint, sealedSize, type Endpoint } from '../challenge';
import { PerSourceRateLimiter } from '../rate-limiter';
import type { Latch, LatchHost } from './latch';

export interface KeyLatchOptions {
  legId: string;
  key: Buffer;
  nonceTtlMs: number;
  rechallengeIntervalMs: number;
  consentTimeoutMs: number;
  challengesPerSecondPerSource: number;
  /** One per leg, shared by its ports: a hello is good once for the whole leg. */
  replay: ReplayWindow;
  /** The SSRCs the latched source is sending: media carrying one of them shows it belongs to this leg. */
  knownSsrcs: () => readonly number[];
  /** The client proved the key again (a success went out): the relay may have news for it. */
  onProved?: (source: Endpoint) => void;
  /** What an authenticated hello from the latched source says about the client's media path. */
  onPathReport?: (direct: boolean) => void;
}

/**
 * Latches only onto a source that proves the leg key. A new source (a NAT rebinding, or an
 * attacker) is challenged and takes over only once it has proved the key; until then the
 * current source keeps the latch. The latched source is re-challenged on an interval and
 * loses the latch if it stops proving (consent freshness).
 *
 * Silence toward strangers: a source is challenged only when it has shown it knows something,
 * a hello MAC'd under the leg key (with a counter never seen before), or media carrying the
 * SSRC the leg is sending right now (the rebinding case: the same stream from a new mapping).
 * A blind sprayer of the port range gets no reply at all.
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
    this.verifier = new ChallengeVerifier({ legId: opts.legId, key: opts.key, nonceTtlMs: opts.nonceTtlMs, replay: opts.replay });
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
      const verdict = this.verifier.checkHello(msg);
      if (!verdict.ok) return this.host.drop('hello-rejected');
      if (this.host.latched && sameEndpoint(this.host.latched, from)) this.opts.onPathReport?.((verdict.flags & HELLO_FLAG_DIRECT) !== 0);
      if (!this.challenge(from, buf.length, now, msg.txid)) this.host.drop('rate-limited');
      return;
    }
    if (msg.kind !== 'proof') return this.host.drop('stun-invalid');
    const verdict = this.verifier.verify(msg, from);
    if (!verdict.ok) return this.host.drop('proof-rejected');
    this.lastProofAt = now;
    if (!this.host.latched || !sameEndpoint(this.host.latched, verdict.source)) this.host.latchTo(verdict.source, now);
    this.host.reply(verdict.success, verdict.source);
    this.opts.onProved?.(verdict.source);
  }

  /** When the leg last proved its key: a key leg whose media went direct is alive as long as this is fresh. */
  get provedAt(): number {
    return this.lastProofAt;
  }

  onForeignMedia(buf: Buffer, from: Endpoint, cls: string, now: number): boolean {
    const ssrc = senderSsrc(buf, cls);
    if (ssrc !== null && this.opts.knownSsrcs().includes(ssrc)) this.challenge(from, buf.length, now);
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

/** The SSRC a packet names as its sender: RTP's header field, or an RTCP packet's sender SSRC. */
function senderSsrc(buf: Buffer, cls: string): number | null {
  if (cls === 'rtp') return buf.length >= 12 ? buf.readUInt32BE(8) : null;
  if (cls === 'rtcp') return buf.length >= 8 ? buf.readUInt32BE(4) : null;
  return null;
}
