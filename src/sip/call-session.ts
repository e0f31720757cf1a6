import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import type { LegOptions } from '../media/call';
import { PortPoolExhausted } from '../media/port-pool';
import { RelayError } from '../media/relay';
import { isSecureTransport, type Binding } from '../nat/binding';
import type { BindingStore } from '../nat/binding-store';
import { SdpError, parseSdp } from '../sdp/session';
import { NgRefused, NgTimeout, isUnknownCall } from '../relay-pool/ng-client';
import { NoRelayAvailable, type RelayPool } from '../relay-pool/pool';
import type { RelayNode } from '../relay-pool/nodes';
import { bridgeAcross } from './bridge';
import { AnchoredMedia, HairpinMedia, PassthroughMedia, adoptHairpin, type CallMedia, type Side } from './call-media';
import type { LocalNames } from './local-names';
import type { PbxPeer } from './pbx-peer';
import { routeRequest, routedHeaders, type Route } from './route';
import { OriginKeeper } from './sdp-origin';
import { destroyQuietly, transportOf, type SipRequest, type SipResponse } from './srf';

/** A per-call switch for direct media, as operators who record or meter calls need it. */
export const DIRECT_HEADER = 'X-Keylatch-Direct';

export interface CallDeps {
  /** The drachtio-server facing the phones: every request toward a phone or the PBX leaves here. */
  srf: Srf;
  /** The one the PBX sends to (sip.pbxDrachtio), or `srf` again when one serves both sides. */
  pbxSrf: Srf;
  pbx: PbxPeer | null;
  names: LocalNames;
  /** Whether a Call-ID is one of keylatch's own legs toward the PBX. */
  isOwnLeg: (callId: string) => boolean;
  /** Tells the edge the Call-ID of a leg keylatch opened toward the PBX (until onEnd). */
  onOwnLeg?: (callId: string) => void;
  /** The relay nodes calls are anchored on (just the in-process relay unless media.relays is set). */
  pool: RelayPool;
  store: BindingStore;
  sip: SipConfig;
  log: Logger;
  /** Called once when the call is over, however it ended. */
  onEnd?: (callId: string, relayCallId: string) => void;
}

/** drachtio-srf keeps `connected` on its Dialog; its typings leave it out. */
type Dialog = Srf.Dialog & { connected: boolean };

/** Headers a B2BUA passes through so that authentication and identity stay end to end. */
const PASSED_REQUEST_HEADERS = ['Proxy-Authorization', 'Authorization', 'User-Agent', 'Alert-Info'];
const PASSED_RESPONSE_HEADERS = ['Proxy-Authenticate', 'WWW-Authenticate', 'Retry-After', 'Warning'];

type CreateB2BUA = (req: SipRequest, res: SipResponse, uri: string, opts: object, cbs: { cbRequest: (err: unknown, sent?: SipRequest) => void }) => Promise<{ uas: Srf.Dialog; uac: Srf.Dialog }>;

/** Sends an UPDATE with an offer down a dialog; resolves with the answer SDP. */
async function updateOn(dialog: Dialog, offer: string): Promise<string> {
  // drachtio-srf's typings want a whole SrfRequest here; it reads method, headers and body.
  const request = dialog.request.bind(dialog) as unknown as (opts: { method: string; body: string; headers: Record<string, string> }) => Promise<SipResponse>;
  const res = await request({ method: 'UPDATE', body: offer, headers: { 'Content-Type': 'application/sdp' } });
  if (res.status !== 200 || !res.body) throw new Error(`UPDATE answered ${res.status}${res.body ? '' : ' without SDP'}`);
  return res.body;
}

/**
 * A re-INVITE down a dialog; resolves with the answer SDP. drachtio-srf's modify leaves its
 * one-at-a-time counter raised when the answer is not a 200, and every later modify on that
 * dialog would then wait forever: put it back.
 */
