import { EventEmitter } from 'node:events';
import { isIPv6 } from 'node:net';
import type { MediaConfig } from '../config/schema';
import { silentLogger, type Logger } from '../log';
import { parseSdp, rewriteSdp, type SessionDescription } from '../sdp/session';
import { isPrivateAddress } from '../nat/private-address';
import { AddressPolicy } from './address-policy';
import { Call, Leg, Stream, legStats, type LegHints, type LegOptions, type LegStats } from './call';
import { DirectPair, type PairEnd } from '../direct/rendezvous';
import { GuardedLatch } from './latch/guarded-latch';
import { KeyLatch } from './latch/key-latch';
import { SourceSpread } from './latch/source-spread';
import type { DropReason, Latch } from './latch/latch';
import { PortPool, PortPoolExhausted } from './port-pool';
import { RelayPort, emptyCounters, type PortCounters } from './relay-port';
import type { PortShare } from './cluster/port-shares';

export class RelayError extends Error {
  override name = 'RelayError';
  constructor(readonly code: 'unknown-call' | 'unknown-tag' | 'insecure-key-transport' | 'bad-request', message: string) {
    super(message);
  }
}

export interface OfferRequest {
  callId: string;
  fromTag: string;
  toTag?: string;
  sdp: string;
  /** Options for a leg apply when the leg is created; later offers may update the signalling address. */
  offerer?: Partial<LegOptions>;
  answerer?: Partial<LegOptions>;
}

export interface AnswerRequest {
  callId: string;
  fromTag: string;
  toTag: string;
  sdp: string;
  answerer?: LegHints;
}

/** One leg of one call, named by its stable leg id (tags change as forks answer). */
export interface LegRef {
  callId: string;
  legId: string;
}

export interface MediaTimeout {
  callId: string;
  tag: string | null;
  streamIndex: number;
  idleMs: number;
}

export interface RelayEvents {
  'media-timeout': [MediaTimeout];
  latch: [{ callId: string; tag: string | null; port: number; source: { address: string; port: number } | null; policy: string }];
}

const DEFAULT_LEG: LegOptions = { policy: 'guarded', secure: false };
const BIND_ATTEMPTS = 8;

/**
 * The media relay, driven by signalling through offer/answer/update/delete. Every call has
 * two legs; each m-line of each leg owns an RTP and an RTCP port the leg sends to.
 */
export class Relay extends EventEmitter<RelayEvents> {
  readonly pool: PortPool;
  readonly advertisedAddress: string;
  /** Calls are held in memory only: none from before this moment exists here (ng `ping` says so, see relay-pool/nodes.ts). */
  readonly startedAt = Date.now();
  readonly drops: Record<DropReason, number> = {
    malformed: 0,
    'unlatched-source': 0,
    'outside-learning-window': 0,
    'unexpected-source-ip': 0,
    'ambiguous-source': 0,
    'spraying-source': 0,
    'stun-invalid': 0,
    'unknown-leg': 0,
    'proof-rejected': 0,
    'hello-rejected': 0,
    'rate-limited': 0,
    'no-destination': 0,
    'internal-error': 0,
  };
  /** Counters of ports already closed, so totals survive call deletion. */
  readonly retired: PortCounters = emptyCounters();
  latchEvents = 0;
  private retiredNoDestination = 0;
  private retiredRendezvous = 0;
  private readonly family: 4 | 6;
  private readonly calls = new Map<string, Call>();
  /** Which streams each unlatched source has sent to: how guarded latching tells a sprayer from a phone. */
  private readonly spread = new SourceSpread();
  private readonly policy: AddressPolicy;
  private readonly timer: NodeJS.Timeout;
  private readonly log: Logger;

  constructor(readonly config: MediaConfig, opts: { logger?: Logger } = {}) {
    super();
    this.log = opts.logger ?? silentLogger;
    this.pool = new PortPool(config.portMin, config.portMax);
    this.advertisedAddress = config.advertisedAddress ?? config.interface;
    this.family = isIPv6(config.interface) ? 6 : 4;
    const own = new Set([config.interface, this.advertisedAddress]);
    this.policy = new AddressPolicy({
      allowLoopback: config.allowLoopbackPeers,
      isRelayEndpoint: (address, port) => own.has(address) && this.isOwnPort(port),
    });
    const tickMs = Math.max(50, Math.min(1000, config.key.rechallengeIntervalMs / 2));
    this.timer = setInterval(() => this.tick(Date.now()), tickMs);
    this.timer.unref();
  }

