import dgram from 'node:dgram';
import { once } from 'node:events';
import bencode from 'bencode';
import type { LegStats } from '../media/call';
import { PortPoolExhausted } from '../media/port-pool';
import { RelayError, type LegRef, type Relay } from '../media/relay';
import { SdpError } from '../sdp/session';
import { silentLogger, type Logger } from '../log';
import { legHints, legOptions, optional, required, type NgDict } from './ng-options';
import { guardKeys, protectReply } from './ng-key-seal';

const MAX_REQUEST = 65507;
const REPLY_CACHE_MS = 30000;
const REPLY_CACHE_MAX = 10000;

/** Executes one decoded ng request; what a relay, or a dispatcher in front of several, answers. */
export type NgHandler = (req: NgDict) => Promise<NgDict>;

export interface NgServerOptions {
  /**
   * Whether to serve a decoded request from `from` at all. One it refuses gets no answer, not
   * even an error: a source that showed nothing learns nothing (src/rooms/sibling-rooms.ts
   * serves only its sibling edge processes this way).
   */
  admit?: (req: NgDict, from: string) => boolean;
}

/**
 * A subset of rtpengine's ng control protocol (bencode over UDP): ping, offer, answer,
 * delete, query, list. Enough for Kamailio's rtpengine module or rtpengine-client to drive
 * keylatch. The commands go to one Relay, or to any NgHandler (src/media/cluster routes them
 * to relay workers).
 */
export class NgServer {
  private readonly socket: dgram.Socket;
  /** ng clients retransmit; a repeated cookie gets the first reply, never a second execution. */
  private readonly replies = new Map<string, { reply: Buffer | null | Promise<Buffer | null>; at: number }>();
  private readonly handler: NgHandler;

  /**
   * `sealKey` (from control.ngKeySecret, see ng-key-seal.ts): leg keys in replies are sealed under
   * it; without it, only ng clients on this host may ask for key legs.
   */
  constructor(target: Relay | NgHandler, private readonly log: Logger = silentLogger, private readonly sealKey: Buffer | null = null, private readonly opts: NgServerOptions = {}) {
    this.handler = typeof target === 'function' ? target : relayCommands(target);
    this.socket = dgram.createSocket('udp4');
    this.socket.on('message', (msg, rinfo) => void this.onMessage(msg, rinfo));
    this.socket.on('error', (err) => this.log.warn({ err: err.message }, 'ng socket error'));
  }

  async listen(port: number, address: string): Promise<{ address: string; port: number }> {
    this.socket.bind(port, address);
    await once(this.socket, 'listening');
    const a = this.socket.address();
    this.log.info({ address: a.address, port: a.port }, 'ng control listening');
    return { address: a.address, port: a.port };
  }

  close(): void {
    this.socket.close();
  }

  private async onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): Promise<void> {
    const space = msg.indexOf(0x20);
    if (space <= 0 || space > 128 || msg.length > MAX_REQUEST) return; // no cookie: nothing to answer to
    const cookie = msg.subarray(0, space).toString('latin1');
    const cacheKey = `${rinfo.address}:${rinfo.port}:${cookie}`;
    let entry = this.replies.get(cacheKey);
    if (!entry) {
      entry = { reply: this.execute(msg.subarray(space + 1), rinfo.address), at: Date.now() };
      this.remember(cacheKey, entry);
    }
    const body = await entry.reply;
    entry.reply = body;
    if (body === null) return;
    this.socket.send(Buffer.concat([Buffer.from(`${cookie} `, 'latin1'), body]), rinfo.port, rinfo.address);
  }

  private remember(key: string, entry: { reply: Buffer | null | Promise<Buffer | null>; at: number }): void {
    const now = Date.now();
    for (const [k, e] of this.replies) {
      if (now - e.at < REPLY_CACHE_MS && this.replies.size < REPLY_CACHE_MAX) break;
      this.replies.delete(k);
    }
    this.replies.set(key, entry);
  }

  /** The encoded reply, or null for a request not admitted (never answered). */
  private async execute(body: Buffer, from: string): Promise<Buffer | null> {
    let reply: NgDict;
    try {
      const req = decodeRequest(body);
      if (this.opts.admit && !this.opts.admit(req, from)) return null;
      reply = await answerNg(async (r) => {
        guardKeys(r, from, this.sealKey);
        return protectReply(await this.handler(r), from, this.sealKey);
      }, req, this.log);
    } catch (err) {
      // A request that did not decode: answered, unless only some sources are served at all.
      if (this.opts.admit) return null;
      reply = errorReply(err, this.log);
    }
    return Buffer.from(bencode.encode(reply));
  }
}

