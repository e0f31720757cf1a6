import * as sdpTransform from 'sdp-transform';
import { SdpError, rewriteSdp } from '../sdp/session';
import type { G711Codec, ReceiveMode } from './native-mixer';

/** What a participant's offer settles: the one audio m-line, its codec and telephone-event. */
export interface RoomMedia {
  index: number;
  codec: G711Codec;
  dtmfPt: number | null;
  /** The participant asked to take every speaker's stream itself (a=keylatch-room:forward). */
  wantsForwarding: boolean;
}

export const ROOM_MODE_ATTRIBUTE = 'keylatch-room';

/** The first enabled audio m-line and the first G.711 codec it offers, or SdpError (answered 488). */
export function roomMediaOf(offer: string): RoomMedia {
  const session = sdpTransform.parse(offer);
  const index = session.media.findIndex((m) => m.type === 'audio' && Number(m.port) !== 0);
  if (index < 0) throw new SdpError('a room needs an audio stream');
  const m = session.media[index]!;
  const names = new Map<number, string>((m.rtp ?? []).map((r) => [r.payload, `${r.codec}/${r.rate ?? 8000}`.toUpperCase()]));
  const nameOf = (pt: number): string => names.get(pt) ?? (pt === 0 ? 'PCMU/8000' : pt === 8 ? 'PCMA/8000' : '');
  const payloads = String(m.payloads ?? '').split(' ').filter(Boolean).map(Number);
  // G.711's static payload types only: the mixer's output and the relay's rewriting use 0 and 8.
  const pt = payloads.find((p) => (p === 0 || p === 8) && /^PCM[UA]\/8000$/.test(nameOf(p)));
  if (pt === undefined) throw new SdpError('a room speaks G.711 (PCMU or PCMA, payload type 0 or 8)');
  const dtmf = payloads.find((p) => nameOf(p) === 'TELEPHONE-EVENT/8000');
  const attrs = [...(session.invalid ?? []), ...(m.invalid ?? [])].map((a) => a.value);
  return { index, codec: pt === 0 ? 'PCMU' : 'PCMA', dtmfPt: dtmf ?? null, wantsForwarding: attrs.includes(`${ROOM_MODE_ATTRIBUTE}:forward`) };
}

/**
 * keylatch's answer as the room: the participant's chosen codec (and telephone-event) on its
 * audio m-line at the relay's ports, every other m-line refused, the leg key where it has one,
 * and what it will receive (a=keylatch-room:mix|forward|relay).
 */
export function roomAnswer(offer: string, media: RoomMedia, opts: { address: string; rtpPort: number; rtcpPort: number; keylatchValue?: string; mode: ReceiveMode; sessionId: number; version: number }): string {
  const session = sdpTransform.parse(offer);
  session.origin = { username: 'keylatch', sessionId: opts.sessionId, sessionVersion: opts.version, netType: 'IN', ipVer: 4, address: opts.address };
  session.name = 'keylatch room';
  delete session.invalid;
  session.media.forEach((m, i) => {
    if (i !== media.index) return;
    const keep = new Set<number>([media.codec === 'PCMU' ? 0 : 8, ...(media.dtmfPt === null ? [] : [media.dtmfPt])]);
    m.payloads = [...keep].join(' ');
    m.rtp = (m.rtp ?? []).filter((r) => keep.has(r.payload));
    m.fmtp = (m.fmtp ?? []).filter((f) => keep.has(f.payload));
    for (const key of ['ssrcs', 'ssrcGroups', 'msid', 'crypto', 'rtcpFb', 'ext'] as const) Reflect.deleteProperty(m, key);
    // The room both sends and listens, whatever the participant's role: a listener's own
    // packets are what latch its leg behind a NAT (they are not mixed).
    m.direction = m.direction === 'inactive' ? 'inactive' : m.direction === 'sendonly' ? 'recvonly' : m.direction === 'recvonly' ? 'sendonly' : 'sendrecv';
    m.invalid = [{ value: `${ROOM_MODE_ATTRIBUTE}:${opts.mode}` }];
  });
  const text = sdpTransform.write(session);
  return rewriteSdp(text, {
    address: opts.address,
    media: session.media.map((m, i) => (i === media.index ? { rtpPort: opts.rtpPort, rtcpPort: opts.rtcpPort, rtcpMux: m.rtcpMux === 'rtcp-mux' } : null)),
    keylatchValue: opts.keylatchValue,
  });
}
