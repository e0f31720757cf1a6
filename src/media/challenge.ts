/**
 * The keylatch challenge protocol: proof of key possession on the media path.
 *
 * This is the one module both the relay (verifier) and the SIP.js plugin (prover) import.
 * docs/challenge-protocol.md is the specification; keep the two in step.
 *
 * Messages are STUN-framed (RFC 8489 header and magic cookie) so RFC 7983 demultiplexing
 * (first byte 0..3) separates them from RTP/RTCP on the same 5-tuple, and so middleboxes
 * treat them like the STUN keepalives they already know.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';

export interface Endpoint {
  address: string;
  port: number;
}

export const MAGIC_COOKIE = 0x2112a442;
const HEADER_SIZE = 20;

/** Methods from the unassigned STUN range; classes per RFC 8489 section 5. */
export const METHOD_LATCH = 0x0c8;
export const METHOD_PROVE = 0x0c9;
/** Relay to client: where the other client of the call is, and the key the two share (direct media). */
export const METHOD_RENDEZVOUS = 0x0ca;
const CLASS_REQUEST = 0b00;
const CLASS_INDICATION = 0b01;
const CLASS_SUCCESS = 0b10;

const ATTR_XOR_PEER_ADDRESS = 0x0012;
const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
const ATTR_PADDING = 0x0026;
/** Comprehension-optional range, so a stock STUN stack ignores rather than rejects them. */
export const ATTR_LEG_ID = 0xc0a1;
export const ATTR_NONCE = 0xc0a2;
export const ATTR_MAC = 0xc0a3;
export const ATTR_COUNTER = 0xc0a4;
export const ATTR_PAIR_ID = 0xc0a5;
export const ATTR_FLAGS = 0xc0a6;
export const ATTR_WRAPPED_KEY = 0xc0a7;
const KNOWN_ATTRIBUTES = new Set([ATTR_LEG_ID, ATTR_NONCE, ATTR_MAC, ATTR_COUNTER, ATTR_PAIR_ID, ATTR_FLAGS, ATTR_WRAPPED_KEY, ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_PEER_ADDRESS, ATTR_PADDING]);

export const NONCE_SIZE = 16;
export const MAC_SIZE = 32;
export const KEY_SIZE = 32;
export const MAX_LEG_ID_SIZE = 64;
const COUNTER_SIZE = 8;
const FLAGS_SIZE = 4;
const WRAP_IV_SIZE = 12;
const WRAP_TAG_SIZE = 16;
const WRAPPED_KEY_SIZE = WRAP_IV_SIZE + KEY_SIZE + WRAP_TAG_SIZE;
/** The largest sealed message: IPv6 mapping and a 64-byte leg id. */
export const MAX_SEALED_SIZE = HEADER_SIZE + (4 + MAX_LEG_ID_SIZE) + (4 + NONCE_SIZE) + (4 + 20) + (4 + MAC_SIZE);
/** Hellos are padded so the challenge answering them is never larger: no amplification. */
export const HELLO_SIZE = MAX_SEALED_SIZE + 4;

/** HELLO flag: the sender's media currently goes to its peer directly, not through the relay. */
export const HELLO_FLAG_DIRECT = 0x1;
/** RENDEZVOUS flag: the receiver is side "b" of the pair (the call's second leg). */
export const RENDEZVOUS_FLAG_SIDE_B = 0x1;

export type MessageKind = 'hello' | 'challenge' | 'proof' | 'success' | 'rendezvous';

/**
 * Protocol revision 2: a hello is itself keyed (MAC over leg, counter and flags), so a source
 * that knows nothing draws nothing, and its counter keeps a captured hello from being replayed.
 */
export interface Hello {
  kind: 'hello';
  txid: Buffer;
  legId: string;
  counter: bigint;
  flags: number;
  mac: Buffer;
}

