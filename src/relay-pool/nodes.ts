import type { LegOptions } from '../media/call';
import type { AnswerRequest, OfferRequest, Relay } from '../media/relay';
import { NgClient, type NgMessage } from './ng-client';

/** What drives a relay node: keylatch's own (in this process or over ng) or rtpengine over ng. */
export type RelayNodeKind = 'in-process' | 'keylatch' | 'rtpengine';

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
  /** Resolves when the node answers a ping; rejects (NgTimeout) when it does not. */
  ping(): Promise<void>;
  close(): void;
}

/** The relay inside the edge's own process: it cannot die without the edge, so its ping always answers. */
export class InProcessNode implements RelayNode {
  readonly id = 'in-process';
  readonly kind = 'in-process' as const;
  readonly keyLegs = true;

  constructor(readonly relay: Relay) {}

  offer(req: OfferRequest): Promise<{ sdp: string }> {
    return this.relay.offer(req);
  }

  answer(req: AnswerRequest): Promise<{ sdp: string }> {
    return this.relay.answer(req);
  }

  async delete(callId: string): Promise<void> {
    this.relay.delete({ callId });
  }

  async ping(): Promise<void> {
    /* alive while we are */
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
  private readonly client: NgClient;

  /** pingTimeoutMs decides how fast a dead node is noticed; commands may take longer on a busy node. */
  constructor(readonly id: string, readonly kind: 'keylatch' | 'rtpengine', private readonly timeouts: { pingMs: number; commandMs: number }) {
    this.keyLegs = kind === 'keylatch';
    this.client = new NgClient({ ...parseNgUrl(id), timeoutMs: timeouts.commandMs });
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
    return { sdp: String(reply.sdp) };
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
    return { sdp: String(reply.sdp) };
  }

  async delete(callId: string): Promise<void> {
    await this.client.send('delete', { 'call-id': callId });
  }

  async ping(): Promise<void> {
    const reply = await this.client.send('ping', {}, this.timeouts.pingMs);
    if (reply.result !== 'pong') throw new Error(`ping answered ${String(reply.result)}`);
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
    return { ...keylatchLeg('offerer', req.offerer), ...keylatchLeg('answerer', req.answerer) };
  }
}
