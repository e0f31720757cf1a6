import { isIP } from 'node:net';
import * as sdpTransform from 'sdp-transform';

export class SdpError extends Error {
  override name = 'SdpError';
}

export type Direction = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';

/** What the relay needs to know about one m-line of a leg's SDP. */
export interface MediaDescription {
  index: number;
  type: string;
  /** 0 means the stream is disabled (RFC 3264 section 8.2). */
  port: number;
  address: string;
  rtcpPort: number;
  rtcpAddress: string;
  rtcpMux: boolean;
  direction: Direction;
  /** Old-style hold (RFC 2543): c=0.0.0.0. */
  nullAddress: boolean;
  clockRates: Map<number, number>;
}

export interface SessionDescription {
  media: MediaDescription[];
  /** The client announced keylatch support (a=keylatch:v1 without a key). */
  announcesKeylatch: boolean;
}

const STATIC_CLOCK_RATES: Record<number, number> = { 0: 8000, 3: 8000, 4: 8000, 8: 8000, 9: 8000, 13: 8000, 18: 8000, 34: 90000, 26: 90000, 31: 90000 };
export const KEYLATCH_ATTRIBUTE = 'keylatch';
export const KEYLATCH_VERSION = 'v1';
const MAX_SDP_BYTES = 64 * 1024;

