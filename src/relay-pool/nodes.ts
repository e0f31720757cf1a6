import { joinHostPort } from '../host-port';
import type { LegOptions } from '../media/call';
import type { AnswerRequest, LegRef, OfferRequest, Relay } from '../media/relay';
import { NgClient, NgRefused, isUnknownCall, type NgClientOptions, type NgMessage } from './ng-client';
import { unsealLegKeys } from '../control/ng-key-seal';

/** What drives a relay node: keylatch's own (in this process or over ng) or rtpengine over ng. */
export type RelayNodeKind = 'in-process' | 'keylatch' | 'rtpengine';

/** One leg of a call as its node reports it (ng `query`): keylatch nodes say more than rtpengine. */
export interface NodeLeg {
  tag: string;
  /** 'key' or 'guarded'; null where the node does not say (rtpengine). */
  policy: string | null;
  /** Each stream's RTP latch state, e.g. "locked"; null where the node does not say. */
  latchState: string | null;
  /** Where the leg's RTP comes from (keylatch: latched on; rtpengine: its endpoint). */
  latched: string | null;
  packetsIn: number;
  packetsOut: number | null;
  /** Last media on the leg, ms since the epoch; 0 for never. */
  lastSeen: number;
}

/** What a node says of itself when it answers a ping. */
export interface NodePong {
  /** The address it writes into SDP (keylatch nodes say). */
  mediaAddress?: string;
  /**
   * Since when calls may be gone from it (ms since the epoch): its start, or for keylatch the
   * last death of one of its workers. A call placed before this that the node no longer holds
   * was lost to a restart, not ended by a media timeout (media-watch.ts). rtpengine says its
   * uptime in whole seconds, so its figure may be up to a second late.
   */
  callsLostAt?: number;
}

/** A call on a node: its legs, and whether its media timed out there. */
export interface NodeCall {
  timedOut: boolean;
  legs: NodeLeg[];
}

/**
 * The seam between the SIP edge and a media relay: the four things a call asks of one. Every
 * command of one call goes to the node that took its first offer (the pool sees to that).
 */
export interface RelayNode {
  /** 'in-process' or the node's ng URL, e.g. ng://198.18.0.2:2223: how admins name it. */
  readonly id: string;
  readonly kind: RelayNodeKind;
  /** Whether it can hold key legs (keylatch's challenge/proof); rtpengine cannot. */
  readonly keyLegs: boolean;
  offer(req: OfferRequest): Promise<{ sdp: string }>;
  answer(req: AnswerRequest): Promise<{ sdp: string }>;
  delete(callId: string): Promise<void>;
  /**
   * The call as the node holds it, or null when the node has none by that id: rtpengine
   * deletes a call whose media timed out, keylatch keeps it and says `timed-out`.
   */
  query(callId: string): Promise<NodeCall | null>;
  /**
   * Resolves when the node answers a ping, with what it says of itself; rejects (NgTimeout)
   * when it does not answer.
   */
  ping(): Promise<NodePong>;
  /** keylatch nodes only: handing one of its legs to a call the PBX routed back (see Relay.adopt). */
  readonly hairpins?: Hairpins;
  close(): void;
}

/** Relay.adopt and its companions, as the edge reaches them on a node. */
export interface Hairpins {
  /** The leg the SDP names, adopted by a client with `opts`; null when no leg of this node is named. */
  adopt(sdp: string, opts: LegOptions): Promise<{ ref: LegRef; sdp: string } | null>;
  towardAdopter(ref: LegRef, sdp: string): Promise<string>;
  describeAdopted(ref: LegRef, sdp: string, signallingAddress?: string): Promise<string>;
  disown(ref: LegRef, opts: LegOptions): Promise<void>;
}

/** The relay inside the edge's own process: it cannot die without the edge, so its ping always answers. */
export class InProcessNode implements RelayNode {
  readonly id = 'in-process';
  readonly kind = 'in-process' as const;
  readonly keyLegs = true;

  readonly hairpins: Hairpins;

  constructor(readonly relay: Relay) {
    this.hairpins = {
      adopt: async (sdp, opts) => {
        const ref = relay.legAddressedBy(sdp);
        return ref ? { ref, sdp: relay.adopt(ref, sdp, opts).sdp } : null;
      },
      towardAdopter: async (ref, sdp) => relay.towardAdopter(ref, sdp).sdp,
      describeAdopted: async (ref, sdp, source) => relay.describeAdopted(ref, sdp, source).sdp,
      disown: async (ref, opts) => relay.disown(ref, opts),
    };
  }

  offer(req: OfferRequest): Promise<{ sdp: string }> {
    return this.relay.offer(req);
  }

  answer(req: AnswerRequest): Promise<{ sdp: string }> {
    return this.relay.answer(req);
  }

  async delete(callId: string): Promise<void> {
    this.relay.delete({ callId });
  }