  get callCount(): number {
    return this.calls.size;
  }

  /** Calls whose clients all say their media goes straight to each other. */
  get directCallCount(): number {
    let n = 0;
    for (const call of this.calls.values()) if (call.legs.length > 0 && call.legs.every((l) => l.reportedDirect)) n++;
    return n;
  }

  /** Rendezvous messages sent so far (each tells one client where its peer is). */
  get rendezvousSent(): number {
    return this.retiredRendezvous + [...this.calls.values()].reduce((n, c) => n + pairsOf(c).reduce((m, p) => m + p.rendezvousSent, 0), 0);
  }

  callIds(): string[] {
    return [...this.calls.keys()];
  }

  /** An offer from `fromTag`; returns the SDP to pass to the other side. */
  async offer(req: OfferRequest): Promise<{ sdp: string }> {
    validateIds(req.callId, req.fromTag);
    const session = parseSdp(req.sdp);
    const existing = this.calls.get(req.callId);
    const call = existing ?? new Call(req.callId);
    let offerer = call.leg(req.fromTag);
    let answerer = offerer ? call.other(offerer) : undefined;
    if (existing && !offerer) throw new RelayError('unknown-tag', `from-tag ${req.fromTag} is not a leg of call ${req.callId}`);
    const answererOpts = { ...DEFAULT_LEG, ...req.answerer };
    if (!answerer) assertKeyTransport(answererOpts);
    const offererOpts = { ...DEFAULT_LEG, ...req.offerer };
    if (!offerer) assertKeyTransport(offererOpts);
    const created: Leg[] = [];
    if (!offerer) created.push((offerer = new Leg(req.fromTag, offererOpts)));
    if (!answerer) created.push((answerer = new Leg(req.toTag ?? null, answererOpts)));
    const added = await this.allocate(call, offerer, answerer, session);
    if (!existing) {
      call.legs.push(...created);
      this.calls.set(call.id, call);
    }
    if (req.offerer && !offerer.adopted) offerer.hint(req.offerer);
    this.describe(offerer, session);
    reopenLearning(offerer);
    this.log.debug({ callId: call.id, fromTag: req.fromTag, streams: session.media.length, newPorts: added }, 'offer');
    return { sdp: this.sdpFor(answerer, req.sdp, session) };
  }

  /** The answer from `toTag` to `fromTag`'s offer; returns the SDP to pass to the offerer. */
  async answer(req: AnswerRequest): Promise<{ sdp: string }> {
    validateIds(req.callId, req.fromTag, req.toTag);
    const session = parseSdp(req.sdp);
    const call = this.calls.get(req.callId);
    if (!call) throw new RelayError('unknown-call', `no call ${req.callId}`);
    const offerer = call.leg(req.fromTag);
    if (!offerer) throw new RelayError('unknown-tag', `from-tag ${req.fromTag} is not a leg of call ${req.callId}`);
    const answerer = call.other(offerer)!;
    // A later answer with another to-tag is another fork winning: the last answer decides.
    answerer.tag = req.toTag;
    if (req.answerer && !answerer.adopted) answerer.hint(req.answerer);
    session.media.forEach((m, i) => {
      if (m.port === 0) this.disable(offerer, answerer, i);
    });
    this.describe(answerer, session);
    // The offerer muxes RTCP only if it offered to and the answer (which we pass on) accepted.
    for (const s of offerer.streams) {
      if (!s?.sdp || !s.partner) continue;
      s.rtcpMux = s.sdp.rtcpMux && s.partner.rtcpMux;
      s.partner.wire();
    }
    reopenLearning(offerer, answerer);
    this.log.debug({ callId: call.id, toTag: req.toTag }, 'answer');
    return { sdp: this.sdpFor(offerer, req.sdp, session) };
  }