async function modifyOn(dialog: Dialog, offer: string): Promise<string> {
  try {
    return await dialog.modify(offer);
  } catch (err) {
    const queue = (dialog as unknown as { _reinvitesInProgress?: { count: number; admitOne: Array<() => void> } })._reinvitesInProgress;
    if (queue && typeof (err as { status?: unknown }).status === 'number' && queue.count > 0) {
      queue.count--;
      const next = queue.admitOne.shift();
      if (next) setImmediate(next);
    }
    throw err;
  }
}

/** An SDP less its o= line: what it says, whatever its version. */
const withoutOrigin = (sdp: string): string => sdp.replace(/^o=.*$/m, '');

/** The c= and m= lines of an SDP: where its sender receives. */
const mediaLines = (sdp: string): string => sdp.split(/\r?\n/).filter((l) => l.startsWith('m=') || l.startsWith('c=')).join('\n');

const tagOf = (msg: { getParsedHeader(name: 'To' | 'From'): { params?: Record<string, unknown> } }, header: 'To' | 'From'): string =>
  String(msg.getParsedHeader(header).params?.tag ?? '');

/**
 * One call through the edge, from INVITE to the last BYE: a B2BUA whose SDP on both legs
 * points at the relay. Every way a call ends (BYE from either side, CANCEL, failure, dead
 * media) frees the relay's ports.
 */
export class CallSession {
  private uas: Dialog | null = null;
  private uac: Dialog | null = null;
  private media: CallMedia | null = null;
  /** Our o= toward each side: SDP toward A is built from B's and the other way round. */
  private readonly originA = new OriginKeeper();
  private readonly originB = new OriginKeeper();
  private connected = false;
  private ended = false;
  readonly callId: string;
  /**
   * The call's id on its relay node. A record-routing PBX sends a call back through keylatch
   * with the Call-ID and From tag of keylatch's own leg (sip.pbxDrachtio): where no hairpin
   * joins the two (an rtpengine node cannot hand a leg over), that second call is anchored
   * again and needs an id of its own there.
   */
  readonly relayCallId: string;
  private readonly tagA: string;
  /** Set when this call is the PBX routing one of our own calls back to a client. */
  hairpinOf: string | null = null;
  /** The PBX's call to a client (side a the PBX, side b the client). */
  toClient = false;
  private legs: { offerer: LegOptions; answerer: LegOptions } | null = null;

  /** arrivedOn: the drachtio-server the INVITE came in on (deps.srf or deps.pbxSrf). */
  constructor(private readonly req: SipRequest, private readonly res: SipResponse, private readonly deps: CallDeps, private readonly arrivedOn: Srf = deps.srf) {
    this.callId = req.get('Call-ID');
    this.tagA = tagOf(req, 'From');
    this.relayCallId = arrivedOn !== deps.srf ? `${this.callId}~pbx` : this.callId;
  }

