/**
 * Leg keys on the ng link. The relay writes each key-policy leg's key into the SDP it returns
 * over ng (a=keylatch:v1 leg=… key=…), and ng is plain UDP: across a network anyone on the path
 * could read the key and take the leg. So a relay answers with keys in clear only to an ng client
 * on its own host (loopback); to anyone else it seals them under a secret the two share
 * (control.ngKeySecret on the relay, media.relayPool.keySecret on the edge), and without that
 * secret it refuses key legs outright. docs/scaling.md and docs/challenge-protocol.md say so.
 *
 *   a=keylatch:v1 leg=<id> sealed=<base64url(IV(12) || AES-256-GCM(key)(32) || tag(16))>
 *   seal key = HKDF-SHA256(ikm = secret, salt = "", info = "keylatch/ng leg-key seal"), aad = leg id
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { KEY_SIZE, formatLegKey } from '../media/challenge';
import { RelayError } from '../media/relay';
import { legOptions, type NgDict } from './ng-options';

const CLEAR_LINE = /^a=keylatch:v1 leg=([A-Za-z0-9_-]{1,64}) key=([A-Za-z0-9_-]{43})\r?$/gm;
const SEALED_LINE = /^a=keylatch:v1 leg=([A-Za-z0-9_-]{1,64}) sealed=([A-Za-z0-9_-]{80})(\r?)$/gm;

/** The AES key both ends derive from the configured secret. */
export function ngSealKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(secret, 'utf8'), Buffer.alloc(0), 'keylatch/ng leg-key seal', KEY_SIZE));
}

export function isLoopback(address: string): boolean {
  const a = address.replace(/^::ffff:/, '');
  return (isIP(a) === 4 && a.startsWith('127.')) || a === '::1';
}

/** The relay's side: every clear key in `sdp` sealed under `sealKey`. */
export function sealLegKeys(sdp: string, sealKey: Buffer): string {
  return sdp.replace(CLEAR_LINE, (line, legId: string, key: string) => {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', sealKey, iv);
    cipher.setAAD(Buffer.from(legId, 'latin1'));
    const box = Buffer.concat([iv, cipher.update(Buffer.from(key, 'base64url')), cipher.final(), cipher.getAuthTag()]);
    return `a=keylatch:v1 leg=${legId} sealed=${box.toString('base64url')}${line.endsWith('\r') ? '\r' : ''}`;
  });
}

/** The edge's side: every sealed key opened again; a box that does not open is an error, not a guess. */
export function unsealLegKeys(sdp: string, sealKey: Buffer | null): string {
  return sdp.replace(SEALED_LINE, (_line, legId: string, sealed: string, cr: string) => {
    if (!sealKey) throw new Error('the relay node sealed a leg key, but media.relayPool.keySecret is not set');
    const box = Buffer.from(sealed, 'base64url');
    const decipher = createDecipheriv('aes-256-gcm', sealKey, box.subarray(0, 12));
    decipher.setAAD(Buffer.from(legId, 'latin1'));
    decipher.setAuthTag(box.subarray(12 + KEY_SIZE));
    let key: Buffer;
    try {
      key = Buffer.concat([decipher.update(box.subarray(12, 12 + KEY_SIZE)), decipher.final()]);
    } catch {
      throw new Error('a sealed leg key from the relay node does not open: media.relayPool.keySecret differs from its control.ngKeySecret');
    }
    return `a=keylatch:${formatLegKey(legId, key)}${cr}`;
  });
}

/** Does this ng request ask for a key leg? Read exactly as the commands read it (ng-options). */
export function asksForKeyLeg(req: NgDict): boolean {
  return (['offerer', 'answerer'] as const).some((side) => legOptions(req, side).policy === 'key');
}

/**
 * What the relay's ng server does with every request and its reply: a key leg for a client off
 * this host is refused unless keys can be sealed; a reply to such a client has its keys sealed.
 */
export function guardKeys(req: Record<string, unknown>, from: string, sealKey: Buffer | null): void {
  if (sealKey || isLoopback(from) || !asksForKeyLeg(req)) return;
  throw new RelayError('insecure-key-transport', `key legs over ng from ${from} need control.ngKeySecret: the key would cross the network in clear`);
}

export function protectReply(reply: Record<string, unknown>, from: string, sealKey: Buffer | null): Record<string, unknown> {
  if (typeof reply.sdp !== 'string' || !/^a=keylatch:v1 leg=\S+ key=/m.test(reply.sdp)) return reply;
  if (sealKey) return { ...reply, sdp: sealLegKeys(reply.sdp, sealKey) };
  if (isLoopback(from)) return reply;
  // A key that reached this point unasked (it should not): never send it off the host in clear.
  return { result: 'error', 'error-reason': 'refusing to send a leg key off this host over ng in clear (set control.ngKeySecret)' };
}