/** The relay's word to one client of a call: the other client's mapping and their pair key (wrapped). */
export interface Rendezvous {
  kind: 'rendezvous';
  txid: Buffer;
  legId: string;
  counter: bigint;
  flags: number;
  pairId: string;
  peer: Endpoint;
  wrappedKey: Buffer;
  mac: Buffer;
}

/** challenge, proof and success share one shape; their MACs use different labels. */
export interface Sealed {
  kind: 'challenge' | 'proof' | 'success';
  txid: Buffer;
  legId: string;
  nonce: Buffer;
  observed: Endpoint;
  mac: Buffer;
}

export type LatchMessage = Hello | Sealed | Rendezvous;

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

const LEG_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export function isValidLegId(legId: string): boolean {
  return LEG_ID_PATTERN.test(legId);
}

export function newLegId(): string {
  return randomBytes(12).toString('base64url');
}

export function newLegKey(): Buffer {
  return randomBytes(KEY_SIZE);
}

/** RFC 7983: 0..3 is STUN. Cheap enough for the per-packet path. */
export function looksLikeStun(buf: Buffer): boolean {
  return buf.length >= HEADER_SIZE && buf[0]! < 4 && buf.readUInt32BE(4) === MAGIC_COOKIE;
}

function encodeType(method: number, cls: number): number {
  return (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7);
}

function decodeType(type: number): { method: number; cls: number } {
  const method = (type & 0x000f) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0f80);
  const cls = ((type >> 4) & 1) | ((type >> 7) & 2);
  return { method, cls };
}

const TYPE_OF: Record<MessageKind, number> = {
  hello: encodeType(METHOD_LATCH, CLASS_REQUEST),
  challenge: encodeType(METHOD_LATCH, CLASS_SUCCESS),
  proof: encodeType(METHOD_PROVE, CLASS_REQUEST),
  success: encodeType(METHOD_PROVE, CLASS_SUCCESS),
  rendezvous: encodeType(METHOD_RENDEZVOUS, CLASS_INDICATION),
};

const KIND_OF = new Map<number, MessageKind>(Object.entries(TYPE_OF).map(([k, t]) => [t, k as MessageKind]));

// ---- address encoding -------------------------------------------------------------------

function ipv6Groups(address: string): number[] {
  let text = address;
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const groups = (part: string | undefined): number[] => (part ? part.split(':').map((g) => parseInt(g, 16)) : []);
  const [head, tail] = text.split('::');
  const h = groups(head);
  const t = groups(tail);
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  return [...h, ...new Array<number>(fill).fill(0), ...t];
}

function ipBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (!isIPv6(address)) throw new ProtocolError(`not an IP address: ${address}`);
  const out = Buffer.alloc(16);
  ipv6Groups(address).forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

function ipString(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i).toString(16));
  // RFC 5952 form, the one node reports in rinfo, so decoded and observed strings agree.
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') return `::ffff:${[...bytes.subarray(12)].join('.')}`;
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best.len) best = { at: i, len: j - i };
  }
  if (best.at < 0) return groups.join(':');
  return `${groups.slice(0, best.at).join(':')}::${groups.slice(best.at + best.len).join(':')}`;
}

/** Canonical bytes of an endpoint for MAC input: family, port, address. */
function endpointBytes(ep: Endpoint): Buffer {
  const ip = ipBytes(ep.address);
  const out = Buffer.alloc(3 + ip.length);
  out[0] = ip.length === 4 ? 1 : 2;
  out.writeUInt16BE(ep.port, 1);
  ip.copy(out, 3);
  return out;
}

function xorAddress(ep: Endpoint, txid: Buffer): Buffer {
  const ip = ipBytes(ep.address);
  const out = Buffer.alloc(4 + ip.length);
  out[1] = ip.length === 4 ? 0x01 : 0x02;
  out.writeUInt16BE(ep.port ^ (MAGIC_COOKIE >>> 16), 2);
  const mask = Buffer.alloc(16);
  mask.writeUInt32BE(MAGIC_COOKIE, 0);
  txid.copy(mask, 4);
  for (let i = 0; i < ip.length; i++) out[4 + i] = ip[i]! ^ mask[i]!;
  return out;
}