/** Runs a request; a failure becomes an ng error reply (its reason only when it is one of ours). */
export async function answerNg(handler: NgHandler, req: NgDict, log: Logger = silentLogger): Promise<NgDict> {
  try {
    return await handler(req);
  } catch (err) {
    return errorReply(err, log);
  }
}

function errorReply(err: unknown, log: Logger): NgDict {
  // rtpengine's words for a call it does not hold, whatever the command: what ng clients (and
  // an edge pooling this relay, relay-pool/ng-client.ts) read as "this node has no such call".
  if (err instanceof RelayError && err.code === 'unknown-call') return { result: 'error', 'error-reason': 'Unknown call-id' };
  const known = err instanceof RelayError || err instanceof SdpError || err instanceof PortPoolExhausted;
  if (!known) log.error({ err }, 'ng command failed unexpectedly');
  return { result: 'error', 'error-reason': known ? (err as Error).message : 'internal error' };
}

/** The ng commands, executed against one Relay. */
export function relayCommands(relay: Relay): NgHandler {
  return async (req) => {
    const command = required(req, 'command');
    switch (command) {
      case 'ping':
        // keylatch's own additions (rtpengine clients ignore them): the address this relay writes
        // into SDP, so an edge pooling it knows its legs in an offer it never made itself; and
        // since when calls may have been lost here, so that it can tell a restart from a timeout.
        return { result: 'pong', 'media-address': relay.advertisedAddress, 'calls-lost-at': relay.startedAt };
      case 'offer': {
        const { sdp } = await relay.offer({
          callId: required(req, 'call-id'),
          fromTag: required(req, 'from-tag'),
          toTag: optional(req, 'to-tag'),
          sdp: required(req, 'sdp'),
          offerer: { ...legOptions(req, 'offerer'), ...legHints(req) },
          answerer: legOptions(req, 'answerer'),
        });
        return { result: 'ok', sdp };
      }
      case 'answer': {
        const { sdp } = await relay.answer({
          callId: required(req, 'call-id'),
          fromTag: required(req, 'from-tag'),
          toTag: required(req, 'to-tag'),
          sdp: required(req, 'sdp'),
          answerer: legHints(req),
        });
        return { result: 'ok', sdp };
      }
      case 'delete': {
        const stats = relay.delete({ callId: required(req, 'call-id') });
        if (!stats) return { result: 'error', 'error-reason': 'Unknown call-id' };
        return { result: 'ok', ...queryReply(stats) };
      }
      case 'query': {
        const callId = required(req, 'call-id');
        const stats = relay.stats(callId);
        if (!stats) return { result: 'error', 'error-reason': 'Unknown call-id' };
        // keylatch's own addition: rtpengine deletes a call whose media timed out, this relay
        // keeps it for its signalling to end, and says so here (an edge pooling it hangs up).
        return { result: 'ok', ...queryReply(stats), ...(relay.timedOut(callId) ? { 'timed-out': 'yes' } : {}) };
      }
      case 'list':
        // rtpengine's list: the call-ids, at most `limit` of them (default 32).
        return { result: 'ok', calls: relay.callIds().slice(0, listLimit(req)) };
      // keylatch's own commands, for an edge that pools keylatch relays (src/relay-pool): a PBX
      // that routes one of our offers back to a client gets that leg rather than a second anchor.
      case 'adopt': {
        const sdp = required(req, 'sdp');
        const ref = relay.legAddressedBy(sdp);
        if (!ref) return { result: 'error', 'error-reason': 'no leg of this relay is addressed by that SDP' };
        const opts = { policy: 'guarded' as const, secure: false, ...legOptions(req, 'answerer'), ...legHints(req) };
        return { result: 'ok', sdp: relay.adopt(ref, sdp, opts).sdp, 'call-id': ref.callId, 'leg-id': ref.legId };
      }
      case 'toward-adopter':
        return { result: 'ok', sdp: relay.towardAdopter(legRef(req), required(req, 'sdp')).sdp };
      case 'describe-adopted':
        return { result: 'ok', sdp: relay.describeAdopted(legRef(req), required(req, 'sdp'), legHints(req).signallingAddress).sdp };
      case 'disown':
        relay.disown(legRef(req), { policy: 'guarded', secure: false, ...legOptions(req, 'answerer'), ...legHints(req) });
        return { result: 'ok' };
      default:
        return { result: 'error', 'error-reason': `Unrecognized command: ${command}` };
    }
  };
}