  /** A signalling event with no SDP (e.g. a refreshed registration): re-open learning. */
  update(req: { callId: string; tag: string; signallingAddress?: string }): void {
    const call = this.calls.get(req.callId);
    if (!call) throw new RelayError('unknown-call', `no call ${req.callId}`);
    const leg = call.leg(req.tag);
    if (!leg) throw new RelayError('unknown-tag', `tag ${req.tag} is not a leg of call ${req.callId}`);
    if (req.signallingAddress) leg.signallingAddress = req.signallingAddress;
    reopenLearning(leg);
  }

  /** Ends a call and returns its ports to the pool at once. Returns its last stats. */
  delete(req: { callId: string }): LegStats[] | null {
    const call = this.calls.get(req.callId);
    if (!call) return null;
    const stats = call.legs.map(legStats);
    for (const p of pairsOf(call)) this.retiredRendezvous += p.rendezvousSent;
    for (const leg of call.legs) for (const s of leg.streams) if (s) this.release(s);
    this.calls.delete(call.id);
    this.log.debug({ callId: call.id }, 'delete');
    return stats;
  }

  stats(callId: string): LegStats[] | null {
    const call = this.calls.get(callId);
    return call ? call.legs.map(legStats) : null;
  }

  /** Whether the call's media timed out ('media-timeout' fired): the call stays until deleted. */
  timedOut(callId: string): boolean {
    return this.calls.get(callId)?.timedOut ?? false;
  }

  /** Live counters, closed ports included. */
  totals(): PortCounters {
    const t = { ...this.retired };
    for (const call of this.calls.values())
      for (const leg of call.legs)
        for (const p of leg.ports()) {
          const c = p.counters();
          for (const k of Object.keys(t) as Array<keyof PortCounters>) t[k] += c[k];
        }
    return t;
  }

  /** Drops by reason, including those the fast path counted (media with nowhere to go). */
  dropCounts(): Record<DropReason, number> {
    let noDestination = this.retiredNoDestination;
    for (const call of this.calls.values()) for (const leg of call.legs) for (const p of leg.ports()) noDestination += p.socket.stats().noDestination;
    return { ...this.drops, 'no-destination': this.drops['no-destination'] + noDestination };
  }

  *legs(): Generator<{ callId: string; stats: LegStats }> {
    for (const call of this.calls.values()) for (const leg of call.legs) yield { callId: call.id, stats: legStats(leg) };
  }

  // ---- lone legs: a leg outside any two-legged call (a room participant, src/rooms) -------

  /**
   * Opens ports for every enabled m-line of `sdp` on a leg that belongs to no call: the same
   * ports, latches and address rules as a call's leg, but its accepted media goes wherever its
   * owner hooks its sockets (nowhere until then). The owner ticks and closes it.
   */
  async openLoneLeg(ownerId: string, leg: Leg, sdp: string): Promise<SessionDescription> {
    validateIds(ownerId);
    assertKeyTransport({ policy: leg.policy, secure: leg.secure });
    const session = parseSdp(sdp);
    const call = new Call(ownerId);
    const opened: Stream[] = [];
    try {
      for (const m of session.media) {
        if (m.port === 0 || leg.streams[m.index]) continue;
        const s = await this.openStream(call, leg, m.index);
        leg.streams[m.index] = s;
        opened.push(s);
      }
    } catch (err) {
      for (const s of opened) this.release(s);
      throw err;
    }
    this.describeLoneLeg(leg, session);
    return session;
  }

  /** A lone leg's new SDP (a re-INVITE): where it is now; its latches may learn again. */
  describeLoneLeg(leg: Leg, session: SessionDescription): void {
    this.describe(leg, session);
    reopenLearning(leg);
  }

  /** The lone leg's housekeeping (re-challenges, consent), which tick() does for calls' legs. */
  tickLoneLeg(leg: Leg, now: number): void {
    for (const p of leg.ports()) p.latch.tick(now);
  }

  closeLoneLeg(leg: Leg): void {
    for (const s of leg.streams) if (s) this.release(s);
  }

  // ---- hairpin: the PBX sends one of our offers back through us to a client --------------