function unxorAddress(value: Buffer, txid: Buffer): Endpoint {
  const family = value[1];
  const len = family === 0x01 ? 4 : family === 0x02 ? 16 : -1;
  if (len < 0 || value.length !== 4 + len) throw new ProtocolError('bad XOR-MAPPED-ADDRESS');
  const mask = Buffer.alloc(16);
  mask.writeUInt32BE(MAGIC_COOKIE, 0);
  txid.copy(mask, 4);
  const ip = Buffer.alloc(len);
  for (let i = 0; i < len; i++) ip[i] = value[4 + i]! ^ mask[i]!;
  return { address: ipString(ip), port: value.readUInt16BE(2) ^ (MAGIC_COOKIE >>> 16) };
}

// ---- framing ----------------------------------------------------------------------------

function frame(kind: MessageKind, txid: Buffer, attrs: Array<[number, Buffer]>, padTo = 0): Buffer {
  const body: Buffer[] = [];
  let size = 0;
  const push = (type: number, value: Buffer): void => {
    const tl = Buffer.alloc(4);
    tl.writeUInt16BE(type, 0);
    tl.writeUInt16BE(value.length, 2);
    const pad = Buffer.alloc((4 - (value.length % 4)) % 4);
    body.push(tl, value, pad);
    size += 4 + value.length + pad.length;
  };
  for (const [type, value] of attrs) push(type, value);
  const missing = padTo - (HEADER_SIZE + size);
  if (missing > 0) push(ATTR_PADDING, Buffer.alloc(Math.max(0, missing - 4 + ((4 - (missing % 4)) % 4))));
  const header = Buffer.alloc(HEADER_SIZE);
  header.writeUInt16BE(TYPE_OF[kind], 0);
  header.writeUInt16BE(size, 2);
  header.writeUInt32BE(MAGIC_COOKIE, 4);
  txid.copy(header, 8);
  return Buffer.concat([header, ...body]);
}

export function newTxid(): Buffer {
  return randomBytes(12);
}

/**
 * Parses one of our messages. Anything else, including a well-formed STUN message of another
 * method, throws ProtocolError: callers drop and count, they never answer.
 */
