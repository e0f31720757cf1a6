/**
 * One client's side of direct media (docs/direct-media.md): hole punching toward the peer the
 * relay named, proving the pair key both ways, and consent checks on the direct path.
 *
 * Both clients run the challenge protocol against each other under the pair key, each as
 * prover of its own side (`<pairId>-a` or `-b`) and verifier of the other's; the side names keep
 * one direction's messages from being reflected into the other. Media may go direct only when
 * both directions are proved: our verifier accepted the peer's proof from a source (where we
 * send), and the peer confirmed ours with a SUCCESS from that same source (it accepts us). A
 * source that has shown nothing gets no reply: a hello is answered only under a valid MAC and an
 * unseen counter, exactly as on the relay.
 */
import { EventEmitter } from 'node:events';
import { AddressPolicy } from '../media/address-policy';
import {
  ChallengeProver,
  ChallengeVerifier,
  sameEndpoint,
  sealedSize,
  type Endpoint,
  type Hello,
  type LatchMessage,
  type PairGrant,
  type Sealed,
} from '../media/challenge';
import { PerSourceRateLimiter } from '../media/rate-limiter';

export interface PeerPathTiming {
  /** Between hellos while punching: paced, so a burst is a trickle, not a flood. */
  probeIntervalMs: number;
  /** Hellos per attempt; after that the path waits `retryAfterMs` before trying again. */
  probesPerAttempt: number;
  retryAfterMs: number;
  /** Between consent hellos while media goes direct. */
  consentIntervalMs: number;
  /** No SUCCESS from the peer for this long: the direct path is gone, media goes back to the relay. */
  consentTimeoutMs: number;
}

export const DEFAULT_PEER_PATH_TIMING: PeerPathTiming = {
  probeIntervalMs: 50,
  probesPerAttempt: 40,
  retryAfterMs: 5000,
  consentIntervalMs: 150,
  consentTimeoutMs: 700,
};

export interface PeerPathStats {
  path: 'relay' | 'direct';
  /** When the current path began (ms since the epoch). */
  since: number;
  switches: number;
  attempts: number;
  probesSent: number;
  /** The peer's source we send to while direct (its NAT's mapping toward us). */
  peer: Endpoint | null;
  /** The peer's mapping the relay gave us. */
  rendezvous: Endpoint | null;
  /** From the first rendezvous to the first moment both directions were proved. */
  firstDirectMs: number | null;
  lastFallback: string | null;
}

export interface PeerPathEvents {
  direct: [peer: Endpoint];
  relay: [reason: string];
}

/** Never toward unspecified, multicast or broadcast addresses, whatever a rendezvous says. */
const destinations = new AddressPolicy({ allowLoopback: true, isRelayEndpoint: () => false });