  /** The leg whose own RTP ports every enabled m-line of `sdp` names, if there is one. */
  legAddressedBy(sdp: string): LegRef | null {
    const media = parseSdp(sdp).media.filter((m) => m.port !== 0);
    if (!media.every((m) => this.isOwnAddress(m.address))) return null;
    for (const call of this.calls.values())
      for (const leg of call.legs)
        if (media.every((m) => leg.streams[m.index]?.rtp.port === m.port)) return { callId: call.id, legId: leg.legId };
    return null;
  }

  /**
   * Whether every enabled m-line of `sdp` names one of this relay's addresses on a port inside
   * one of `ranges`. With sip.processes > 1 the edge's other processes run relays of their own
   * on the same address, each on its slice of the media range: an offer naming a port there is
   * the edge's own media, though this relay holds no leg on it (legAddressedBy finds none).
   */
  addressedWithin(sdp: string, ranges: readonly PortShare[]): boolean {
    return parseSdp(sdp).media.filter((m) => m.port !== 0)
      .every((m) => this.isOwnAddress(m.address) && ranges.some((r) => m.port >= r.portMin && m.port <= r.portMax));
  }

  /**
   * Hands an offered, not yet answered leg to the client the PBX routed it to, so the call is
   * anchored once: that client sends to, and is latched on, the leg's existing ports. Returns
   * the SDP for the client (the offer with its key, if it gets one).
   */
  adopt(ref: LegRef, sdp: string, opts: LegOptions): { sdp: string } {
    const leg = this.legOf(ref);
    // A leg answered with one of this relay's own ports is as good as unanswered: the relay
    // never sends to its own ports, so no media could flow there. That is the answer of a
    // stand-in on this relay for a hairpin whose owner moved while the client rang
    // (src/sip/call-session.ts). Address and port both: a phone on the relay's host is real.
    if (leg.adopted || leg.streams.some((s) => s?.sdp && !this.isOwnEndpoint(s.sdp.address, s.sdp.port))) throw new RelayError('bad-request', `leg ${ref.legId} is already answered or adopted`);
    assertKeyTransport(opts);
    leg.assume(opts);
    leg.adopted = true;
    forgetPairs(leg);
    for (const p of leg.ports()) p.relatch();
    this.log.info({ callId: ref.callId, legId: ref.legId, policy: opts.policy }, 'leg adopted by hairpinned call');
    return this.towardAdopter(ref, sdp);
  }

  /** SDP from the PBX for an adopted leg (which names the leg itself), as its client should see it. */
  towardAdopter(ref: LegRef, sdp: string): { sdp: string } {
    const leg = this.legOf(ref);
    return { sdp: this.sdpFor(leg, sdp, parseSdp(sdp)) };
  }

  /** The adopting client's own SDP (offer or answer): it becomes the leg's remote. Returns what the PBX should see. */
  describeAdopted(ref: LegRef, sdp: string, signallingAddress?: string): { sdp: string } {
    const leg = this.legOf(ref);
    const session = parseSdp(sdp);
    if (signallingAddress) leg.signallingAddress = signallingAddress;
    this.describe(leg, session);
    reopenLearning(leg);
    // Toward the PBX the leg names itself, so the call's other half, which sees this SDP come back, keeps the client as the leg's remote.
    return { sdp: this.sdpFor(leg, sdp, session, { withKey: false }) };
  }