export function decode(buf: Buffer): LatchMessage {
  if (buf.length < HEADER_SIZE) throw new ProtocolError('shorter than a STUN header');
  const type = buf.readUInt16BE(0);
  if (type & 0xc000) throw new ProtocolError('not STUN: top bits set');
  if (buf.readUInt32BE(4) !== MAGIC_COOKIE) throw new ProtocolError('bad magic cookie');
  const length = buf.readUInt16BE(2);
  if (length % 4 !== 0 || HEADER_SIZE + length !== buf.length) throw new ProtocolError('length field does not match datagram');
  const kind = KIND_OF.get(type);
  if (!kind) {
    const { method, cls } = decodeType(type);
    throw new ProtocolError(`not a keylatch message (method 0x${method.toString(16)}, class ${cls})`);
  }
  const txid = Buffer.from(buf.subarray(8, HEADER_SIZE));
  const attrs = new Map<number, Buffer>();
  for (let at = HEADER_SIZE; at < buf.length; ) {
    if (at + 4 > buf.length) throw new ProtocolError('truncated attribute header');
    const atype = buf.readUInt16BE(at);
    const alen = buf.readUInt16BE(at + 2);
    const end = at + 4 + alen;
    if (end > buf.length) throw new ProtocolError(`attribute 0x${atype.toString(16)} overruns the message`);
    if (!KNOWN_ATTRIBUTES.has(atype) && atype < 0x8000) throw new ProtocolError(`unknown comprehension-required attribute 0x${atype.toString(16)}`);
    if (!attrs.has(atype)) attrs.set(atype, buf.subarray(at + 4, end));
    at = end + ((4 - (alen % 4)) % 4);
  }
  const legRaw = attrs.get(ATTR_LEG_ID);
  if (!legRaw || legRaw.length > MAX_LEG_ID_SIZE) throw new ProtocolError('missing or oversized LEG-ID');
  const legId = legRaw.toString('latin1');
  if (!isValidLegId(legId)) throw new ProtocolError('malformed LEG-ID');
  const mac = attrs.get(ATTR_MAC);
  if (!mac || mac.length !== MAC_SIZE) throw new ProtocolError('missing or malformed MAC');
  if (kind === 'hello' || kind === 'rendezvous') {
    const counter = attrs.get(ATTR_COUNTER);
    const flags = attrs.get(ATTR_FLAGS);
    if (!counter || counter.length !== COUNTER_SIZE) throw new ProtocolError('missing or malformed COUNTER');
    if (!flags || flags.length !== FLAGS_SIZE) throw new ProtocolError('missing or malformed FLAGS');
    const common = { txid, legId, counter: counter.readBigUInt64BE(0), flags: flags.readUInt32BE(0), mac: Buffer.from(mac) };
    if (kind === 'hello') return { kind, ...common };
    const pairRaw = attrs.get(ATTR_PAIR_ID);
    const wrapped = attrs.get(ATTR_WRAPPED_KEY);
    const xpa = attrs.get(ATTR_XOR_PEER_ADDRESS);
    if (!pairRaw || pairRaw.length > MAX_LEG_ID_SIZE || !isValidLegId(pairRaw.toString('latin1'))) throw new ProtocolError('missing or malformed PAIR-ID');
    if (!wrapped || wrapped.length !== WRAPPED_KEY_SIZE) throw new ProtocolError('missing or malformed WRAPPED-KEY');
    if (!xpa) throw new ProtocolError('missing XOR-PEER-ADDRESS');
    return { kind, ...common, pairId: pairRaw.toString('latin1'), peer: unxorAddress(xpa, txid), wrappedKey: Buffer.from(wrapped) };
  }
  const nonce = attrs.get(ATTR_NONCE);
  const xma = attrs.get(ATTR_XOR_MAPPED_ADDRESS);
  if (!nonce || nonce.length !== NONCE_SIZE) throw new ProtocolError('missing or malformed NONCE');
  if (!xma) throw new ProtocolError('missing XOR-MAPPED-ADDRESS');
  return { kind, txid, legId, nonce: Buffer.from(nonce), mac: Buffer.from(mac), observed: unxorAddress(xma, txid) };
}

const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(COUNTER_SIZE);
  b.writeBigUInt64BE(n);
  return b;
};
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(FLAGS_SIZE);
  b.writeUInt32BE(n >>> 0);
  return b;
};

let lastCounter = 0n;
/**
 * Counters for hellos and rendezvous messages: strictly increasing in this process, and seeded
 * from the clock in microseconds, so a leg whose prover is rebuilt (a re-INVITE naming a new
 * relay port) keeps counting upward and its first new hello is not taken for a replay.
 */
export function nextCounter(now = Date.now()): bigint {
  const fromClock = BigInt(now) * 1000n;
  lastCounter = fromClock > lastCounter ? fromClock : lastCounter + 1n;
  return lastCounter;
}

function helloMac(key: Buffer, legId: string, counter: bigint, flags: number): Buffer {
  return createHmac('sha256', key).update('keylatch/2 hello\0').update(Buffer.from([legId.length])).update(legId, 'latin1').update(u64(counter)).update(u32(flags)).digest();
}

export function encodeHello(key: Buffer, legId: string, opts: { counter?: bigint; flags?: number; txid?: Buffer } = {}): Buffer {
  if (!isValidLegId(legId)) throw new ProtocolError('malformed leg id');
  const counter = opts.counter ?? nextCounter();
  const flags = opts.flags ?? 0;
  return frame('hello', opts.txid ?? newTxid(), [
    [ATTR_LEG_ID, Buffer.from(legId, 'latin1')],
    [ATTR_COUNTER, u64(counter)],
    [ATTR_FLAGS, u32(flags)],
    [ATTR_MAC, helloMac(key, legId, counter, flags)],
  ], HELLO_SIZE);
}