  async run(): Promise<void> {
    const { srf, log } = this.deps;
    const route = await this.route();
    if ('reject' in route) {
      this.res.send(route.reject, route.reason, {});
      return this.end();
    }
    if (!this.req.body) {
      this.res.send(488, 'Offerless INVITE not supported', {});
      return this.end();
    }
    let offer: string;
    try {
      this.media = route.toPeer ? new PassthroughMedia(this.req.body) : await this.mediaFor(route.toClient);
      if (!this.media) return this.end();
      offer = await this.media.offerToB();
    } catch (err) {
      this.end();
      return this.refuse(err);
    }
    try {
      const common = {
        proxy: route.proxy,
        headers: routedHeaders(this.req, route, PASSED_REQUEST_HEADERS),
        localSdpB: this.originB.stamp(offer),
        localSdpA: async (sdp: string, res: SipResponse) => this.originA.stamp(await this.answerFromB(sdp, tagOf(res as unknown as SipRequest, 'To'), res.source_address)),
        proxyResponseHeaders: PASSED_RESPONSE_HEADERS,
      };
      const onUacSent = (_err: unknown, sent?: SipRequest): void => {
        if (sent && !route.toClient && !route.toPeer) this.deps.onOwnLeg?.(sent.get('Call-ID'));
      };
      const { uas, uac } = this.arrivedOn === srf
        ? await (srf.createB2BUA.bind(srf) as CreateB2BUA)(this.req, this.res, route.uri, common, { cbRequest: onUacSent })
        : await bridgeAcross(this.arrivedOn, srf, this.req, this.res, { uri: route.uri, ...common });
      this.uas = uas as Dialog;
      this.uac = uac as Dialog;
      this.connected = true;
      // A fast caller can ACK and BYE before createB2BUA resolves: that 'destroy' fired with no
      // one listening, so the other leg would never hear of it.
      if (!this.uas.connected || !this.uac.connected) {
        log.info({ callId: this.callId }, 'call ended while being connected');
        return this.hangUp('ended during setup');
      }
      log.info({ callId: this.callId, to: route.uri, toClient: route.toClient?.aor ?? null, hairpinOf: this.hairpinOf }, 'call connected');
      this.wire(this.uas, this.uac, 'a');
      this.wire(this.uac, this.uas, 'b');
      await this.finishRingingMove();
    } catch (err) {
      // createB2BUA already sent the B leg's failure (or our 500) to A; CANCEL lands here too.
      // B's answer SDP refused by the relay is the one failure that leaves A unanswered.
      if (!this.res.finalResponseSent) this.res.send(err instanceof SdpError ? 488 : 500, {});
      log.info({ callId: this.callId, status: (err as { status?: number }).status ?? null, err: (err as Error).message }, 'call not connected');
      this.end();
    }
  }

  /**
   * How this call's media goes through the relay, or null once refused. A PBX call whose offer
   * names one of our own legs is a hairpin: the client gets that leg rather than a second anchor.
   */
  private async mediaFor(toClient: Binding | null): Promise<CallMedia | null> {
    const { pool, sip } = this.deps;
    const legs = this.policies(toClient);
    this.legs = legs;
    this.toClient = toClient !== null;
    if (sip.requireKey && toClient === null && legs.offerer.policy !== 'key') {
      this.res.send(403, 'keylatch key required', { headers: { Warning: '399 keylatch "sign in over TLS or WSS and offer a=keylatch:v1"' } });
      return null;
    }
    const bounced = toClient ? await adoptHairpin(pool, this.req.body, legs.answerer) : null;
    if (bounced) {
      this.hairpinOf = bounced.ref.callId;
      return new HairpinMedia(pool, bounced.node, bounced.ref, bounced.sdp, legs.answerer, legs.offerer);
    }
    return new AnchoredMedia(pool, this.relayCallId, this.tagA, this.req.body, legs);
  }
  /**
   * B's answer (provisional or final) through the relay. A hairpin whose owner's node died while
   * the client rang has no leg left to describe: a stand-in call on a live node answers for it
   * until the owner's move brings the PBX's re-offer, whose leg it then adopts (offerThrough).
   */
  private async answerFromB(sdp: string, toTag: string, source: string): Promise<string> {
    const media = this.media!;
    if (media instanceof HairpinMedia && !media.lost && !this.connected) {
      try {
        return await media.answerFromB(sdp, toTag, source);
      } catch (err) {
        // The owner's node forgot the call while the client rang (a worker of it died, or it
        // restarted between pings): as if the node had died, a stand-in answers for it.
        if (!(err instanceof NgRefused && isUnknownCall(err.reason))) throw err;
        media.lost = true;
      }
    }
    if (media instanceof HairpinMedia && media.lost && !this.connected) {
      const standIn = new AnchoredMedia(this.deps.pool, this.relayCallId, this.tagA, this.req.body, this.legs!);
      standIn.standIn = true;
      await standIn.offerToB();
      this.media = standIn;
      this.deps.log.info({ callId: this.callId, on: standIn.on?.id ?? null }, 'hairpin\'s relay call is gone while ringing (its node died or forgot it): a stand-in call answers until the owner moves');
    }
    return this.media!.answerFromB(sdp, toTag, source);
  }