  async query(callId: string): Promise<NodeCall | null> {
    const stats = this.relay.stats(callId);
    if (!stats) return null;
    return {
      timedOut: this.relay.timedOut(callId),
      legs: stats.map((l) => ({
        tag: l.tag ?? '',
        policy: l.policy,
        latchState: l.streams.map((st) => st.rtp.state).join(',') || null,
        latched: l.latched ? joinHostPort(l.latched.address, l.latched.port) : null,
        packetsIn: l.packetsIn,
        packetsOut: l.packetsOut,
        lastSeen: l.lastSeen,
      })),
    };
  }

  async ping(): Promise<NodePong> {
    return { mediaAddress: this.relay.advertisedAddress, callsLostAt: this.relay.startedAt };
  }

  close(): void {
    /* the edge service owns the relay */
  }
}

/** ng://host:port -> host and port (IPv6 as ng://[addr]:port). */
export function parseNgUrl(url: string): { host: string; port: number } {
  const m = /^ng:\/\/\[?([^\]\s/]+?)\]?:(\d{1,5})\/?$/.exec(url);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new Error(`not an ng URL (ng://HOST:PORT): ${url}`);
  return { host: m[1]!, port: Number(m[2]) };
}

const dict = (v: unknown): NgMessage | null => (typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as NgMessage) : null);
const list = (v: unknown): NgMessage[] => (Array.isArray(v) ? v.map(dict).filter((d): d is NgMessage => d !== null) : []);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const endpoint = (v: unknown): string | null => {
  const e = dict(v);
  return e && typeof e.address === 'string' && num(e.port) ? joinHostPort(e.address, e.port as number) : null;
};

/**
 * The legs of an ng query reply, read the way both kinds write it: keylatch gives per-tag
 * counters, policy and latch states; rtpengine per-stream `stats`, `endpoint` and `last packet`
 * (seconds). What a node leaves out stays null rather than guessed.
 */
function queriedLegs(reply: NgMessage): NodeLeg[] {
  return Object.entries(dict(reply.tags) ?? {}).flatMap(([key, raw]) => {
    const t = dict(raw);
    if (!t) return [];
    const medias = list(t.medias);
    const rtpStreams = medias.map((m) => list(m.streams)[0]).filter((st): st is NgMessage => st !== undefined);
    const states = rtpStreams.map((st) => st.state).filter((x): x is string => typeof x === 'string');
    const lastSec = num(t['last-seen']) ?? Math.max(0, ...rtpStreams.map((st) => num(st['last packet']) ?? 0));
    return [{
      tag: typeof t.tag === 'string' ? t.tag : key,
      policy: typeof t.policy === 'string' ? t.policy : null,
      latchState: states.length ? states.join(',') : null,
      latched: endpoint(t.latched) ?? endpoint(rtpStreams[0]?.endpoint),
      packetsIn: num(t.packets) ?? rtpStreams.reduce((n, st) => n + (num(dict(st.stats)?.packets) ?? num(st.packets) ?? 0), 0),
      packetsOut: num(t['packets-out']),
      lastSeen: lastSec * 1000,
    }];
  });
}

const family = (address: string): string => (address.includes(':') ? 'IP6' : 'IP4');

/** rtpengine's "received-from": where the SIP of the side that sent this SDP came from. */
function receivedFrom(address: string | undefined): NgMessage {
  return address ? { 'received-from': [family(address), address] } : {};
}

/** keylatch's own ng options for a new leg: its policy, and whether its signalling path may carry a key. */
function keylatchLeg(side: 'offerer' | 'answerer', opts: Partial<LegOptions> | undefined): NgMessage {
  if (!opts) return {};
  return {
    ...(opts.policy ? { [`keylatch-${side}`]: opts.policy } : {}),
    ...(opts.secure !== undefined ? { [`secure-${side}`]: opts.secure ? 'yes' : 'no' } : {}),
  };
}

/** A relay node driven over rtpengine's ng protocol: `keylatch relay`, or rtpengine itself. */
export class NgNode implements RelayNode {
  readonly keyLegs: boolean;
  readonly hairpins?: Hairpins;
  private readonly client: NgClient;

  /** pingTimeoutMs decides how fast a dead node is noticed; commands may take longer on a busy node. */
  /** `sealKey` opens the leg keys a keylatch node seals in its replies (media.relayPool.keySecret); `sign`, for a node that wants signed requests (sibling-relays.ts). */
  constructor(
    readonly id: string,
    readonly kind: 'keylatch' | 'rtpengine',
    private readonly timeouts: { pingMs: number; commandMs: number },
    private readonly sealKey: Buffer | null = null,
    sign?: NgClientOptions['sign'],
  ) {
    this.keyLegs = kind === 'keylatch';
    this.client = new NgClient({ ...parseNgUrl(id), timeoutMs: timeouts.commandMs, ...(sign ? { sign } : {}) });
    if (kind === 'keylatch') this.hairpins = this.ngHairpins();
  }