  /** The hairpinned call failed before it was answered: the leg is the PBX's again. */
  disown(ref: LegRef, opts: LegOptions): void {
    const leg = this.calls.get(ref.callId)?.legs.find((l) => l.legId === ref.legId);
    if (!leg?.adopted) return;
    leg.assume(opts);
    leg.adopted = false;
    forgetPairs(leg);
    for (const s of leg.streams) {
      if (!s) continue;
      s.sdp = null;
      for (const p of s.ports) p.target = null;
    }
    for (const p of leg.ports()) p.relatch();
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const id of [...this.calls.keys()]) this.delete({ callId: id });
  }

  denied(address: string, port: number): string | null {
    return this.policy.check(address, port);
  }

  // ---- internals ------------------------------------------------------------------------

  /** Ensures both legs have ports for every enabled m-line; all or nothing. */
  private async allocate(call: Call, a: Leg, b: Leg, session: SessionDescription): Promise<number> {
    const fresh: Stream[] = [];
    try {
      for (const m of session.media) {
        if (m.port === 0) {
          this.disable(a, b, m.index);
          continue;
        }
        if (a.streams[m.index] && b.streams[m.index]) continue;
        const sa = a.streams[m.index] ?? (await this.openStream(call, a, m.index));
        if (!a.streams[m.index]) fresh.push(sa);
        const sb = b.streams[m.index] ?? (await this.openStream(call, b, m.index));
        if (!b.streams[m.index]) fresh.push(sb);
        sa.partner = sb;
        sb.partner = sa;
        a.streams[m.index] = sa;
        b.streams[m.index] = sb;
        sa.wire();
        sb.wire();
      }
    } catch (err) {
      for (const s of fresh) {
        s.leg.streams[s.index] = null;
        this.release(s);
      }
      throw err;
    }
    return fresh.length;
  }

  private disable(a: Leg, b: Leg, index: number): void {
    for (const leg of [a, b]) {
      const s = leg.streams[index];
      if (s) this.release(s);
      if (index < leg.streams.length) leg.streams[index] = null;
    }
  }

  /** The direct pair of a stream and its partner, minted the first time both may go direct. */
  private pairOf(call: Call, s: Stream): DirectPair | null {
    const partner = s.partner;
    if (!this.config.direct.enabled || !partner) return null;
    if (s.pair && s.pair === partner.pair) return s.pair;
    const [a, b] = (call.legs[0] === s.leg ? [s, partner] : [partner, s]).map(endOf) as [PairEnd, PairEnd];
    // Every latch and every proof of every call asks: mint a key only for a pair that can use it.
    if (!DirectPair.possible(a, b)) return null;
    s.pair = partner.pair = new DirectPair(a, b);
    return s.pair;
  }

  private legOf(ref: LegRef): Leg {
    const call = this.calls.get(ref.callId);
    if (!call) throw new RelayError('unknown-call', `no call ${ref.callId}`);
    const leg = call.legs.find((l) => l.legId === ref.legId);
    if (!leg) throw new RelayError('unknown-tag', `no leg ${ref.legId} in call ${ref.callId}`);
    return leg;
  }

  /** One of this relay's own ports on one of its addresses (where it never sends). */
  private isOwnEndpoint(address: string, port: number): boolean {
    return this.isOwnAddress(address) && this.isOwnPort(port);
  }

  /**
   * A port this relay holds. A relay worker (WorkerRelay) counts its siblings' ports too: a
   * call on another worker of the same node is still on "this relay" to everyone outside it.
   */
  protected isOwnPort(port: number): boolean {
    return this.pool.holds(port);
  }

  private isOwnAddress(address: string): boolean {
    return address === this.advertisedAddress || address === this.config.interface;
  }

  private describe(leg: Leg, session: SessionDescription): void {
    for (const m of session.media) {
      const s = leg.streams[m.index];
      if (!s) continue;
      // A hairpinned leg's own ports coming back in SDP: its adopter, not this SDP, says where it is.
      if (leg.adopted && m.port === s.rtp.port && this.isOwnAddress(m.address)) continue;
      s.describe(m);
      // A target signalling gave us that we may not send to is ignored, not an error:
      // NATed clients often advertise addresses that only latching can correct. A private
      // address from a leg whose signalling came from elsewhere is its LAN address: sending
      // there would only leak media toward some unrelated private network.
      for (const p of s.ports) {
        const t = p.target;
        if (t && (this.denied(t.address, t.port) || isBehindNat(t.address, leg.signallingAddress))) p.target = null;
      }
      // Our RTCP toward the partner depends on this leg's rtcp-mux: rewire both directions.
      s.wire();
      s.partner?.wire();
    }
  }

  private sdpFor(leg: Leg, sourceSdp: string, session: SessionDescription, opts: { withKey: boolean } = { withKey: true }): string {
    return rewriteSdp(sourceSdp, {
      address: this.advertisedAddress,
      media: session.media.map((m) => {
        const s = leg.streams[m.index];
        const partner = s?.partner;
        if (!s || !partner) return null;
        // Toward this leg we offer (or accept) rtcp-mux exactly when the other side asked for it.
        return { rtpPort: s.rtp.port, rtcpPort: s.rtcp.port, rtcpMux: partner.sdp?.rtcpMux ?? m.rtcpMux };
      }),
      keylatchValue: opts.withKey && leg.secure ? leg.keylatchAttribute() : undefined,
    });
  }

  private async openStream(call: Call, leg: Leg, index: number): Promise<Stream> {
    const ctx = {
      denied: (address: string, p: number) => this.denied(address, p),
      onDrop: (reason: DropReason) => {
        this.drops[reason]++;
      },
      onLatch: (p: RelayPort, source: { address: string; port: number } | null) => {
        this.latchEvents++;
        if (source) leg.learned(source.address);
        // A new mapping for this end is news for the other end (the proving end hears it after its success).
        const s = leg.streams[index];
        if (source && p.kind === 'rtp' && s?.partner) this.pairOf(call, s)?.tell(s.partner.leg.legId);
        this.log.info({ callId: call.id, tag: leg.tag, port: p.port, source, policy: leg.policy }, source ? 'latched' : 'unlatched');
        this.emit('latch', { callId: call.id, tag: leg.tag, port: p.port, source, policy: leg.policy });
      },
      onError: (err: Error) => this.log.error({ callId: call.id, tag: leg.tag, err }, 'packet handling failed; packet dropped'),
    };
    const latchFor = (p: RelayPort): Latch =>
      leg.policy === 'key'
        ? new KeyLatch(p, {
            legId: leg.legId,
            key: leg.key!,
            ...this.config.key,
            replay: leg.helloReplay,
            knownSsrcs: () => knownSsrcs(leg.streams[index]),
            onProved: () => {
              const s = leg.streams[index];
              if (p.kind === 'rtp' && s) this.pairOf(call, s)?.tell(leg.legId);
            },
            onPathReport: (direct) => {
              if (p.kind !== 'rtp' || leg.reportedDirect === direct) return;
              leg.reportedDirect = direct;
              this.log.info({ callId: call.id, tag: leg.tag, path: direct ? 'direct' : 'relay' }, 'client reports its media path');
            },
          })
        : new GuardedLatch(p, {
            ...this.config.guarded,
            rankOf: (ip) => leg.rankOf(ip),
            soleStream: {
              open: () => this.config.guarded.soleStreamLearning && leg.soleStreamOpen(),
              contest: () => {
                if (!leg.contested) this.log.warn({ callId: call.id, tag: leg.tag }, 'two plausible streams for a leg no signalling named: neither may lock');
                leg.contest();
              },
            },
            // A stream is known by its RTP port, so a source on both of its ports is still on one stream.
            spraying: (from, now) => this.spread.note(from, p.kind === 'rtp' ? p.port : p.port - 1, now),
            lockedStream: () => {
              if (!p.latched) return null;
              const s = p.socket.stats();
              return { ssrc: s.ssrc, lastSeq: s.lastSeq, lastSeen: s.lastSeen };
            },
          });
    const [rtp, rtcp] = this.openPair((port, kind) => new RelayPort(this.family, this.config.interface, port, kind, ctx, latchFor));
    return new Stream(index, leg, rtp, rtcp);
  }

  /** An RTP/RTCP pair from the pool; a port some other process holds is retired, and we try another. */
  private openPair(open: (port: number, kind: 'rtp' | 'rtcp') => RelayPort): [RelayPort, RelayPort] {
    for (let attempt = 0; attempt < BIND_ATTEMPTS; attempt++) {
      const port = this.pool.take();
      let rtp: RelayPort | null = null;
      try {
        rtp = open(port, 'rtp');
        return [rtp, open(port + 1, 'rtcp')];
      } catch (err) {
        rtp?.close();
        this.pool.retire(port);
        this.log.warn({ port, err: (err as Error).message }, 'port pair unavailable, retired');
      }
    }
    throw new PortPoolExhausted(this.pool.min, this.pool.max);
  }

  private release(s: Stream): void {
    for (const p of s.ports) {
      const native = p.socket.stats();
      const c = p.counters(native);
      for (const k of Object.keys(this.retired) as Array<keyof PortCounters>) this.retired[k] += c[k];
      this.retiredNoDestination += native.noDestination;
      p.close();
    }
    this.pool.give(s.rtp.port);
    s.leg.streams[s.index] = null;
    // Socket ids are reused: a partner still pointing at ours could leak media into another call.
    if (s.partner?.partner === s) {
      s.partner.partner = null;
      s.partner.wire();
    }
  }

  private tick(now: number): void {
    for (const call of this.calls.values()) {
      for (const leg of call.legs) {
        for (const s of leg.streams) {
          if (!s) continue;
          for (const p of s.ports) p.latch.tick(now);
          // A pair is dead only when neither side sends; it is held when either side holds.
          // A key leg that keeps proving is alive even when its media goes direct, past us.
          const idleMs = now - Math.max(s.lastSeen(), s.partner?.lastSeen() ?? 0, provedAt(s), s.partner ? provedAt(s.partner) : 0);
          const held = s.onHold || (s.partner?.onHold ?? false);
          const limitMs = (held ? this.config.timeouts.holdSec : this.config.timeouts.mediaSec) * 1000;
          if (idleMs > limitMs && !call.timedOut) {
            call.timedOut = true;
            this.log.warn({ callId: call.id, tag: leg.tag, stream: s.index, idleMs }, 'media timeout');
            this.emit('media-timeout', { callId: call.id, tag: leg.tag, streamIndex: s.index, idleMs });
          }
        }
      }
    }
  }
}