  /**
   * The rest of a move made while B rang, now that both dialogs are up. A got the new node's
   * SDP in the 200 OK; B still sends to the dead node, so B gets the new node's offer by
   * re-INVITE (a key leg its new key, over its TLS/WSS path) and its answer goes back through
   * the node. When the 200 carried the SDP of an earlier 183, drachtio-srf passed the
   * translation made then (for the dead node) without asking: that call is still lost, and
   * moves now as a connected call does.
   */
  private async finishRingingMove(): Promise<void> {
    const media = this.media;
    if (!(media instanceof AnchoredMedia) || this.ended) return;
    if (media.loss) return this.moveMedia();
    const toB = media.takeUnsentOfferToB();
    if (!toB) return;
    const started = Date.now();
    try {
      await this.sendMoved(media, toB, this.uas!.local.sdp);
      this.deps.pool.moves.moved++;
      this.deps.log.info({ callId: this.callId, to: media.on?.id ?? null, ms: Date.now() - started }, 'call moved to another relay node while ringing');
    } catch (err) {
      this.deps.pool.moves.failed++;
      this.deps.log.error({ callId: this.callId, err: (err as Error).message }, 'moving the ringing call to another relay node failed');
      this.hangUp('relay failover failed');
    }
  }

  /**
   * A moved call's new SDP down both dialogs: `toB` (the new node's offer) to B by re-INVITE,
   * B's answer through the node, the result to A by re-INVITE unless A already has exactly
   * that (`sentToA`, the SDP A got in the 200 of a move made while ringing).
   */
  private async sendMoved(media: AnchoredMedia, toB: string, sentToA: string | null): Promise<void> {
    const sdpA = this.uas!.remote.sdp;
    const fromB = await modifyOn(this.uac!, this.originB.stamp(toB));
    const toA = await media.reanswer('a', fromB);
    if (sentToA !== null && withoutOrigin(toA) === withoutOrigin(sentToA)) return;
    const fromA = await modifyOn(this.uas!, this.originA.stamp(toA));
    // A may answer from other ports than it last offered: the node must send there. B's
    // answer stands (its ports did not change), so it goes round once more, sent to no one.
    if (mediaLines(fromA) !== mediaLines(sdpA)) {
      await media.reoffer('a', fromA);
      await media.reanswer('a', fromB);
    }
  }

  /** Ends the call on both legs, e.g. when the relay reports its media dead. */
  hangUp(why: string): void {
    this.deps.log.info({ callId: this.callId, why }, 'ending call');
    this.end();
    if (this.uas?.connected) destroyQuietly(this.uas);
    if (this.uac?.connected) destroyQuietly(this.uac);
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.media?.release(this.connected);
    this.deps.onEnd?.(this.callId, this.relayCallId);
  }

  /** BYE on one leg ends the other; a re-INVITE or UPDATE on one is re-offered through the relay to the other. */
  private wire(from: Dialog, to: Dialog, side: Side): void {
    from.on('destroy', () => {
      this.end();
      destroyQuietly(to);
    });
    const reoffer = async (req: SipRequest, res: SipResponse): Promise<void> => {
      try {
        if (!req.body) {
          res.send(200, { body: from.local.sdp });
          return;
        }
        const offer = this.originOf(side === 'a' ? 'b' : 'a').stamp(await this.offerThrough(side, req.body, req.source_address));
        // An UPDATE goes on as an UPDATE: it may come before the answer's ACK, or from a phone
        // that keeps its re-INVITEs for other things, and a re-INVITE there would surprise.
        const answer = req.method === 'UPDATE' ? await updateOn(to, offer) : await to.modify(offer);
        const body = this.originOf(side).stamp(await this.media!.reanswer(side, answer));
        // drachtio-srf answers an offerless re-INVITE with local.sdp: it must be this one now.
        from.local.sdp = body;
        res.send(200, { body });
      } catch (err) {
        this.deps.log.warn({ callId: this.callId, err: (err as Error).message }, 're-offer failed');
        res.send(err instanceof SdpError ? 488 : 500, {});
      }
    };
    from.on('modify', reoffer);
    from.on('update', reoffer);
    from.on('refer', (_req: SipRequest, res: SipResponse) => res.send(603, 'Transfer not supported', {}));
  }

