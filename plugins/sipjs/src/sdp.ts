import { isIP } from 'node:net';
import * as sdpTransform from 'sdp-transform';
import { parseLegKey } from '../../../src/media/challenge';
import { KEYLATCH_ATTRIBUTE, KEYLATCH_VERSION } from '../../../src/sdp/session';
import { KeylatchPluginError } from './errors';

export type Direction = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
export type Codec = 'PCMU' | 'PCMA';

export const STATIC_PT: Record<Codec, number> = { PCMU: 0, PCMA: 8 };
export const DEFAULT_DTMF_PT = 101;
export const PTIME_MS = 20;

export interface LocalMedia {
  address: string;
  rtpPort: number;
  /** null: we offer or accept rtcp-mux only. */
  rtcpPort: number | null;
  direction: Direction;
  codecs: Codec[];
  dtmfPt: number;
  /** Offer rtcp-mux (an answer carries it only when the offer did). */
  rtcpMux: boolean;
  /** In a keylatch room, take every speaker's stream and mix here (a=keylatch-room:forward). */
  roomForward?: boolean;
}

/** What we use from the other side's SDP. */
export interface RemoteMedia {
  address: string;
  rtpPort: number;
  rtcpAddress: string;
  rtcpPort: number;
  rtcpMux: boolean;
  direction: Direction;
  /** Offerer's order; an answer names one. */
  codecs: Array<{ codec: Codec; pt: number }>;
  dtmfPt: number | null;
  /** The m-line index we use; the others are refused in an answer. */
  index: number;
  /** Every m-line's media and protocol, so an answer can refuse the others in kind. */
  mLines: Array<{ type: string; protocol: string }>;
  legKey: { legId: string; key: Buffer } | null;
  announcesKeylatch: boolean;
}

const KEYLATCH_PREFIX = `${KEYLATCH_ATTRIBUTE}:`;

function keylatchValues(parts: Array<{ invalid?: Array<{ value: string }> }>): string[] {
  return parts.flatMap((p) => (p.invalid ?? []).map((a) => a.value).filter((v) => v.startsWith(KEYLATCH_PREFIX)).map((v) => v.slice(KEYLATCH_PREFIX.length)));
}

function codecsOf(m: sdpTransform.MediaDescription): Array<{ codec: Codec; pt: number }> {
  const out: Array<{ codec: Codec; pt: number }> = [];
  for (const pt of String(m.payloads ?? '').split(' ').filter(Boolean).map(Number)) {
    const rtpmap = m.rtp.find((r) => r.payload === pt);
    const name = rtpmap ? rtpmap.codec.toUpperCase() : pt === 0 ? 'PCMU' : pt === 8 ? 'PCMA' : '';
    if ((name === 'PCMU' || name === 'PCMA') && (!rtpmap || rtpmap.rate === 8000)) out.push({ codec: name, pt });
  }
  return out;
}

export function parseRemote(text: string): RemoteMedia {
  let s: sdpTransform.SessionDescription;
  try {
    s = sdpTransform.parse(text);
  } catch (err) {
    throw new KeylatchPluginError('bad-remote-sdp', `unparsable SDP: ${(err as Error).message}`);
  }
  const index = (s.media ?? []).findIndex((m) => m.type === 'audio' && Number(m.port) > 0 && /^RTP\/AVP$/i.test(m.protocol));
  if (index < 0) throw new KeylatchPluginError('bad-remote-sdp', 'no enabled RTP/AVP audio m-line');
  const m = s.media[index]!;
  const address = m.connection?.ip ?? s.connection?.ip;
  if (!address || isIP(address) === 0) throw new KeylatchPluginError('bad-remote-sdp', 'audio m-line has no usable c= address');
  const codecs = codecsOf(m);
  const dtmf = m.rtp.find((r) => r.codec.toLowerCase() === 'telephone-event' && r.rate === 8000);
  const rtcpMux = m.rtcpMux === 'rtcp-mux';
  const values = keylatchValues([s, m]);
  return {
    address,
    rtpPort: Number(m.port),
    rtcpAddress: m.rtcp?.address && isIP(m.rtcp.address) ? m.rtcp.address : address,
    rtcpPort: rtcpMux ? Number(m.port) : m.rtcp?.port ?? Number(m.port) + 1,
    rtcpMux,
    direction: (m.direction ?? s.direction ?? 'sendrecv') as Direction,
    codecs,
    dtmfPt: dtmf ? dtmf.payload : null,
    index,
    mLines: s.media.map((x) => ({ type: x.type, protocol: x.protocol })),
    legKey: values.map(parseLegKey).find((k) => k !== null) ?? null,
    announcesKeylatch: values.length > 0,
  };
}

/** RFC 3264 section 6.1: what we may do given what the other side said, and whether we hold. */
export function answerDirection(offered: Direction, holding: boolean): Direction {
  const weSend = !holding && (offered === 'sendrecv' || offered === 'recvonly');
  const weReceive = offered === 'sendrecv' || offered === 'sendonly';
  return weSend ? (weReceive ? 'sendrecv' : 'sendonly') : weReceive ? 'recvonly' : 'inactive';
}

export interface BuildOptions {
  sessionId: number;
  version: number;
  /** When answering: the offer's m-line count and which one we take, so the rest are refused in place. */
  answering?: { index: number; mLines: Array<{ type: string; protocol: string }>; codecs: Array<{ codec: Codec; pt: number }>; dtmfPt: number | null; rtcpMux: boolean };
}

export function buildSdp(local: LocalMedia, opts: BuildOptions): string {
  const family = isIP(local.address) === 6 ? 'IP6' : 'IP4';
  const chosen = opts.answering ? opts.answering.codecs.slice(0, 1) : local.codecs.map((codec) => ({ codec, pt: STATIC_PT[codec] }));
  const dtmfPt = opts.answering ? opts.answering.dtmfPt : local.dtmfPt;
  const payloads = [...chosen.map((c) => c.pt), ...(dtmfPt !== null ? [dtmfPt] : [])];
  const mux = opts.answering ? opts.answering.rtcpMux : local.rtcpMux;
  const audio = [
    `m=audio ${local.rtpPort} RTP/AVP ${payloads.join(' ')}`,
    ...chosen.map((c) => `a=rtpmap:${c.pt} ${c.codec}/8000`),
    ...(dtmfPt !== null ? [`a=rtpmap:${dtmfPt} telephone-event/8000`, `a=fmtp:${dtmfPt} 0-16`] : []),
    `a=ptime:${PTIME_MS}`,
    ...(mux ? ['a=rtcp-mux'] : []),
    ...(!mux || local.rtcpPort !== null ? [`a=rtcp:${mux ? local.rtpPort : local.rtcpPort}`] : []),
    `a=${local.direction}`,
    ...(local.roomForward ? ['a=keylatch-room:forward'] : []),
  ];
  const index = opts.answering?.index ?? 0;
  const lines = opts.answering?.mLines ?? [{ type: 'audio', protocol: 'RTP/AVP' }];
  const media = lines.flatMap((m, i) => (i === index ? audio : [`m=${m.type} 0 ${m.protocol} 0`]));
  return [
    'v=0',
    `o=- ${opts.sessionId} ${opts.version} IN ${family} ${local.address}`,
    's=keylatch',
    `c=IN ${family} ${local.address}`,
    't=0 0',
    `a=${KEYLATCH_PREFIX}${KEYLATCH_VERSION}`,
    ...media,
    '',
  ].join('\r\n');
}
