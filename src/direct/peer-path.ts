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
 *
 * When plain punching has not got through after a moment, both sides also try the birthday
 * approach for symmetric NATs (docs/direct-media.md): each opens extra sockets that send toward
 * the peer's mapping (on a symmetric NAT, every one of them is a new mapping the peer could hit)
 * while its main socket probes random ports of the peer's address (which hits one of the peer's
 * extra mappings, if the peer is the symmetric side). Both within a fixed budget, once per pair.
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
import { isPrivateAddress } from '../nat/private-address';

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
  /** Not direct this long after the rendezvous: start the birthday attempt (if sockets can be opened). */
  birthdayAfterMs: number;
  /** Extra sockets, each a new mapping on a symmetric NAT. */
  birthdaySockets: number;
  /** Hellos to random ports of the peer's address, in all, and per tick of the timer. */
  birthdayProbes: number;
  birthdayProbesPerTick: number;
  /** Between the extra sockets' hellos toward the peer, which keep their mappings open. */
  birthdayRefreshMs: number;
}

export const DEFAULT_PEER_PATH_TIMING: PeerPathTiming = {
  probeIntervalMs: 50,
  probesPerAttempt: 40,
  retryAfterMs: 5000,
  consentIntervalMs: 150,
  consentTimeoutMs: 700,
  birthdayAfterMs: 500,
  // 256 mappings against 2048 probes over ~64k ports: 1 - (1 - 256/64512)^2048 ≈ 99.97 %, in
  // about 3.2 s at 16 probes a 25 ms tick. Once per pair: some 3,000 datagrams of 172 bytes.
  birthdaySockets: 256,
  birthdayProbes: 2048,
  birthdayProbesPerTick: 16,
  birthdayRefreshMs: 1000,
};

/** Birthday attempts per pair: the first, and after a direct path it found is lost, two more. */
const MAX_BIRTHDAYS = 3;

/** Ports a NAT allocates from (Linux uses 1024-65535 for --random-fully). */
const MIN_PORT = 1024;
const MAX_PORT = 65535;

/**
 * Sockets the owner opens on request for the birthday attempt. Socket 0 is the media socket;
 * extra sockets get other ids, and whatever arrives on them comes back through onMessage with
 * that id.
 */
export interface SocketPool {
  open(count: number): Promise<number[]>;
  /** Closes every extra socket but `keep` (the one the direct path now uses, if any). */
  close(keep: number | null): void;
}

export interface BirthdayStats {
  tried: boolean;
  sockets: number;
  probes: number;
  /** The direct path was found through an extra socket or a random-port probe. */
  succeeded: boolean;
}

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
  birthday: BirthdayStats;
  /** The socket direct media uses: 0 is the media socket, others were opened for the birthday attempt. */
  via: number;
}

export interface PeerPathEvents {
  direct: [peer: Endpoint];
  relay: [reason: string];
}

/** One birthday attempt: its extra sockets, the random-port probes still to send, and its timers. */
interface Birthday {
  state: 'idle' | 'opening' | 'running' | 'done';
  extra: number[];
  probesLeft: number;
  refreshAt: number;
  endsAt: number;
  /** Random-port probes sent by all attempts of this pair so far. */
  probes: number;
}

const idleBirthday = (probes = 0): Birthday => ({ state: 'idle', extra: [], probesLeft: 0, refreshAt: 0, endsAt: 0, probes });

/** Never toward unspecified, multicast or broadcast addresses, whatever a rendezvous says. */
const destinations = new AddressPolicy({ allowLoopback: true, isRelayEndpoint: () => false });

export class PeerPath extends EventEmitter<PeerPathEvents> {
  private readonly now: () => number;
  private readonly random: () => number;
  private grant: PairGrant;
  private prover: ChallengeProver;
  private verifier: ChallengeVerifier;
  private readonly limiter = new PerSourceRateLimiter(20);
  private readonly timing: PeerPathTiming;
  /** Where the peer proved itself from, and on which of our sockets: where direct media goes. */
  private peerSource: Endpoint | null = null;
  private peerVia = 0;
  /** Where (and on which socket) the peer's last SUCCESS for our proof came from, and when. */
  private acceptedBy: Endpoint | null = null;
  private acceptedVia = 0;
  private acceptedAt = 0;
  private direct = false;
  private sinceAt: number;
  private switches = 0;
  private attempts = 0;
  private probesSent = 0;
  private probesLeft = 0;
  private nextProbeAt = 0;
  private lastConsentAt = 0;
  private grantedAt: number;
  private firstDirectMs: number | null = null;
  private lastFallback: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly sockets: SocketPool | null;
  private birthday: Birthday = idleBirthday();
  private birthdayDueAt = 0;
  private birthdayRuns = 0;