  /**
   * An in-dialog offer through the relay. The PBX's re-offer to a client whose relay node died
   * names the caller's half on its new node when that half moved first: the client then adopts
   * that leg (a hairpin, as at call set-up) rather than anchoring on the same node again.
   */
  private async offerThrough(side: Side, sdp: string, source: string): Promise<string> {
    const media = this.media!;
    if (side === 'a' && this.toClient && media instanceof AnchoredMedia && (media.loss || media.standIn)) {
      const adopted = await adoptHairpin(this.deps.pool, sdp, this.legs!.answerer);
      if (adopted) {
        media.release();
        this.media = new HairpinMedia(this.deps.pool, adopted.node, adopted.ref, adopted.sdp, this.legs!.answerer, this.legs!.offerer);
        this.hairpinOf = adopted.ref.callId;
        return adopted.sdp;
      }
    }
    return media.reoffer(side, sdp, source);
  }

  private originOf(side: Side): OriginKeeper {
    return side === 'a' ? this.originA : this.originB;
  }

  /** The relay node this call's media is on, if it is anchored on one (not a hairpin). */
  /** Both dialogs are up: the B2BUA has answered the caller (a phone may say so a moment sooner). */
  get isConnected(): boolean {
    return this.connected && !this.ended;
  }

  get relayNode(): string | null {
    return this.media instanceof AnchoredMedia ? (this.media.on?.id ?? null) : this.media instanceof HairpinMedia ? this.media.on.id : null;
  }

  /** Where this call's media is while it is answered and settled on a node of its own (MediaWatch). */
  mediaOnNode(): { node: RelayNode; callId: string; placement: number; placedAt: number } | null {
    const at = this.media instanceof AnchoredMedia && this.isConnected ? this.media.settled : null;
    return at ? { ...at, callId: this.relayCallId } : null;
  }

  /** The node this call's media is on and its id there (a hairpin's: its owner's), for `keylatch status`. */
  get mediaPlace(): { node: RelayNode; relayCallId: string; hairpin: boolean } | null {
    const m = this.media;
    if (m instanceof AnchoredMedia) return m.on ? { node: m.on, relayCallId: this.relayCallId, hairpin: false } : null;
    if (m instanceof HairpinMedia) return { node: m.on, relayCallId: m.owner, hairpin: true };
    return null;
  }

  /** For a hairpinned call: the owning call's id on its node. */
  get hairpinOwner(): string | null {
    return this.media instanceof HairpinMedia ? this.media.owner : null;
  }

  /**
   * Its relay node is gone, or forgot the call while alive (`forgotten`: restarted, or a worker
   * of it died): the next offer, or moveMedia, places the call again, on another node unless
   * the node only forgot it.
   */
  relayLost(forgotten = false): void {
    if (this.media instanceof AnchoredMedia) this.media.loss = forgotten ? 'forgot' : 'died';
    if (this.media instanceof HairpinMedia) this.media.lost = true;
  }

