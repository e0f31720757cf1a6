import { ReplayWindow, formatLegKey, newLegId, newLegKey, type Endpoint } from './challenge';
import type { DirectPair } from '../direct/rendezvous';
import type { LatchPolicy } from './latch/latch';
import { rankSource, type AddressTrust, type LegEvidence, type SourceRank } from './latch/source-rank';
import type { SocketStats } from './media-socket';
import type { PortCounters, RelayPort } from './relay-port';
import type { MediaDescription } from '../sdp/session';

/** How one side of a call is treated: chosen by signalling, which knows the transport. */
export interface LegOptions {
  policy: LatchPolicy;
  /** The signalling path to this leg is TLS/WSS; required before its key is put in SDP. */
  secure: boolean;
  /** Where this leg's signalling came from: guarded latching prefers this IP. */
  signallingAddress?: string;
  /** The ng caller's own word on where this leg's media comes from (rtpengine's media-address). */
  mediaAddress?: string;
  /** Which of the SDP and the SIP source name the endpoint (rtpengine's trust-address / SIP-source-address). */
  trust?: AddressTrust;
  /** Only named IPs may lock, never the sole plausible stream (rtpengine's strict-source). */
  strictSource?: boolean;
  /** May this leg's client take media direct to the other client (key legs only; default yes)? */
  direct?: boolean;
}

/** The per-message hints an ng caller may give about a leg; each replaces the last one given. */
export type LegHints = Pick<LegOptions, 'signallingAddress' | 'mediaAddress' | 'trust' | 'strictSource'>;

/** One m-line of one leg: the relay ports that leg sends to, and what its SDP said. */
export class Stream {
  rtcpMux = false;
  onHold = false;
  sdp: MediaDescription | null = null;
  partner: Stream | null = null;
  /** Shared with the partner stream once both ends are key clients that may go direct. */
  pair: DirectPair | null = null;

  constructor(readonly index: number, readonly leg: Leg, readonly rtp: RelayPort, readonly rtcp: RelayPort) {}

  get ports(): RelayPort[] {
    return [this.rtp, this.rtcp];
  }

  /**
   * Points this stream's ports at the partner leg's: accepted media leaves from the partner's
   * port (symmetric RTP), RTCP by the partner's RTP port when the partner muxes.
   */
  wire(): void {
    const p = this.partner;
    for (const port of this.ports) port.socket.setOutputs(p?.rtp.socket ?? null, p ? (p.rtcpMux ? p.rtp : p.rtcp).socket : null);
  }

  /** Takes in what this leg's SDP says about the m-line. */
  describe(m: MediaDescription): void {
    this.sdp = m;
    this.rtcpMux = m.rtcpMux;
    // Any direction but sendrecv means one side is silent on purpose.
    this.onHold = m.nullAddress || m.direction !== 'sendrecv';
    const rate = m.clockRates.values().next().value;
    if (rate) this.rtp.socket.setClockRate(rate);
    this.rtp.target = m.nullAddress ? null : { address: m.address, port: m.port };
    this.rtcp.target = m.nullAddress ? null : { address: m.rtcpAddress, port: m.rtcpPort };
  }

  lastSeen(): number {
    return Math.max(this.rtp.lastSeen(), this.rtcp.lastSeen());
  }
}

export class Leg implements LegEvidence {
  readonly legId = newLegId();
  readonly streams: Array<Stream | null> = [];
  policy!: LatchPolicy;
  key!: Buffer | null;
  secure!: boolean;
  signallingAddress!: string | null;
  mediaAddress!: string | null;
  trust!: AddressTrust;
  strictSource!: boolean;
  /** The IP this leg first locked onto; from then on it is named, and nothing unnamed may lock. */
  learnedIp: string | null = null;
  /** Set when two plausible unnamed streams competed for this leg: it trusts neither any more. */
  contested = false;
  /** Set while a hairpinned call's client owns this leg: SDP that merely points back at it is an echo. */
  adopted = false;
  directAllowed!: boolean;
  /** What the client's last authenticated hello said: its media goes to the peer, not to us. */
  reportedDirect = false;
  /** Hello counters this leg's ports have accepted, shared so a hello is good once per leg. */
  helloReplay!: ReplayWindow;

  constructor(public tag: string | null, opts: LegOptions) {
    this.assume(opts);
  }

  /** Who this leg is: its policy, a fresh key if it needs one, and where its signalling comes from. */
  assume(opts: LegOptions): void {
    this.policy = opts.policy;
    this.key = opts.policy === 'key' ? newLegKey() : null;
    this.secure = opts.secure;
    this.signallingAddress = opts.signallingAddress ?? null;
    this.mediaAddress = opts.mediaAddress ?? null;
    this.trust = opts.trust ?? 'both';
    this.strictSource = opts.strictSource ?? false;
    this.directAllowed = opts.direct ?? true;
    this.reportedDirect = false;
    this.helloReplay = new ReplayWindow();
    this.learnedIp = null;
    this.contested = false;
  }