  private ngHairpins(): Hairpins {
    const leg = (ref: LegRef): NgMessage => ({ 'call-id': ref.callId, 'leg-id': ref.legId });
    return {
      adopt: async (sdp, opts) => {
        let reply: NgMessage;
        try {
          reply = await this.client.command('adopt', { sdp, ...keylatchLeg('answerer', opts), ...receivedFrom(opts.signallingAddress) });
        } catch (err) {
          if (err instanceof NgRefused && /no leg/.test(err.reason)) return null;
          throw err;
        }
        return { ref: { callId: String(reply['call-id']), legId: String(reply['leg-id']) }, sdp: this.sdpOf(reply) };
      },
      towardAdopter: async (ref, sdp) => this.sdpOf(await this.client.command('toward-adopter', { ...leg(ref), sdp })),
      describeAdopted: async (ref, sdp, source) => this.sdpOf(await this.client.command('describe-adopted', { ...leg(ref), sdp, ...receivedFrom(source) })),
      disown: async (ref, opts) => void (await this.client.command('disown', { ...leg(ref), ...keylatchLeg('answerer', opts), ...receivedFrom(opts.signallingAddress) })),
    };
  }

  async offer(req: OfferRequest): Promise<{ sdp: string }> {
    const reply = await this.client.command('offer', {
      'call-id': req.callId,
      'from-tag': req.fromTag,
      ...(req.toTag ? { 'to-tag': req.toTag } : {}),
      sdp: req.sdp,
      ...receivedFrom(req.offerer?.signallingAddress),
      ...this.dialect(req),
    });
    return { sdp: this.sdpOf(reply) };
  }

  async answer(req: AnswerRequest): Promise<{ sdp: string }> {
    const reply = await this.client.command('answer', {
      'call-id': req.callId,
      'from-tag': req.fromTag,
      'to-tag': req.toTag,
      sdp: req.sdp,
      ...receivedFrom(req.answerer?.signallingAddress),
      ...(this.kind === 'rtpengine' ? { ICE: 'remove' } : {}),
    });
    return { sdp: this.sdpOf(reply) };
  }

  /** The SDP of a reply, with any leg key the node sealed for the trip opened again. */
  private sdpOf(reply: NgMessage): string {
    return unsealLegKeys(String(reply.sdp), this.sealKey);
  }

  async delete(callId: string): Promise<void> {
    await this.client.send('delete', { 'call-id': callId });
  }

  async query(callId: string): Promise<NodeCall | null> {
    const reply = await this.client.send('query', { 'call-id': callId });
    if (reply.result === 'error') {
      const reason = String(reply['error-reason'] ?? 'error');
      if (isUnknownCall(reason)) return null;
      throw new NgRefused(reason);
    }
    return { timedOut: reply['timed-out'] === 'yes', legs: queriedLegs(reply) };
  }

  async ping(): Promise<NodePong> {
    // rtpengine's pong says nothing of itself; its `statistics` carries its uptime. Asked beside
    // the ping, never instead: liveness is the ping's alone, whatever statistics costs a busy node.
    const [reply, uptime] = await Promise.all([this.client.send('ping', {}, this.timeouts.pingMs), this.kind === 'rtpengine' ? this.uptimeSec() : null]);
    if (reply.result !== 'pong') throw new Error(`ping answered ${String(reply.result)}`);
    const lostAt = num(reply['calls-lost-at']) ?? (uptime === null ? null : Date.now() - uptime * 1000);
    return {
      ...(typeof reply['media-address'] === 'string' ? { mediaAddress: reply['media-address'] } : {}),
      ...(lostAt !== null ? { callsLostAt: lostAt } : {}),
    };
  }

  /** rtpengine's uptime (statistics → totalstatistics.uptime, whole seconds as a string), or null. */
  private async uptimeSec(): Promise<number | null> {
    try {
      const reply = await this.client.send('statistics', {}, this.timeouts.pingMs);
      const up = Number(dict(dict(reply.statistics)?.totalstatistics)?.uptime);
      return Number.isFinite(up) && up >= 0 ? up : null;
    } catch {
      return null;
    }
  }

  close(): void {
    this.client.close();
  }

  /** What each kind needs besides the common fields: keylatch its leg policies, rtpengine plain RTP. */
  private dialect(req: OfferRequest): NgMessage {
    if (this.kind === 'rtpengine') {
      if (req.offerer?.policy === 'key' || req.answerer?.policy === 'key') throw new Error(`${this.id} is rtpengine, which cannot hold key legs`);
      return { ICE: 'remove' };
    }
    // direct=no (X-Keylatch-Direct: no) names the call, as the node's ng reads it.
    const direct = req.offerer?.direct === false || req.answerer?.direct === false ? { direct: 'no' } : {};
    return { ...keylatchLeg('offerer', req.offerer), ...keylatchLeg('answerer', req.answerer), ...direct };
  }
}