  /**
   * The relay node under this call died: the call moves to another. The new node gets A's last
   * SDP as a fresh offer; its SDP goes to B by re-INVITE, B's answer back through it to A by
   * another. Key legs get the new node's key in that SDP (over TLS/WSS, as ever) and prove it
   * there; guarded legs learn again in the window the offer opened. A call that cannot move is
   * ended rather than left silent. A call still ringing only notes the loss here: it moves
   * when B's answer comes (AnchoredMedia.answerFromB, then finishRingingMove).
   */
  async moveMedia(): Promise<void> {
    const media = this.media;
    if (!(media instanceof AnchoredMedia) || !media.loss || this.ended || !this.connected || !this.uas || !this.uac) return;
    const { log } = this.deps;
    const started = Date.now();
    const from = media.on?.id ?? null;
    try {
      await this.sendMoved(media, await media.move('a', this.uas.remote.sdp), null);
      this.deps.pool.moves.moved++;
      log.info({ callId: this.callId, from, to: media.on?.id ?? null, ms: Date.now() - started }, 'call moved to another relay node');
    } catch (err) {
      this.deps.pool.moves.failed++;
      log.error({ callId: this.callId, from, err: (err as Error).message }, 'moving the call to another relay node failed');
      this.hangUp('relay failover failed');
    }
  }

  /** `X-Keylatch-Direct: no` on an INVITE keeps that call's media on the relay (docs/direct-media.md). */
  private policies(toClient: Binding | null): { offerer: LegOptions; answerer: LegOptions } {
    const secure = isSecureTransport(transportOf(this.req));
    const fromClient = toClient === null;
    let announces = false;
    try {
      announces = parseSdp(this.req.body).announcesKeylatch;
    } catch {
      /* the relay's own parse reports bad SDP */
    }
    // Per call, whoever sends the INVITE (a client, or the PBX for a recorded call) may keep media on the relay.
    const direct = !/^\s*(no|false|off)\s*$/i.test(this.req.get(DIRECT_HEADER) ?? '');
    const offerer: LegOptions = {
      policy: fromClient && announces && secure ? 'key' : 'guarded',
      secure,
      signallingAddress: this.req.source_address,
      direct,
    };
    const answerer: LegOptions = toClient
      ? { policy: toClient.keylatch && toClient.secure ? 'key' : 'guarded', secure: toClient.secure, signallingAddress: toClient.source.address, direct }
      : { policy: 'guarded', secure: false, signallingAddress: this.deps.pbx!.host, direct };
    return { offerer, answerer };
  }

  private async route(): Promise<Route> {
    const { sip, pbx, log } = this.deps;
    if (!sip.pbx || !sip.advertisedAddress || !pbx) return { reject: 503, reason: 'No PBX configured' };
    if (this.arrivedOn === this.deps.srf && this.deps.isOwnLeg(this.callId)) {
      // A record-routing PBX sent our own leg back to us: one drachtio-server cannot hold both
      // dialogs (it keys them by Call-ID and From tag), so say so instead of half-connecting.
      log.error({ callId: this.callId }, 'the PBX looped our own call back (a record-routing proxy): configure sip.pbxDrachtio');
      return { reject: 482, reason: 'Loop Detected (keylatch needs sip.pbxDrachtio for a proxy PBX)' };
    }
    return routeRequest(this.req, { ...this.deps, pbx }, this.arrivedOn !== this.deps.srf);
  }

  private refuse(err: unknown): void {
    if (err instanceof SdpError) return this.res.send(488, 'Not Acceptable Here', { headers: { Warning: `399 keylatch "${err.message}"` } });
    if (err instanceof PortPoolExhausted) return this.res.send(503, 'Media ports exhausted', {});
    if (err instanceof NoRelayAvailable || err instanceof NgTimeout) return this.res.send(503, 'No media relay available', {});
    if (err instanceof NgRefused) return this.res.send(488, 'Not Acceptable Here', { headers: { Warning: `399 keylatch "${err.reason.replace(/"/g, "'")}"` } });
    if (err instanceof RelayError && err.code === 'insecure-key-transport') return this.res.send(403, 'Key requires TLS or WSS', {});
    throw err;
  }
}