/** The pairs of a call's streams, each once. */
function pairsOf(call: Call): DirectPair[] {
  const out = new Set<DirectPair>();
  for (const leg of call.legs) for (const s of leg.streams) if (s?.pair) out.add(s.pair);
  return [...out];
}

/** A leg changed hands: a pair key given to its old client must not serve the new one. */
function forgetPairs(leg: Leg): void {
  for (const s of leg.streams) {
    if (!s) continue;
    if (s.partner) s.partner.pair = null;
    s.pair = null;
  }
}

/** A live view of one stream as an end of a direct pair. */
function endOf(s: Stream): PairEnd {
  return {
    get legId() {
      return s.leg.legId;
    },
    get key() {
      return s.leg.key;
    },
    get directAllowed() {
      return s.leg.policy === 'key' && s.leg.directAllowed;
    },
    get mapping() {
      return s.rtp.latched;
    },
    send: (buf, to) => s.rtp.reply(buf, to),
  };
}

/** The SSRCs a stream's latched source sends: RTP on its RTP port, RTCP sender SSRC on its RTCP port. */
function knownSsrcs(s: Stream | null | undefined): number[] {
  if (!s) return [];
  const out: number[] = [];
  for (const p of s.ports) {
    if (!p.latched) continue;
    const ssrc = p.socket.ssrc();
    if (ssrc >= 0) out.push(ssrc);
  }
  return out;
}

function provedAt(s: Stream): number {
  return Math.max(...s.ports.map((p) => p.latch.provedAt ?? 0));
}

/** Only a secure (TLS/WSS) signalling path may carry a leg key. */
function assertKeyTransport(opts: LegOptions): void {
  if (opts.policy === 'key' && !opts.secure) {
    throw new RelayError('insecure-key-transport', 'the key policy needs a secure (TLS/WSS) signalling path to carry the leg key');
  }
}

/** A signalling event for these legs: each of their latches may learn again. */
function reopenLearning(...legs: Leg[]): void {
  const now = Date.now();
  for (const leg of legs) for (const p of leg.ports()) p.latch.onSignalling(now);
}

function isBehindNat(sdpAddress: string, signallingAddress: string | null): boolean {
  return signallingAddress !== null && sdpAddress !== signallingAddress && isPrivateAddress(sdpAddress);
}

function validateIds(...ids: string[]): void {
  for (const id of ids) {
    if (typeof id !== 'string' || id.length === 0 || id.length > 256) throw new RelayError('bad-request', 'call-id and tags must be 1..256 characters');
  }
}