export function verifyHelloMac(key: Buffer, msg: Hello): boolean {
  return constantTimeEqual(msg.mac, helloMac(key, msg.legId, msg.counter, msg.flags));
}

const constantTimeEqual = (a: Buffer, b: Buffer): boolean => a.length === b.length && timingSafeEqual(a, b);

/**
 * Which counters a verifier has already accepted (RFC 4303 section 3.4.3 in spirit): each counter
 * is good once, and one older than everything remembered is refused. Counters a little out of
 * order (hellos to the RTP and the RTCP port of one leg) are still accepted.
 */
export class ReplayWindow {
  private readonly seen: bigint[] = [];

  constructor(private readonly size = 32) {}

  /** True, and remembered, if `counter` was never accepted and is not older than the window. */
  accept(counter: bigint): boolean {
    if (this.seen.includes(counter)) return false;
    if (this.seen.length >= this.size) {
      let oldest = this.seen[0]!;
      let at = 0;
      this.seen.forEach((c, i) => {
        if (c < oldest) [oldest, at] = [c, i];
      });
      if (counter < oldest) return false;
      this.seen.splice(at, 1);
    }
    this.seen.push(counter);
    return true;
  }
}

// ---- rendezvous: the pair key, wrapped under the leg key --------------------------------

function wrapKeyFor(legKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', legKey, Buffer.alloc(0), 'keylatch/2 pair-key wrap', KEY_SIZE));
}

function wrapAad(legId: string, pairId: string, counter: bigint): Buffer {
  return Buffer.concat([Buffer.from(`${legId}\0${pairId}\0`, 'latin1'), u64(counter)]);
}

function rendezvousMac(legKey: Buffer, m: Omit<Rendezvous, 'kind' | 'txid' | 'mac'>): Buffer {
  return createHmac('sha256', legKey)
    .update('keylatch/2 rendezvous\0')
    .update(Buffer.from([m.legId.length]))
    .update(m.legId, 'latin1')
    .update(u64(m.counter))
    .update(u32(m.flags))
    .update(Buffer.from([m.pairId.length]))
    .update(m.pairId, 'latin1')
    .update(endpointBytes(m.peer))
    .update(m.wrappedKey)
    .digest();
}

export interface PairGrant {
  pairId: string;
  /** The receiving client's side of the pair: it proves as `<pairId>-<side>`. */
  side: 'a' | 'b';
  pairKey: Buffer;
  /** The other client's media mapping, as the relay authenticated it. */
  peer: Endpoint;
}

/**
 * Tells one client (by its leg key) where its peer is and what key they share. The pair key is
 * encrypted (AES-256-GCM under a key derived from the leg key), so it never crosses UDP in clear,
 * and the whole message is MAC'd, so only the relay, which holds the leg key, can issue it.
 */
export function encodeRendezvous(legKey: Buffer, legId: string, grant: PairGrant, counter: bigint = nextCounter()): Buffer {
  if (!isValidLegId(legId) || !isValidLegId(grant.pairId)) throw new ProtocolError('malformed leg or pair id');
  if (grant.pairKey.length !== KEY_SIZE) throw new ProtocolError(`pair key must be ${KEY_SIZE} bytes`);
  const iv = randomBytes(WRAP_IV_SIZE);
  const cipher = createCipheriv('aes-256-gcm', wrapKeyFor(legKey), iv);
  cipher.setAAD(wrapAad(legId, grant.pairId, counter));
  const wrappedKey = Buffer.concat([iv, cipher.update(grant.pairKey), cipher.final(), cipher.getAuthTag()]);
  const flags = grant.side === 'b' ? RENDEZVOUS_FLAG_SIDE_B : 0;
  const mac = rendezvousMac(legKey, { legId, counter, flags, pairId: grant.pairId, peer: grant.peer, wrappedKey });
  const txid = newTxid();
  return frame('rendezvous', txid, [
    [ATTR_LEG_ID, Buffer.from(legId, 'latin1')],
    [ATTR_COUNTER, u64(counter)],
    [ATTR_FLAGS, u32(flags)],
    [ATTR_PAIR_ID, Buffer.from(grant.pairId, 'latin1')],
    [ATTR_XOR_PEER_ADDRESS, xorAddress(grant.peer, txid)],
    [ATTR_WRAPPED_KEY, wrappedKey],
    [ATTR_MAC, mac],
  ]);
}

