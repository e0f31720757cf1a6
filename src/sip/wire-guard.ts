/**
 * A replacement for drachtio-srf's WireProtocol#_onData (lib/wire-protocol.js), written for
 * drachtio-srf 5.0.x (checked against 5.0.29) talking to drachtio-server 0.9.x. Why it exists
 * (docs/sip-throughput.md, "The overload crash"):
 *
 * - drachtio-server writes every frame ("<length>#<payload>") with its own boost::asio
 *   async_write and no write queue. When its socket's send buffer is full (the app reads slower
 *   than the server writes, i.e. under overload) one frame's remainder and the next frame's
 *   bytes interleave on the wire. srf then reads a length prefix from the middle of a frame,
 *   and its client branch *throws* from inside the socket's 'data' handler, where nothing can
 *   catch it: the edge process died.
 * - A 'msg' listener that throws (srf's own "invalid msg type" for a frame it cannot classify,
 *   or an app callback srf runs synchronously) is rethrown from the same place, with the buffer
 *   not advanced past the message.
 *
 * Here a message whose handling throws is logged and skipped (the framing is intact), and a
 * stream whose framing is lost is dropped: the socket is destroyed and srf reconnects as it does
 * for any lost connection (it re-authenticates and re-registers its routes). Past an interleave
 * nothing on the stream can be trusted, so resynchronising on the next plausible header could
 * hand srf a message with another message's bytes in it. Bindings live in the binding store,
 * not in the connection, and survive.
 *
 * The per-socket state is srf's own (mapIncomingMsg, emptied by its 'close' handler), so the
 * rest of WireProtocol works unchanged. Remove this module once srf no longer throws there.
 */
import type { Socket } from 'node:net';
import { silentLogger, type Logger } from '../log';

interface Incoming {
  incomingMsg: Buffer;
  length: number;
}

interface WireProtocolInternals {
  isServer: unknown;
  mapIncomingMsg: Map<Socket, Incoming>;
  emit(event: 'msg', socket: Socket, message: string): boolean;
  disconnect(socket: Socket): void;
  _onData(socket: Socket, data: Buffer): void;
}

const HASH = 0x23;
const EMPTY = Buffer.alloc(0);
/** drachtio frames SIP messages and API replies: a length with more digits than this is garbage. */
const MAX_LENGTH_DIGITS = 8;

let log: Logger = silentLogger;
let installed = false;
let framingLosses = 0;
let handlerFailures = 0;

/** What the guard saw in this process: streams dropped for lost framing, messages whose handler threw. */
export function wireGuardCounts(): { framingLosses: number; handlerFailures: number } {
  return { framingLosses, handlerFailures };
}

/** Why a buffer starting at a frame boundary cannot be a frame, or null if it can (or may yet). */
function badLengthPrefix(buf: Buffer, hash: number): string | null {
  if (hash === -1) return buf.length > MAX_LENGTH_DIGITS ? 'no length prefix' : null;
  if (hash === 0 || hash > MAX_LENGTH_DIGITS) return 'no length prefix';
  for (let i = 0; i < hash; i++) if (buf[i]! < 0x30 || buf[i]! > 0x39) return 'length prefix is not a number';
  return null;
}

function onData(this: WireProtocolInternals, socket: Socket, data: Buffer): void {
  let state = this.mapIncomingMsg.get(socket);
  if (!state) this.mapIncomingMsg.set(socket, (state = { incomingMsg: EMPTY, length: -1 }));
  if (socket.destroyed) return; // dropped: what is still buffered in the stream is not ours to read
  let buf = state.incomingMsg.length ? Buffer.concat([state.incomingMsg, data]) : data;
  for (;;) {
    const hash = buf.indexOf(HASH);
    const bad = badLengthPrefix(buf, hash);
    if (bad) {
      framingLosses++;
      log.error({ reason: bad, remote: `${socket.remoteAddress}:${socket.remotePort}`, head: buf.subarray(0, 120).toString('latin1') },
        'drachtio wire stream lost its framing: dropping the connection (srf reconnects)');
      this.mapIncomingMsg.delete(socket);
      // Not srf's disconnect(): that marks the client as closing and stops its reconnecting.
      if (this.isServer) this.disconnect(socket);
      else socket.destroy();
      return;
    }
    if (hash === -1) break;
    const size = Number(buf.toString('latin1', 0, hash));
    const end = hash + 1 + size;
    if (buf.length < end) break;
    const message = buf.toString('utf8', hash + 1, end);
    buf = buf.subarray(end);
    try {
      this.emit('msg', socket, message);
    } catch (err) {
      handlerFailures++;
      log.error({ err, head: message.slice(0, 200) }, 'drachtio message handler threw: message skipped');
    }
    if (socket.destroyed) return;
  }
  // A copy of what is left over (a partial frame), so a large chunk is not held alive by its tail.
  state.incomingMsg = buf.length ? Buffer.from(buf) : EMPTY;
}

/**
 * Installs the guard on drachtio-srf's WireProtocol, once per process (every Srf uses the same
 * class). The logger is the most recent one given: the guard's lines are about the process.
 */
export function installWireGuard(logger: Logger): void {
  log = logger;
  if (installed) return;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const WireProtocol = require('drachtio-srf/lib/wire-protocol') as { prototype: WireProtocolInternals };
  WireProtocol.prototype._onData = onData;
  installed = true;
}