/** rtpengine's `limit` for list: a number (or numeric string) >= 0; 32 when absent. */
export function listLimit(req: NgDict): number {
  const raw = req.limit;
  if (raw === undefined) return 32;
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!Number.isInteger(n) || n < 0) throw new RelayError('bad-request', '"limit" must be a non-negative integer');
  return n;
}

const legRef = (req: NgDict): LegRef => ({ callId: required(req, 'call-id'), legId: required(req, 'leg-id') });

function decodeRequest(body: Buffer): NgDict {
  let decoded: unknown;
  try {
    decoded = bencode.decode(body, 'utf8');
  } catch {
    throw new RelayError('bad-request', 'Failed to decode bencode message');
  }
  if (typeof decoded !== 'object' || decoded === null || Array.isArray(decoded) || Buffer.isBuffer(decoded)) {
    throw new RelayError('bad-request', 'Could not decode dictionary');
  }
  return decoded as NgDict;
}

/** bencode has no floats or nulls: jitter goes out in microseconds, absent addresses are left out. */
function queryReply(legs: LegStats[]): NgDict {
  const tags: NgDict = {};
  for (const leg of legs) {
    tags[leg.tag ?? ''] = {
      tag: leg.tag ?? '',
      policy: leg.policy,
      authenticated: leg.authenticated ? 'yes' : 'no',
      packets: leg.packetsIn,
      bytes: leg.bytesIn,
      'packets-out': leg.packetsOut,
      'bytes-out': leg.bytesOut,
      lost: leg.lost,
      'jitter-us': Math.round(leg.jitterMs * 1000),
      'last-seen': Math.floor(leg.lastSeen / 1000),
      ...(leg.latched ? { latched: { address: leg.latched.address, port: leg.latched.port } } : {}),
      medias: leg.streams.map((s) => ({
        index: s.index,
        type: s.type,
        'on-hold': s.onHold ? 'yes' : 'no',
        'rtcp-mux': s.rtcpMux ? 'yes' : 'no',
        lost: s.lost,
        'jitter-us': Math.round(s.jitterMs * 1000),
        streams: [s.rtp, s.rtcp].map((p) => ({
          'local port': p.port,
          state: p.state,
          packets: p.packetsIn,
          bytes: p.bytesIn,
          dropped: p.dropped,
          malformed: p.malformed,
          ...(p.latched ? { endpoint: { address: p.latched.address, port: p.latched.port } } : {}),
        })),
      })),
    };
  }
  return { tags, totals: totalsOf(legs) };
}

function totalsOf(legs: LegStats[]): NgDict {
  return {
    RTP: { packets: legs.reduce((n, l) => n + l.packetsIn, 0), bytes: legs.reduce((n, l) => n + l.bytesIn, 0), errors: 0 },
  };
}