/** The grant in a rendezvous, or null if its MAC or its wrapped key does not check under `legKey`. */
export function openRendezvous(legKey: Buffer, msg: Rendezvous): PairGrant | null {
  if (!constantTimeEqual(msg.mac, rendezvousMac(legKey, msg))) return null;
  try {
    const decipher = createDecipheriv('aes-256-gcm', wrapKeyFor(legKey), msg.wrappedKey.subarray(0, WRAP_IV_SIZE));
    decipher.setAAD(wrapAad(msg.legId, msg.pairId, msg.counter));
    decipher.setAuthTag(msg.wrappedKey.subarray(WRAP_IV_SIZE + KEY_SIZE));
    const pairKey = Buffer.concat([decipher.update(msg.wrappedKey.subarray(WRAP_IV_SIZE, WRAP_IV_SIZE + KEY_SIZE)), decipher.final()]);
    return { pairId: msg.pairId, side: msg.flags & RENDEZVOUS_FLAG_SIDE_B ? 'b' : 'a', pairKey, peer: msg.peer };
  } catch {
    return null;
  }
}

// ---- the key in SDP ---------------------------------------------------------------------

/** The value after "a=keylatch:" that hands a leg its id and key (docs: "Where the key comes from"). */
export function formatLegKey(legId: string, key: Buffer): string {
  return `v1 leg=${legId} key=${key.toString('base64url')}`;
}

/** Reads a leg key back; null for the bare announcement or anything malformed. */
export function parseLegKey(value: string): { legId: string; key: Buffer } | null {
  const m = /^v1 leg=([A-Za-z0-9_-]{1,64}) key=([A-Za-z0-9_-]{43})$/.exec(value.trim());
  if (!m) return null;
  const key = Buffer.from(m[2]!, 'base64url');
  return key.length === KEY_SIZE ? { legId: m[1]!, key } : null;
}

// ---- MACs -------------------------------------------------------------------------------

/** Each message kind signs under its own label, so no MAC can be replayed as another kind. */
export function computeMac(key: Buffer, kind: Sealed['kind'], legId: string, nonce: Buffer, observed: Endpoint): Buffer {
  return createHmac('sha256', key)
    .update(`keylatch/1 ${kind}\0`)
    .update(Buffer.from([legId.length]))
    .update(legId, 'latin1')
    .update(nonce)
    .update(endpointBytes(observed))
    .digest();
}

export function verifyMac(key: Buffer, msg: Sealed): boolean {
  return constantTimeEqual(msg.mac, computeMac(key, msg.kind, msg.legId, msg.nonce, msg.observed));
}

export function encodeSealed(
  key: Buffer,
  kind: Sealed['kind'],
  fields: { legId: string; nonce: Buffer; observed: Endpoint; txid?: Buffer },
): Buffer {
  const txid = fields.txid ?? newTxid();
  const mac = computeMac(key, kind, fields.legId, fields.nonce, fields.observed);
  return frame(kind, txid, [
    [ATTR_LEG_ID, Buffer.from(fields.legId, 'latin1')],
    [ATTR_NONCE, fields.nonce],
    [ATTR_XOR_MAPPED_ADDRESS, xorAddress(fields.observed, txid)],
    [ATTR_MAC, mac],
  ]);
}