/** c=0.0.0.0 (or ::): RFC 2543 hold, no address at all. */
export function isNullAddress(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

function directionOf(m: sdpTransform.MediaDescription, session: sdpTransform.SessionDescription): Direction {
  return (m.direction ?? session.direction ?? 'sendrecv') as Direction;
}

/**
 * The last few SDPs parsed, by their text. One call's offer is read by the edge (does it
 * announce keylatch?) and then by the relay, and a hairpin check reads it too: parsed once,
 * the result shared. Results are frozen, so one reader cannot change what another sees.
 */
const recent = new Map<string, SessionDescription>();
const RECENT_MAX = 32;

export function parseSdp(text: string): SessionDescription {
  const known = typeof text === 'string' ? recent.get(text) : undefined;
  if (known) return known;
  const parsed = parseFresh(text);
  if (recent.size >= RECENT_MAX) recent.delete(recent.keys().next().value!);
  recent.set(text, parsed);
  return parsed;
}

function parseFresh(text: string): SessionDescription {
  if (typeof text !== 'string' || text.length === 0) throw new SdpError('SDP is empty');
  if (text.length > MAX_SDP_BYTES) throw new SdpError(`SDP larger than ${MAX_SDP_BYTES} bytes`);
  if (!/^v=0\r?\n/.test(text)) throw new SdpError('SDP must start with v=0');
  let session: sdpTransform.SessionDescription;
  try {
    session = sdpTransform.parse(text);
  } catch (err) {
    throw new SdpError(`unparsable SDP: ${(err as Error).message}`);
  }
  if (!session.origin) throw new SdpError('SDP has no o= line');
  if (!session.media || session.media.length === 0) throw new SdpError('SDP has no m= line');
  const media = session.media.map((m, index): MediaDescription => {
    const port = Number(m.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new SdpError(`m-line ${index}: bad port`);
    const address = m.connection?.ip ?? session.connection?.ip;
    if (port !== 0 && (!address || isIP(address) === 0)) throw new SdpError(`m-line ${index}: no usable c= address`);
    const rtcpPort = m.rtcp?.port !== undefined ? Number(m.rtcp.port) : port + 1;
    if (!Number.isInteger(rtcpPort) || rtcpPort < 0 || rtcpPort > 65535) throw new SdpError(`m-line ${index}: bad a=rtcp port`);
    const clockRates = new Map<number, number>();
    String(m.payloads ?? '')
      .split(' ')
      .filter(Boolean)
      .forEach((pt) => {
        const n = Number(pt);
        if (STATIC_CLOCK_RATES[n]) clockRates.set(n, STATIC_CLOCK_RATES[n]);
      });
    for (const r of m.rtp ?? []) if (r.rate) clockRates.set(r.payload, r.rate);
    return {
      index,
      type: m.type,
      port,
      address: address ?? '0.0.0.0',
      rtcpPort,
      rtcpAddress: m.rtcp?.address && isIP(m.rtcp.address) ? m.rtcp.address : (address ?? '0.0.0.0'),
      rtcpMux: m.rtcpMux === 'rtcp-mux',
      direction: directionOf(m, session),
      nullAddress: address !== undefined && isNullAddress(address),
      clockRates,
    };
  });
  if (media.every((m) => m.port === 0)) throw new SdpError('SDP has no usable media: every m-line is disabled');
  const announcesKeylatch = [session, ...session.media].some((part) =>
    (part.invalid ?? []).some((a) => a.value === `${KEYLATCH_ATTRIBUTE}:${KEYLATCH_VERSION}`),
  );
  return Object.freeze({ media: Object.freeze(media.map((m) => Object.freeze(m))) as MediaDescription[], announcesKeylatch });
}

export interface RelayedMedia {
  rtpPort: number;
  rtcpPort: number;
  /** Offer (or accept) rtcp-mux toward this leg. */
  rtcpMux: boolean;
}

export interface RewriteOptions {
  address: string;
  /** Per m-line; null leaves the m-line disabled (port 0). */
  media: Array<RelayedMedia | null>;
  /** Added at session level, e.g. the leg key; any a=keylatch from the other side is removed. */
  keylatchValue?: string;
}

const ICE_ATTRIBUTES = ['candidates', 'iceUfrag', 'icePwd', 'iceOptions', 'endOfCandidates', 'remoteCandidates', 'iceLite'] as const;

/** The relay does not take part in ICE, so candidates would only point past it. */
function dropIce(part: object): void {
  for (const key of ICE_ATTRIBUTES) Reflect.deleteProperty(part, key);
}

/** The other leg's SDP as this leg should see it: every address and port is the relay's. */
export function rewriteSdp(text: string, opts: RewriteOptions): string {
  const session = sdpTransform.parse(text);
  const ipVer = isIP(opts.address) === 6 ? 6 : 4;
  const stripOurs = (part: { invalid?: Array<{ value: string }> }): void => {
    if (part.invalid) part.invalid = part.invalid.filter((a) => !a.value.startsWith(`${KEYLATCH_ATTRIBUTE}:`));
  };
  const sessionNull = session.connection?.ip === '0.0.0.0';
  if (session.origin) session.origin = { ...session.origin, ipVer, address: opts.address };
  if (session.connection) session.connection = { version: ipVer, ip: sessionNull ? '0.0.0.0' : opts.address };
  dropIce(session);
  stripOurs(session);
  session.media.forEach((m, i) => {
    const relayed = opts.media[i] ?? null;
    dropIce(m);
    stripOurs(m);
    if (!relayed) {
      m.port = 0;
      delete m.rtcp;
      return;
    }
    const nullHold = (m.connection?.ip ?? session.connection?.ip) === '0.0.0.0';
    m.port = relayed.rtpPort;
    if (m.connection || !session.connection) m.connection = { version: ipVer, ip: nullHold ? '0.0.0.0' : opts.address };
    if (relayed.rtcpMux) {
      m.rtcpMux = 'rtcp-mux';
      m.rtcp = { port: relayed.rtpPort, netType: 'IN', ipVer, address: opts.address };
    } else {
      delete m.rtcpMux;
      m.rtcp = { port: relayed.rtcpPort, netType: 'IN', ipVer, address: opts.address };
    }
  });
  if (opts.keylatchValue) {
    session.invalid = [...(session.invalid ?? []), { value: `${KEYLATCH_ATTRIBUTE}:${opts.keylatchValue}` }];
  }
  return sdpTransform.write(session);
}