  /** Takes in what one offer or answer says about this leg; hints it leaves out stay as they were. */
  hint(h: LegHints): void {
    if (h.signallingAddress) this.signallingAddress = h.signallingAddress;
    if (h.mediaAddress) this.mediaAddress = h.mediaAddress;
    if (h.trust) this.trust = h.trust;
    if (h.strictSource !== undefined) this.strictSource = h.strictSource;
  }

  /** The leg's first lock names its IP for the rest of the call (unless it was contested). */
  learned(ip: string): void {
    if (this.learnedIp === null && !this.contested) this.learnedIp = ip;
  }

  contest(): void {
    this.contested = true;
    this.learnedIp = null;
  }

  /** May a source nobody named still lock onto this leg as the sole plausible stream? */
  soleStreamOpen(): boolean {
    return !this.strictSource && this.mediaAddress === null && this.learnedIp === null && !this.contested;
  }

  get sdpAddresses(): string[] {
    return this.streams.flatMap((s) => (s?.sdp ? [s.sdp.address, s.sdp.rtcpAddress] : []));
  }

  /** How far signalling vouches for `ip` as this leg's media source. */
  rankOf(ip: string): SourceRank {
    return rankSource(this, ip);
  }

  /** The value of our a=keylatch attribute for this leg's SDP, if it holds a key. */
  keylatchAttribute(): string | undefined {
    return this.key ? formatLegKey(this.legId, this.key) : undefined;
  }

  ports(): RelayPort[] {
    return this.streams.flatMap((s) => (s ? s.ports : []));
  }
}

export class Call {
  readonly legs: Leg[] = [];
  readonly createdAt = Date.now();
  timedOut = false;

  constructor(readonly id: string) {}

  leg(tag: string): Leg | undefined {
    return this.legs.find((l) => l.tag === tag);
  }

  other(leg: Leg): Leg | undefined {
    return this.legs.find((l) => l !== leg);
  }
}

export interface PortStats extends PortCounters {
  port: number;
  latched: Endpoint | null;
  state: string;
  lastSeen: number;
}

export interface StreamStats {
  index: number;
  type: string;
  onHold: boolean;
  rtcpMux: boolean;
  rtp: PortStats;
  rtcp: PortStats;
  lost: number;
  expected: number;
  jitterMs: number;
}

export interface LegStats {
  tag: string | null;
  legId: string;
  policy: LatchPolicy;
  authenticated: boolean;
  packetsIn: number;
  bytesIn: number;
  packetsOut: number;
  bytesOut: number;
  lost: number;
  jitterMs: number;
  lastSeen: number;
  latched: Endpoint | null;
  /** Where this leg's client says its media goes: through us, or straight to the other client. */
  mediaPath: 'relay' | 'direct';
  /** Signalling (config, header or ng flag) lets this leg go direct, if it is a key leg. */
  directAllowed: boolean;
  streams: StreamStats[];
}

function portStats(p: RelayPort, native: SocketStats): PortStats {
  return { port: p.port, latched: p.latched, state: p.latch.state, ...p.counters(native), lastSeen: native.lastSeen };
}

export function legStats(leg: Leg): LegStats {
  const streams = leg.streams.filter((s): s is Stream => s !== null).map((s): StreamStats => {
    const rtp = s.rtp.socket.stats();
    return {
      index: s.index,
      type: s.sdp?.type ?? 'unknown',
      onHold: s.onHold,
      rtcpMux: s.rtcpMux,
      rtp: portStats(s.rtp, rtp),
      rtcp: portStats(s.rtcp, s.rtcp.socket.stats()),
      lost: rtp.rtpLost,
      expected: rtp.rtpExpected,
      jitterMs: rtp.jitterMs,
    };
  });
  const sum = (f: (p: PortStats) => number): number => streams.reduce((n, s) => n + f(s.rtp) + f(s.rtcp), 0);
  return {
    tag: leg.tag,
    legId: leg.legId,
    policy: leg.policy,
    authenticated: leg.policy === 'key' && streams.length > 0 && streams.every((s) => s.rtp.latched !== null),
    packetsIn: sum((p) => p.packetsIn),
    bytesIn: sum((p) => p.bytesIn),
    packetsOut: sum((p) => p.packetsOut),
    bytesOut: sum((p) => p.bytesOut),
    lost: streams.reduce((n, s) => n + s.lost, 0),
    jitterMs: streams.reduce((m, s) => Math.max(m, s.jitterMs), 0),
    lastSeen: streams.reduce((m, s) => Math.max(m, s.rtp.lastSeen, s.rtcp.lastSeen), 0),
    latched: streams[0]?.rtp.latched ?? null,
    mediaPath: leg.reportedDirect ? 'direct' : 'relay',
    directAllowed: leg.directAllowed,
    streams,
  };
}