/** By value, so '::ffff:1.2.3.4' style spellings of one address compare equal. */
export const sameEndpoint = (a: Endpoint, b: Endpoint): boolean =>
  a.port === b.port && (a.address === b.address || endpointBytes(a).equals(endpointBytes(b)));

// ---- verifier (relay, or either peer in direct mode) ------------------------------------

interface Outstanding {
  source: Endpoint;
  expiresAt: number;
}

export interface VerifierOptions {
  legId: string;
  key: Buffer;
  nonceTtlMs: number;
  /** Bounds memory per component whatever a sender does. */
  maxOutstanding?: number;
  /** Shared by every verifier of one leg (its RTP and RTCP ports), so a hello counts once per leg. */
  replay?: ReplayWindow;
  now?: () => number;
}

export type HelloVerdict = { ok: true; flags: number } | { ok: false; reason: 'wrong-leg' | 'bad-mac' | 'replayed' };

export type ProofVerdict =
  | { ok: true; source: Endpoint; success: Buffer }
  | { ok: false; reason: 'unknown-nonce' | 'expired-nonce' | 'wrong-source' | 'bad-mac' | 'wrong-leg' | 'wrong-address' };

/**
 * Issues single-use nonces bound to the source they were sent to, and checks proofs.
 * A nonce is spent by its first proof attempt, good or bad.
 */
export class ChallengeVerifier {
  private readonly outstanding = new Map<string, Outstanding>();
  private readonly now: () => number;
  private readonly maxOutstanding: number;
  private readonly replay: ReplayWindow;

  constructor(private readonly opts: VerifierOptions) {
    this.now = opts.now ?? Date.now;
    this.maxOutstanding = opts.maxOutstanding ?? 16;
    this.replay = opts.replay ?? new ReplayWindow();
  }

  get legId(): string {
    return this.opts.legId;
  }

  /**
   * May this hello be answered? Only if it names our leg, its MAC checks under our key, and its
   * counter was never seen: a blind source, or one replaying a captured hello, draws nothing.
   * The MAC is checked before the counter is remembered, so forgeries cannot fill the window.
   */
  checkHello(msg: Hello): HelloVerdict {
    if (msg.legId !== this.opts.legId) return { ok: false, reason: 'wrong-leg' };
    if (!verifyHelloMac(this.opts.key, msg)) return { ok: false, reason: 'bad-mac' };
    if (!this.replay.accept(msg.counter)) return { ok: false, reason: 'replayed' };
    return { ok: true, flags: msg.flags };
  }

  challenge(source: Endpoint, txid?: Buffer): Buffer {
    const nonce = randomBytes(NONCE_SIZE);
    if (this.outstanding.size >= this.maxOutstanding) {
      const oldest = this.outstanding.keys().next().value;
      if (oldest !== undefined) this.outstanding.delete(oldest);
    }
    this.outstanding.set(nonce.toString('hex'), { source: { ...source }, expiresAt: this.now() + this.opts.nonceTtlMs });
    return encodeSealed(this.opts.key, 'challenge', { legId: this.opts.legId, nonce, observed: source, txid });
  }

  verify(msg: Sealed, source: Endpoint): ProofVerdict {
    if (msg.kind !== 'proof' || msg.legId !== this.opts.legId) return { ok: false, reason: 'wrong-leg' };
    const id = msg.nonce.toString('hex');
    const entry = this.outstanding.get(id);
    if (!entry) return { ok: false, reason: 'unknown-nonce' };
    this.outstanding.delete(id);
    if (entry.expiresAt < this.now()) return { ok: false, reason: 'expired-nonce' };
    if (!sameEndpoint(entry.source, source)) return { ok: false, reason: 'wrong-source' };
    if (!sameEndpoint(msg.observed, source)) return { ok: false, reason: 'wrong-address' };
    if (!verifyMac(this.opts.key, msg)) return { ok: false, reason: 'bad-mac' };
    const success = encodeSealed(this.opts.key, 'success', { legId: msg.legId, nonce: msg.nonce, observed: source, txid: msg.txid });
    return { ok: true, source: { ...source }, success };
  }

