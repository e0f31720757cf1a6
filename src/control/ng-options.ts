import { isIP } from 'node:net';
import type { LegHints, LegOptions } from '../media/call';
import { RelayError } from '../media/relay';

/** A decoded ng request: bencode dictionaries with strings already decoded. */
export type NgDict = Record<string, unknown>;

function str(d: NgDict, key: string, required: true): string;
function str(d: NgDict, key: string, required?: false): string | undefined;
function str(d: NgDict, key: string, required = false): string | undefined {
  const v = d[key];
  if (v === undefined) {
    if (required) throw new RelayError('bad-request', `missing "${key}"`);
    return undefined;
  }
  if (typeof v !== 'string') throw new RelayError('bad-request', `"${key}" must be a string`);
  return v;
}

/** ng flags come as a list of words; Kamailio passes our own options the same way (word or word=value). */
function flags(d: NgDict): Map<string, string> {
  const list = d.flags;
  const out = new Map<string, string>();
  if (list === undefined) return out;
  if (!Array.isArray(list)) throw new RelayError('bad-request', '"flags" must be a list');
  for (const f of list) {
    if (typeof f !== 'string') continue;
    const eq = f.indexOf('=');
    out.set(eq < 0 ? f : f.slice(0, eq), eq < 0 ? 'yes' : f.slice(eq + 1));
  }
  return out;
}

/** An option given either as a dictionary key or as a flag. */
function option(d: NgDict, name: string): string | undefined {
  return str(d, name) ?? flags(d).get(name);
}

/** rtpengine's "received-from": ["IP4", "203.0.113.5"]: where the signalling came from. */
export function receivedFrom(d: NgDict): string | undefined {
  const v = d['received-from'] ?? d['received from'];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length !== 2 || typeof v[1] !== 'string' || isIP(v[1]) === 0) {
    throw new RelayError('bad-request', '"received-from" must be ["IP4"|"IP6", address]');
  }
  return v[1];
}

/** rtpengine spells flags with spaces or dashes, in any case ("SIP source address", "SIP-source-address"). */
const normalised = (flag: string): string => flag.toLowerCase().replace(/[\s_]+/g, '-');

function hasFlag(d: NgDict, name: string): boolean {
  for (const f of flags(d).keys()) if (normalised(f) === name) return true;
  return false;
}

/**
 * What an offer or answer tells about where the media of the side that sent its SDP comes
 * from, in rtpengine's own terms: received-from (the SIP source), media-address (overrides
 * both SDP and SIP source), trust-address (the SDP names the endpoint, the SIP source is a
 * hop), SIP-source-address (the reverse), strict-source (only named IPs may lock).
 */
export function legHints(d: NgDict): LegHints {
  const mediaAddress = str(d, 'media-address') ?? str(d, 'media address') ?? flags(d).get('media-address');
  if (mediaAddress !== undefined && isIP(mediaAddress) === 0) throw new RelayError('bad-request', '"media-address" must be an IP address');
  const sipSource = hasFlag(d, 'sip-source-address');
  const trustSdp = hasFlag(d, 'trust-address');
  if (sipSource && trustSdp) throw new RelayError('bad-request', '"trust-address" and "SIP-source-address" contradict each other');
  const signallingAddress = receivedFrom(d);
  return {
    ...(signallingAddress ? { signallingAddress } : {}),
    ...(mediaAddress ? { mediaAddress } : {}),
    ...(sipSource ? { trust: 'sip-source' as const } : trustSdp ? { trust: 'sdp' as const } : {}),
    ...(hasFlag(d, 'strict-source') ? { strictSource: true } : {}),
  };
}

/**
 * keylatch-<side> = key | guarded; secure-<side> marks that side's signalling path as TLS/WSS,
 * the only path its leg key may travel; direct = no keeps the call's media on the relay.
 */
export function legOptions(d: NgDict, side: 'offerer' | 'answerer'): Partial<LegOptions> {
  const policy = option(d, `keylatch-${side}`);
  if (policy !== undefined && policy !== 'key' && policy !== 'guarded') {
    throw new RelayError('bad-request', `"keylatch-${side}" must be "key" or "guarded"`);
  }
  const secure = option(d, `secure-${side}`);
  // direct=no keeps this call's media on the relay (docs/direct-media.md); it names the call, not a side.
  const direct = option(d, 'direct');
  return {
    ...(policy ? { policy } : {}),
    secure: secure === 'yes' || secure === 'true',
    ...(direct !== undefined ? { direct: !['no', 'false', 'off'].includes(direct.toLowerCase()) } : {}),
  };
}

export const required = (d: NgDict, key: string): string => str(d, key, true);
export const optional = (d: NgDict, key: string): string | undefined => str(d, key);
