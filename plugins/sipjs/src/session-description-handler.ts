import { randomInt } from 'node:crypto';
import type {
  BodyAndContentType,
  Session,
  SessionDescriptionHandler,
  SessionDescriptionHandlerFactory,
  SessionDescriptionHandlerModifier,
  SessionDescriptionHandlerOptions,
} from 'sip.js';
import { KeylatchPluginError } from './errors';
import { DEFAULT_MEDIA_OPTIONS, MediaSession, type MediaSessionOptions } from './media-session';
import { isDtmfString } from './rtp';
import { answerDirection, buildSdp, parseRemote, type Codec, type Direction, type LocalMedia, type RemoteMedia } from './sdp';

const SDP = 'application/sdp';

/** What SIP.js passes as sessionDescriptionHandlerOptions; `hold` is the convention its own handlers use. */
export interface KeylatchDescriptionOptions extends SessionDescriptionHandlerOptions {
  hold?: boolean;
}


export interface KeylatchHandlerOptions extends Partial<MediaSessionOptions> {
  /** Called with each new call's media, before any SDP is made: the place to attach listeners. */
  onMedia?: (media: MediaSession, session: Session) => void;
}

async function modify(type: 'offer' | 'answer', sdp: string, modifiers: SessionDescriptionHandlerModifier[] | undefined): Promise<string> {
  let description: { type: string; sdp?: string } = { type, sdp };
  for (const m of modifiers ?? []) description = await m(description);
  return description.sdp ?? sdp;
}

const sends = (d: Direction): boolean => d === 'sendrecv' || d === 'sendonly';
const receives = (d: Direction): boolean => d === 'sendrecv' || d === 'recvonly';

/** Our direction once the answer is in: we send only if we offered to and they agreed to receive. */
function agreed(offered: Direction, answered: Direction): Direction {
  const s = sends(offered) && receives(answered);
  const r = receives(offered) && sends(answered);
  return s ? (r ? 'sendrecv' : 'sendonly') : r ? 'recvonly' : 'inactive';
}

function pickCodec(remote: RemoteMedia, ours: Codec[]): { codec: Codec; pt: number } {
  const codec = remote.codecs.find((c) => ours.includes(c.codec));
  if (!codec) throw new KeylatchPluginError('no-common-codec', `no codec in common: they offer ${remote.codecs.map((c) => c.codec).join(', ') || 'none we know'}, we have ${ours.join(', ')}`);
  return codec;
}

/**
 * SIP.js's media extension point, for plain RTP through keylatch. It tracks offer/answer
 * (RFC 3264) itself: a description set while our offer is outstanding is the answer; otherwise
 * it is an offer that the next getDescription answers.
 */
export class KeylatchSessionDescriptionHandler implements SessionDescriptionHandler {
  readonly media: MediaSession;
  private offered: LocalMedia | null = null;
  private pendingOffer: RemoteMedia | null = null;
  private lastRemoteOrigin: string | null = null;
  private holding = false;
  private readonly sessionId = randomInt(1, 2 ** 31);
  private version = 0;

  constructor(options: MediaSessionOptions) {
    this.media = new MediaSession(options);
  }

  async getDescription(options?: KeylatchDescriptionOptions, modifiers?: SessionDescriptionHandlerModifier[]): Promise<BodyAndContentType> {
    if (options?.hold !== undefined) this.holding = options.hold;
    const local = await this.media.open();
    this.version++;
    let sdp: string;
    let type: 'offer' | 'answer';
    if (this.pendingOffer) {
      const offer = this.pendingOffer;
      this.pendingOffer = null;
      const codec = this.guard(() => pickCodec(offer, this.media.options.codecs));
      const direction = answerDirection(offer.direction, this.holding);
      this.guard(() => this.media.apply(offer, codec, direction));
      sdp = buildSdp({ ...local, direction }, { sessionId: this.sessionId, version: this.version, answering: { index: offer.index, mLines: offer.mLines, codecs: [codec], dtmfPt: offer.dtmfPt, rtcpMux: offer.rtcpMux } });
      type = 'answer';
    } else {
      this.offered = { ...local, direction: this.holding ? 'sendonly' : 'sendrecv' };
      sdp = buildSdp(this.offered, { sessionId: this.sessionId, version: this.version });
      type = 'offer';
    }
    return { body: await modify(type, sdp, modifiers), contentType: SDP };
  }

  async setDescription(sdp: string, options?: KeylatchDescriptionOptions, modifiers?: SessionDescriptionHandlerModifier[]): Promise<void> {
    if (options?.hold !== undefined) this.holding = options.hold;
    const isAnswer = this.offered !== null;
    const remote = this.guard(() => parseRemote(sdp));
    const origin = /^o=(.*)$/m.exec(sdp)?.[1] ?? null;
    // SIP.js may hand us the same answer twice (183 then 200): that is no new offer.
    const repeated = !isAnswer && origin !== null && origin === this.lastRemoteOrigin;
    const text = await modify(isAnswer || repeated ? 'answer' : 'offer', sdp, modifiers);
    const modified = text === sdp ? remote : this.guard(() => parseRemote(text));
    this.lastRemoteOrigin = origin;
    if (!isAnswer && !repeated) {
      this.pendingOffer = modified;
      return;
    }
    const offered = this.offered ?? this.media.localMedia(this.holding ? 'sendonly' : 'sendrecv');
    const codec = this.guard(() => pickCodec(modified, this.media.options.codecs));
    this.guard(() => this.media.apply(modified, codec, agreed(offered.direction, modified.direction)));
    this.offered = null;
  }

  hasDescription(contentType: string): boolean {
    return contentType === SDP;
  }

  async rollbackDescription(): Promise<void> {
    this.offered = null;
    this.pendingOffer = null;
  }

  sendDtmf(tones: string, options?: unknown): boolean {
    const duration = (options as { duration?: number } | undefined)?.duration;
    if (!isDtmfString(tones)) return false;
    void this.media.sendDtmf(tones, duration);
    return true;
  }

  close(): void {
    this.media.close();
  }

  /** Typed errors reach SIP.js (which refuses the SDP) and the application's 'failed' listener. */
  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof KeylatchPluginError) this.media.report(err);
      throw err;
    }
  }
}

/** True for the transports over which a key may travel. */
export function isSecureProtocol(protocol: string): boolean {
  return /^(WSS|TLS)$/i.test(protocol);
}

/**
 * The factory to give SIP.js's UserAgent as sessionDescriptionHandlerFactory. Whether the
 * signalling is secure comes from the UserAgent's transport, never from options.
 */
export function keylatchSessionDescriptionHandlerFactory(defaults: KeylatchHandlerOptions = {}): SessionDescriptionHandlerFactory {
  return (session: Session, options?: object): SessionDescriptionHandler => {
    const { onMedia, ...media } = { ...defaults, ...(options as KeylatchHandlerOptions | undefined) };
    const protocol = session.userAgent.transport.protocol;
    const handler = new KeylatchSessionDescriptionHandler({ ...DEFAULT_MEDIA_OPTIONS, ...media, secureSignalling: isSecureProtocol(protocol), transportName: protocol });
    onMedia?.(handler.media, session);
    return handler;
  };
}

/** The media of a SIP.js session whose handler is ours. */
export function mediaOf(session: Session): MediaSession | undefined {
  const handler = session.sessionDescriptionHandler;
  return handler instanceof KeylatchSessionDescriptionHandler ? handler.media : undefined;
}