  /** Drops expired nonces; call from a timer, not per packet. */
  sweep(): void {
    const now = this.now();
    for (const [id, e] of this.outstanding) if (e.expiresAt < now) this.outstanding.delete(id);
  }
}

// ---- prover (client) --------------------------------------------------------------------

export type ProverEvent =
  | { type: 'proof-sent'; to: Endpoint; reply: Buffer }
  | { type: 'latched'; mapping: Endpoint; mappingChanged: boolean }
  | { type: 'rendezvous'; grant: PairGrant }
  | { type: 'ignored'; reason: string };

/**
 * The client half. It answers only challenges that carry a valid MAC, so nobody without the
 * key can use it as a signing oracle, and it believes a mapping only from a valid success.
 */
export class ChallengeProver {
  private mapping: Endpoint | null = null;
  private readonly pending = new Set<string>();
  private lastRendezvous = 0n;

  constructor(private readonly legId: string, private readonly key: Buffer) {
    if (!isValidLegId(legId)) throw new ProtocolError('malformed leg id');
    if (key.length !== KEY_SIZE) throw new ProtocolError(`leg key must be ${KEY_SIZE} bytes`);
  }

  /** `flags` tell the verifier about us (HELLO_FLAG_DIRECT); they are under the MAC. */
  hello(flags = 0): Buffer {
    return encodeHello(this.key, this.legId, { flags });
  }

  get externalMapping(): Endpoint | null {
    return this.mapping ? { ...this.mapping } : null;
  }

  onMessage(msg: LatchMessage, from: Endpoint): ProverEvent {
    if (msg.legId !== this.legId) return { type: 'ignored', reason: 'other leg' };
    if (msg.kind === 'challenge') {
      if (!verifyMac(this.key, msg)) return { type: 'ignored', reason: 'challenge MAC invalid' };
      this.pending.add(msg.nonce.toString('hex'));
      if (this.pending.size > 16) this.pending.delete(this.pending.values().next().value as string);
      const reply = encodeSealed(this.key, 'proof', { legId: this.legId, nonce: msg.nonce, observed: msg.observed });
      return { type: 'proof-sent', to: from, reply };
    }
    if (msg.kind === 'success') {
      const id = msg.nonce.toString('hex');
      if (!this.pending.has(id)) return { type: 'ignored', reason: 'success for a nonce we did not prove' };
      if (!verifyMac(this.key, msg)) return { type: 'ignored', reason: 'success MAC invalid' };
      this.pending.delete(id);
      const changed = this.mapping !== null && !sameEndpoint(this.mapping, msg.observed);
      this.mapping = { ...msg.observed };
      return { type: 'latched', mapping: { ...msg.observed }, mappingChanged: changed };
    }
    if (msg.kind === 'rendezvous') {
      // Counters only go up: an older rendezvous (reordered, or replayed) must not undo a newer one.
      if (msg.counter <= this.lastRendezvous) return { type: 'ignored', reason: 'stale rendezvous' };
      const grant = openRendezvous(this.key, msg);
      if (!grant) return { type: 'ignored', reason: 'rendezvous MAC or wrapped key invalid' };
      this.lastRendezvous = msg.counter;
      return { type: 'rendezvous', grant };
    }
    return { type: 'ignored', reason: `${msg.kind} is not for a prover` };
  }
}

/** Size of a challenge, proof or success for this leg id and address family, without building one. */
export function sealedSize(legId: string, address: string): number {
  const padded = (n: number): number => n + ((4 - (n % 4)) % 4);
  return HEADER_SIZE + 4 + padded(legId.length) + 4 + NONCE_SIZE + 4 + (isIPv4(address) ? 8 : 20) + 4 + MAC_SIZE;
}
