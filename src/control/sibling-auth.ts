/**
 * How the processes of one `keylatch edge --processes N` know each other on their loopback
 * channels (rooms, src/rooms/sibling-rooms.ts; hairpins, src/relay-pool/sibling-relays.ts).
 * The supervisor draws a secret at each start and gives it only to its processes
 * (SIBLING_SECRET_ENV). A request is a sibling's when it comes from loopback, names a process
 * index of this edge other than the receiver's, was signed within MAX_SKEW_MS, and carries an
 * HMAC-SHA256 under a key derived from that secret; anything else gets no answer at all. Leg
 * keys cross a channel only sealed (ng-key-seal.ts) under a second key from the same secret.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import bencode from 'bencode';
import type { EdgeShare } from '../edge-processes';
import type { Logger } from '../log';
import { isLoopback, ngSealKey } from './ng-key-seal';
import type { NgDict } from './ng-options';

/**
 * A request signed longer ago than this (or this far ahead) is refused: no replay of old ones.
 * (Replaying a fresh one takes reading loopback traffic, which takes root on this host.)
 */
export const MAX_SKEW_MS = 30_000;

/** The two keys of one channel: each channel its own, so a request for one is nothing to another. */
export function siblingKeys(secret: string, channel: 'rooms' | 'relays'): { macKey: Buffer; sealKey: Buffer } {
  return {
    macKey: createHmac('sha256', secret).update(`keylatch/edge sibling ${channel} mac`).digest(),
    sealKey: ngSealKey(`${secret}/keylatch edge sibling ${channel} seal`),
  };
}

/** Signs an ng dictionary: HMAC-SHA256 over its bencoding (canonical: keys sorted) without `mac`. */
export function signSibling(key: Buffer, dict: NgDict): string {
  return createHmac('sha256', key).update(bencode.encode(dict)).digest('hex');
}

/** What process `index` sends: the request with its index, the time, and the signature over both. */
export function signedAs(index: number, key: Buffer): (req: NgDict) => NgDict {
  return (req) => {
    const body = { ...req, from: index, ts: Date.now() };
    return { ...body, mac: signSibling(key, body) };
  };
}

/**
 * Whether a decoded request is a sibling's: from loopback, a process index of this edge other
 * than `self`, fresh, and signed under the siblings' key. Never throws.
 */
export function fromSibling(req: NgDict, from: string, key: Buffer, share: EdgeShare, now = Date.now()): boolean {
  try {
    if (!isLoopback(from)) return false;
    const { mac, ...rest } = req;
    const index = rest.from;
    const ts = rest.ts;
    if (typeof mac !== 'string' || !/^[0-9a-f]{64}$/.test(mac)) return false;
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= share.count || index === share.index) return false;
    if (typeof ts !== 'number' || Math.abs(now - ts) > MAX_SKEW_MS) return false;
    return timingSafeEqual(Buffer.from(mac, 'hex'), Buffer.from(signSibling(key, rest), 'hex'));
  } catch {
    return false;
  }
}

const REFUSED_LOG_MS = 10_000;

/**
 * NgServer's `admit` for a sibling channel: fromSibling, with what it refuses logged once per
 * REFUSED_LOG_MS with a count, so that a flood cannot flood the log.
 */
export function admitSiblings(key: Buffer, share: EdgeShare, log: Logger, channel: string): (req: NgDict, from: string) => boolean {
  let refused = 0;
  let loggedAt = 0;
  return (req, from) => {
    if (fromSibling(req, from, key, share)) return true;
    refused++;
    const now = Date.now();
    if (now - loggedAt >= REFUSED_LOG_MS) {
      log.warn({ from, refused }, `${channel}: refused requests that are not from a sibling edge process`);
      [refused, loggedAt] = [0, now];
    }
    return false;
  };
}