export class PeerPath extends EventEmitter<PeerPathEvents> {
  private readonly now: () => number;
  private grant: PairGrant;
  private prover: ChallengeProver;
  private verifier: ChallengeVerifier;
  private readonly limiter = new PerSourceRateLimiter(20);
  private readonly timing: PeerPathTiming;
  /** Where the peer proved itself from: where direct media goes. */
  private peerSource: Endpoint | null = null;
  /** Where the peer's last SUCCESS for our proof came from, and when. */
  private acceptedBy: Endpoint | null = null;
  private acceptedAt = 0;
  private direct = false;
  private sinceAt: number;
  private switches = 0;
  private attempts = 0;
  private probesSent = 0;
  private probesLeft = 0;
  private nextProbeAt = 0;
  private lastConsentAt = 0;
  private readonly grantedAt: number;
  private firstDirectMs: number | null = null;
  private lastFallback: string | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    grant: PairGrant,
    private readonly send: (buf: Buffer, to: Endpoint) => void,
    opts: { timing?: Partial<PeerPathTiming>; now?: () => number } = {},
  ) {
    super();
    this.now = opts.now ?? Date.now;
    this.timing = { ...DEFAULT_PEER_PATH_TIMING, ...opts.timing };
    this.grant = grant;
    [this.prover, this.verifier] = this.roles(grant);
    this.sinceAt = this.grantedAt = this.now();
  }

  /** Starts punching at once, and keeps a timer for pacing, consent and retries. */
  start(tickMs = 25): void {
    this.attempt();
    this.tick();
    this.timer = setInterval(() => this.tick(), tickMs);
    this.timer.unref();
  }

  /**
   * A later rendezvous: a new pair key means a new pair (the other leg changed hands); a new
   * mapping for the same pair means the peer rebound, and we punch toward it at once.
   */
  update(grant: PairGrant): void {
    const newPair = grant.pairId !== this.grant.pairId || !grant.pairKey.equals(this.grant.pairKey);
    const moved = !sameEndpoint(grant.peer, this.grant.peer);
    this.grant = grant;
    if (newPair) {
      [this.prover, this.verifier] = this.roles(grant);
      this.peerSource = null;
      this.acceptedBy = null;
      this.fallBack('new pair');
    }
    if (newPair || moved || !this.direct) this.attempt();
  }

  /** Where media should go directly now, or null for the relay. */
  get target(): Endpoint | null {
    return this.direct ? this.peerSource : null;
  }

  /** Is RTP from `from` our proved peer? (Only then is it accepted, besides the relay's.) */
  accepts(from: Endpoint): boolean {
    return this.peerSource !== null && sameEndpoint(this.peerSource, from);
  }

  /**
   * A STUN-framed message from anywhere but the relay. Returns true if it belonged to this
   * pair (whatever became of it), false if it is not ours at all.
   */
  onMessage(msg: LatchMessage, from: Endpoint, size: number): boolean {
    const theirs = this.verifier.legId;
    if (msg.legId === theirs) {
      if (msg.kind === 'hello') this.onHello(msg, from, size);
      else if (msg.kind === 'proof') this.onProof(msg, from);
      return true;
    }
    if (msg.legId !== this.mine) return false;
    const event = this.prover.onMessage(msg, from);
    if (event.type === 'proof-sent') this.transmit(event.reply, from);
    else if (event.type === 'latched') {
      this.acceptedBy = { ...from };
      this.acceptedAt = this.now();
      this.evaluate();
    }
    return true;
  }

  tick(now = this.now()): void {
    if (this.direct) {
      if (now - this.acceptedAt > this.timing.consentTimeoutMs) {
        this.fallBack(`no consent from the peer for ${now - this.acceptedAt} ms`);
        this.attempt();
      } else if (now - this.lastConsentAt >= this.timing.consentIntervalMs && this.peerSource) {
        this.lastConsentAt = now;
        this.hello(this.peerSource);
      }
      return;
    }
    if (this.probesLeft > 0 && now >= this.nextProbeAt) {
      this.probesLeft--;
      this.nextProbeAt = now + this.timing.probeIntervalMs;
      for (const to of this.targets()) this.hello(to);
      if (this.probesLeft === 0) this.nextProbeAt = now + this.timing.retryAfterMs;
    } else if (this.probesLeft === 0 && now >= this.nextProbeAt) {
      this.attempt();
    }
  }

  stats(): PeerPathStats {
    return {
      path: this.direct ? 'direct' : 'relay',
      since: this.sinceAt,
      switches: this.switches,
      attempts: this.attempts,
      probesSent: this.probesSent,
      peer: this.peerSource ? { ...this.peerSource } : null,
      rendezvous: { ...this.grant.peer },
      firstDirectMs: this.firstDirectMs,
      lastFallback: this.lastFallback,
    };
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.direct = false;
    this.removeAllListeners();
  }

  private get mine(): string {
    return `${this.grant.pairId}-${this.grant.side}`;
  }

  private roles(grant: PairGrant): [ChallengeProver, ChallengeVerifier] {
    const other = grant.side === 'a' ? 'b' : 'a';
    return [
      new ChallengeProver(`${grant.pairId}-${grant.side}`, grant.pairKey),
      new ChallengeVerifier({ legId: `${grant.pairId}-${other}`, key: grant.pairKey, nonceTtlMs: 2000 }),
    ];
  }

  private attempt(): void {
    this.attempts++;
    this.probesLeft = this.timing.probesPerAttempt;
    this.nextProbeAt = 0;
  }

  /** The mapping the relay saw, and, behind a symmetric NAT, the peer-reflexive source it proved from. */
  private targets(): Endpoint[] {
    const out = [this.grant.peer];
    if (this.peerSource && !sameEndpoint(this.peerSource, this.grant.peer)) out.push(this.peerSource);
    return out;
  }

  private hello(to: Endpoint): void {
    this.probesSent++;
    this.transmit(this.prover.hello(), to);
  }

  private onHello(msg: Hello, from: Endpoint, size: number): void {
    if (!this.verifier.checkHello(msg).ok) return;
    // Never more bytes back than came in, and a few a second per IP at most.
    if (sealedSize(this.verifier.legId, from.address) > size || !this.limiter.allow(from.address, this.now())) return;
    this.transmit(this.verifier.challenge(from, msg.txid), from);
  }

  private onProof(msg: Sealed, from: Endpoint): void {
    const verdict = this.verifier.verify(msg, from);
    if (!verdict.ok) return;
    const moved = this.peerSource !== null && !sameEndpoint(this.peerSource, verdict.source);
    this.peerSource = verdict.source;
    this.transmit(verdict.success, from);
    // Say hello where it proved from: behind a symmetric NAT that is not the mapping the relay saw.
    if (moved || !this.direct) this.hello(verdict.source);
    this.evaluate();
  }

  /** Direct once both directions are proved on one source, and consent is fresh. */
  private evaluate(): void {
    const now = this.now();
    const ready = this.peerSource !== null && this.acceptedBy !== null && sameEndpoint(this.peerSource, this.acceptedBy) &&
      now - this.acceptedAt <= this.timing.consentTimeoutMs;
    if (!ready || this.direct) return;
    this.direct = true;
    this.switches++;
    this.sinceAt = now;
    this.lastConsentAt = now;
    this.probesLeft = 0;
    if (this.firstDirectMs === null) this.firstDirectMs = now - this.grantedAt;
    this.emit('direct', { ...this.peerSource! });
  }

  private fallBack(reason: string): void {
    if (!this.direct) return;
    this.direct = false;
    this.switches++;
    this.sinceAt = this.now();
    this.lastFallback = reason;
    this.emit('relay', reason);
  }

  private transmit(buf: Buffer, to: Endpoint): void {
    if (destinations.check(to.address, to.port)) return;
    this.send(buf, to);
  }
}