  constructor(
    grant: PairGrant,
    private readonly send: (buf: Buffer, to: Endpoint, via: number) => void,
    opts: { timing?: Partial<PeerPathTiming>; now?: () => number; sockets?: SocketPool; random?: () => number } = {},
  ) {
    super();
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.sockets = opts.sockets ?? null;
    this.timing = { ...DEFAULT_PEER_PATH_TIMING, ...opts.timing };
    this.grant = grant;
    [this.prover, this.verifier] = this.roles(grant);
    this.sinceAt = this.grantedAt = this.now();
    this.birthdayDueAt = this.grantedAt + this.timing.birthdayAfterMs;
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
      this.endBirthday();
      this.birthday = idleBirthday();
      this.grantedAt = this.now();
      this.birthdayRuns = 0;
      this.birthdayDueAt = this.grantedAt + this.timing.birthdayAfterMs;
    }
    if (newPair || moved || !this.direct) this.attempt();
  }

  /** Where media should go directly now, or null for the relay. */
  get target(): Endpoint | null {
    return this.direct ? this.peerSource : null;
  }

  /** The socket direct media leaves from (and arrives on). */
  get via(): number {
    return this.peerVia;
  }

  /** Is RTP from `from`, on socket `via`, our proved peer? (Only then is it accepted, besides the relay's.) */
  accepts(from: Endpoint, via = 0): boolean {
    return this.peerSource !== null && via === this.peerVia && sameEndpoint(this.peerSource, from);
  }

  /**
   * A STUN-framed message from anywhere but the relay. Returns true if it belonged to this
   * pair (whatever became of it), false if it is not ours at all.
   */
  onMessage(msg: LatchMessage, from: Endpoint, size: number, via = 0): boolean {
    const theirs = this.verifier.legId;
    if (msg.legId === theirs) {
      if (msg.kind === 'hello') this.onHello(msg, from, size, via);
      else if (msg.kind === 'proof') this.onProof(msg, from, via);
      return true;
    }
    if (msg.legId !== this.mine) return false;
    const event = this.prover.onMessage(msg, from);
    if (event.type === 'proof-sent') this.transmit(event.reply, from, via);
    else if (event.type === 'latched') {
      this.acceptedBy = { ...from };
      this.acceptedVia = via;
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
        this.hello(this.peerSource, this.peerVia);
      }
      return;
    }
    this.birthdayTick(now);
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
      birthday: { tried: this.birthday.state !== 'idle', sockets: this.birthday.extra.length, probes: this.birthday.probes, succeeded: this.direct && this.wonByBirthday },
      via: this.peerVia,
    };
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.direct = false;
    this.endBirthday();
    this.removeAllListeners();
  }

  /** Direct through an extra socket, or toward a port the relay never saw: only the birthday attempt finds those. */
  private get wonByBirthday(): boolean {
    return this.peerVia !== 0 || (this.peerSource !== null && this.birthday.state !== 'idle' && !sameEndpoint(this.peerSource, this.grant.peer));
  }

  // ---- the birthday attempt -------------------------------------------------------------

  private birthdayTick(now: number): void {
    const b = this.birthday;
    if (b.state === 'idle') {
      // Random ports of a loopback or LAN address are other people's services, not a NAT's
      // mappings: the birthday attempt is only for a peer on a public address.
      if (this.sockets && !isPrivateAddress(this.grant.peer.address) && now >= this.birthdayDueAt) this.startBirthday();
      return;
    }
    if (b.state !== 'running') return;
    if (now >= b.refreshAt) {
      b.refreshAt = now + this.timing.birthdayRefreshMs;
      for (const via of b.extra) this.hello(this.grant.peer, via);
    }
    for (let i = 0; i < this.timing.birthdayProbesPerTick && b.probesLeft > 0; i++) {
      b.probesLeft--;
      b.probes++;
      this.hello({ address: this.grant.peer.address, port: MIN_PORT + Math.floor(this.random() * (MAX_PORT - MIN_PORT + 1)) });
    }
    // Budget spent and the last answers given time to arrive: the extra sockets go.
    if (b.probesLeft === 0 && b.endsAt === 0) b.endsAt = now + this.timing.birthdayRefreshMs;
    if (b.endsAt !== 0 && now >= b.endsAt) this.endBirthday();
  }

  private startBirthday(): void {
    const b = this.birthday;
    b.state = 'opening';
    this.birthdayRuns++;
    this.sockets!.open(this.timing.birthdaySockets).then(
      (ids) => {
        if (b !== this.birthday || b.state !== 'opening') return this.sockets!.close(null);
        b.extra = ids;
        b.state = 'running';
        b.probesLeft = this.timing.birthdayProbes;
        b.refreshAt = 0;
      },
      () => {
        b.state = 'done';
      },
    );
  }

  /** Closes the extra sockets, keeping the one direct media now uses. */
  private endBirthday(): void {
    const b = this.birthday;
    if (b.state !== 'running' && b.state !== 'opening') return;
    b.state = 'done';
    const keep = this.direct && this.peerVia !== 0 ? this.peerVia : null;
    this.sockets?.close(keep);
    b.extra = keep === null ? [] : [keep];
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

  private hello(to: Endpoint, via = 0): void {
    this.probesSent++;
    this.transmit(this.prover.hello(), to, via);
  }

  private onHello(msg: Hello, from: Endpoint, size: number, via: number): void {
    if (!this.verifier.checkHello(msg).ok) return;
    // Never more bytes back than came in, and a few a second per IP at most.
    if (sealedSize(this.verifier.legId, from.address) > size || !this.limiter.allow(from.address, this.now())) return;
    this.transmit(this.verifier.challenge(from, msg.txid), from, via);
  }

  private onProof(msg: Sealed, from: Endpoint, via: number): void {
    const verdict = this.verifier.verify(msg, from);
    if (!verdict.ok) return;
    const moved = this.peerSource !== null && (!sameEndpoint(this.peerSource, verdict.source) || this.peerVia !== via);
    this.peerSource = verdict.source;
    this.peerVia = via;
    this.transmit(verdict.success, from, via);
    // Say hello where it proved from: behind a symmetric NAT that is not the mapping the relay saw.
    if (moved || !this.direct) this.hello(verdict.source, via);
    this.evaluate();
  }

  /** Direct once both directions are proved on one source and one socket, and consent is fresh. */
  private evaluate(): void {
    const now = this.now();
    const ready = this.peerSource !== null && this.acceptedBy !== null && sameEndpoint(this.peerSource, this.acceptedBy) &&
      this.peerVia === this.acceptedVia && now - this.acceptedAt <= this.timing.consentTimeoutMs;
    if (!ready || this.direct) return;
    this.direct = true;
    this.switches++;
    this.sinceAt = now;
    this.lastConsentAt = now;
    this.probesLeft = 0;
    if (this.firstDirectMs === null) this.firstDirectMs = now - this.grantedAt;
    this.endBirthday();
    this.emit('direct', { ...this.peerSource! });
  }

  private fallBack(reason: string): void {
    if (!this.direct) return;
    this.direct = false;
    this.switches++;
    this.sinceAt = this.now();
    this.lastFallback = reason;
    // A path only the birthday attempt could find is lost to a rebinding: plain punching will not find it again.
    if (this.birthday.state === 'done' && this.birthdayRuns < MAX_BIRTHDAYS) {
      this.birthday = idleBirthday(this.birthday.probes);
      this.birthdayDueAt = this.now() + this.timing.birthdayAfterMs;
    }
    this.emit('relay', reason);
  }

  private transmit(buf: Buffer, to: Endpoint, via = 0): void {
    if (destinations.check(to.address, to.port)) return;
    this.send(buf, to, via);
  }
}
