/**
 * Rooms across several edge processes (sip.processes > 1, docs/rooms.md "Several edge
 * processes"). drachtio-server hands each new INVITE to the processes in turn, so the joins of
 * one room land on all of them; a room lives in one owner process (roomOwner) whose relay holds
 * every participant's ports and whose mixer mixes them. A join that reaches another process keeps
 * its dialog there (drachtio-server keeps a dialog on the process that created it) and asks the
 * owner, over this control channel, for the media: what jambonz does when it sends every joiner
 * of a conference to the feature server that holds it.
 *
 * The channel is rtpengine's ng framing (cookie + bencode over UDP, NgClient/NgServer, with their
 * retransmits and reply cache) on 127.0.0.1:rooms.siblingPort + index. Only siblings are
 * served (src/control/sibling-auth.ts): a request must come from loopback and carry an HMAC under
 * the secret the supervisor gave its processes, fresh; anything else, malformed or not, gets no
 * answer at all. Leg keys (key-policy legs, plugin clients) cross it only sealed under that
 * secret (ng-key-seal.ts), never in clear.
 *
 *   room-join     dialog side -> owner: room, who, leg, sdp      -> participant id, answer sdp
 *   room-describe dialog side -> owner: participant, sdp (a re-INVITE) -> answer sdp
 *   room-dtmf     dialog side -> owner: participant, key (SIP INFO)
 *   room-leave    dialog side -> owner: participant (the dialog ended)
 *   room-keep     dialog side -> owner, every keepMs: the participants it still holds dialogs for
 *                 -> those the owner does not know (it restarted, or let them go): their dialogs end
 *   room-ended    owner -> dialog side: participant (removed, media timeout, room closed): BYE it
 *   room-list / room-admin   any -> any: the admin's view across processes (sibling-admin.ts)
 *
 * Deaths: a dialog process that stops keeping its participants (it died; its dialogs died with
 * it) has them leave after GUEST_LOST_KEEPS keep intervals. An owner that dies loses its rooms:
 * its siblings end the dialogs of its participants by BYE as soon as it answers no keep (or,
 * restarted, answers that it knows none of them).
 */
import { NgServer } from '../control/ng-server';
import { sealLegKeys, unsealLegKeys } from '../control/ng-key-seal';
import { admitSiblings, signedAs, siblingKeys } from '../control/sibling-auth';
import type { NgDict } from '../control/ng-options';
import type { EdgeShare } from '../edge-processes';
import { silentLogger, type Logger } from '../log';
import type { LegOptions } from '../media/call';
import { PortPoolExhausted } from '../media/port-pool';
import { RelayError } from '../media/relay';
import { NgClient, NgTimeout, type NgMessage } from '../relay-pool/ng-client';
import { SdpError } from '../sdp/session';
import { roomActions } from './admin';
import type { Participant } from './participant';
import { ROOM_ERROR_CODES, RoomError, type RoomErrorCode, type RoomRegistry } from './registry';
import { DTMF_KEYS, type RoomInfo } from './room';
import { roomOwner } from './room-owner';
import { LocalSeats, RoomUnavailable, type RoomSeat, type RoomSeats } from './seats';

/** An owner that answered no keep this many times in a row is gone, and its rooms with it. */
const OWNER_LOST_KEEPS = 2;
/** A guest its dialog process has not kept for this many intervals (plus a command's time) has lost its dialog. */
const GUEST_LOST_KEEPS = 3;
const ID = /^[0-9a-f]{12}$/;

export interface SiblingRoomsOptions {
  share: EdgeShare;
  /** rooms.siblingPort: process i listens on 127.0.0.1:(basePort + i). */
  basePort: number;
  /** The secret every sibling was given (SIBLING_SECRET_ENV). */
  secret: string;
  rooms: RoomRegistry;
  logger?: Logger;
  /** How often a dialog process tells each owner which participants it still holds (default 2 s). */
  keepMs?: number;
  /** One command's time to answer, retransmits included (default 1 s). */
  commandMs?: number;
}

/** What a dialog process holds for a seat in another process's room. */
interface Seated {
  owner: number;
  end: (() => void) | null;
}

/** What an owner holds for a participant whose dialog is in another process. */
interface Guest {
  p: Participant;
  from: number;
  keptAt: number;
}

const str = (req: NgDict, key: string, max = 65_000): string => {
  const v = req[key];
  if (typeof v !== 'string' || v.length > max) throw new RelayError('bad-request', `"${key}" must be a string`);
  return v;
};

/** Leg options as they cross the channel (bencode has no booleans). */
const encodeLeg = (leg: LegOptions): NgDict => ({ policy: leg.policy, secure: leg.secure ? 'yes' : 'no', ...(leg.signallingAddress ? { 'signalling-address': leg.signallingAddress } : {}) });

function decodeLeg(v: unknown): LegOptions {
  const d = (typeof v === 'object' && v !== null && !Array.isArray(v) ? v : {}) as NgDict;
  if (d.policy !== 'key' && d.policy !== 'guarded') throw new RelayError('bad-request', '"leg" needs policy key or guarded');
  if (d.secure !== 'yes' && d.secure !== 'no') throw new RelayError('bad-request', '"leg" needs secure yes or no');
  const addr = d['signalling-address'];
  if (addr !== undefined && (typeof addr !== 'string' || addr.length > 64)) throw new RelayError('bad-request', '"signalling-address" must be an address');
  return { policy: d.policy, secure: d.secure === 'yes', ...(addr ? { signallingAddress: addr } : {}) };
}

/** An owner's refusal, said so that the dialog side answers the INVITE as the owner would have. */
function errorKind(err: unknown): string | null {
  if (err instanceof RoomError) return err.code;
  if (err instanceof SdpError) return 'sdp';
  if (err instanceof PortPoolExhausted) return 'ports';
  if (err instanceof RelayError) return `relay:${err.code}`;
  return null;
}

function rethrow(reply: NgMessage): never {
  const reason = String(reply['error-reason'] ?? 'error');
  const kind = String(reply['error-kind'] ?? '');
  // Every refusal of the owner's registry, so the caller gets what a join in one process gets.
  if ((ROOM_ERROR_CODES as readonly string[]).includes(kind)) throw new RoomError(kind as RoomErrorCode, reason);
  if (kind === 'sdp') throw new SdpError(reason);
  if (kind === 'ports') throw new PortPoolExhausted(Number(reply['port-min'] ?? 0), Number(reply['port-max'] ?? 0));
  if (kind.startsWith('relay:')) throw new RelayError(kind.slice(6) as ConstructorParameters<typeof RelayError>[0], reason);
  throw new RoomUnavailable(reason);
}

export class SiblingRooms implements RoomSeats {
  private readonly macKey: Buffer;
  private readonly sealKey: Buffer;
  private readonly server: NgServer;
  private readonly clients = new Map<number, NgClient>();
  private readonly local: LocalSeats;
  private readonly guests = new Map<string, Guest>();
  private readonly seated = new Map<string, Seated>();
  private readonly missedKeeps = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private readonly log: Logger;
  private readonly keepMs: number;
  private readonly commandMs: number;
  private closed = false;
  /** A keep round still waiting for a slow owner: the next tick does not start another. */
  private keeping = false;

  constructor(private readonly opts: SiblingRoomsOptions) {
    this.log = opts.logger ?? silentLogger;
    this.keepMs = opts.keepMs ?? 2000;
    this.commandMs = opts.commandMs ?? 1000;
    // Two keys from one secret: one signs, one seals.
    ({ macKey: this.macKey, sealKey: this.sealKey } = siblingKeys(opts.secret, 'rooms'));
    this.local = new LocalSeats(opts.rooms);
    this.server = new NgServer((req) => this.handle(req), this.log, this.sealKey, { admit: admitSiblings(this.macKey, opts.share, this.log, 'room control') });
    this.timer = setInterval(() => void this.keep(), this.keepMs);
    this.timer.unref();
  }

  get index(): number {
    return this.opts.share.index;
  }

  portOf(index: number): number {
    return this.opts.basePort + index;
  }

  async listen(): Promise<{ address: string; port: number }> {
    const port = this.portOf(this.index);
    try {
      return await this.server.listen(port, '127.0.0.1');
    } catch (err) {
      // Another edge on this host with the same rooms.siblingPort, most likely.
      throw new Error(`room control channel cannot listen on 127.0.0.1:${port} (${(err as Error).message}): set rooms.siblingPort (KEYLATCH_ROOMS__SIBLING_PORT) to a free range of sip.processes UDP ports`);
    }
  }

  ownerOf(room: string): number {
    return roomOwner(room, this.opts.share.count);
  }

  // ---- the dialog side ---------------------------------------------------------------------

  async join(name: string, who: string, leg: LegOptions, offer: string): Promise<{ seat: RoomSeat; answer: string }> {
    const owner = this.ownerOf(name);
    if (owner === this.index) return this.local.join(name, who, leg, offer);
    const reply = await this.ask(owner, 'room-join', { room: name, who, leg: encodeLeg(leg), sdp: offer });
    const id = typeof reply.participant === 'string' && ID.test(reply.participant) ? reply.participant : null;
    if (!id || typeof reply.sdp !== 'string') throw new RoomUnavailable(`edge process ${owner} answered a join without a participant`);
    const seated: Seated = { owner, end: null };
    this.seated.set(id, seated);
    this.log.info({ room: name, participant: id, owner }, 'room: joined in the owner process');
    const seat: RoomSeat = {
      id,
      describe: async (sdp) => unsealLegKeys(String((await this.ask(owner, 'room-describe', { participant: id, sdp })).sdp ?? ''), this.sealKey),
      dtmf: (key) => void this.ask(owner, 'room-dtmf', { participant: id, key }).catch((err: Error) => this.log.warn({ participant: id, err: err.message }, 'room: DTMF not passed to the owner')),
      hangup: () => {
        if (!this.seated.delete(id)) return;
        void this.ask(owner, 'room-leave', { participant: id }).catch((err: Error) => this.log.warn({ participant: id, owner, err: err.message }, 'room: leave not passed to the owner'));
      },
      onEnd: (end) => {
        seated.end = end;
      },
    };
    return { seat, answer: unsealLegKeys(reply.sdp, this.sealKey) };
  }

  /** The owner let a participant go (or lost it): its dialog here ends. */
  private endSeat(id: string, why: string): void {
    const s = this.seated.get(id);
    if (!s) return;
    this.seated.delete(id);
    this.log.info({ participant: id, owner: s.owner, why }, 'room: ending the dialog of a participant the owner let go');
    s.end?.();
  }

  /** Tells each owner which of its participants still have a dialog here; ends those it no longer knows. */
  private async keep(): Promise<void> {
    this.expireGuests(Date.now());
    if (this.keeping) return;
    this.keeping = true;
    try {
      await this.keepSeats();
    } finally {
      this.keeping = false;
    }
  }

  private async keepSeats(): Promise<void> {
    const byOwner = new Map<number, string[]>();
    for (const [id, s] of this.seated) byOwner.set(s.owner, [...(byOwner.get(s.owner) ?? []), id]);
    await Promise.all([...byOwner].map(async ([owner, ids]) => {
      let reply: NgMessage;
      try {
        // A whole interval to answer: a busy owner is not a dead one (its participants would get a BYE).
        reply = await this.ask(owner, 'room-keep', { participants: ids }, this.keepMs);
      } catch (err) {
        const missed = (this.missedKeeps.get(owner) ?? 0) + 1;
        this.missedKeeps.set(owner, missed);
        if (missed < OWNER_LOST_KEEPS) return;
        this.log.warn({ owner, participants: ids.length, err: (err as Error).message }, 'room: the owner process of these rooms is gone, and its rooms with it: ending its participants\' dialogs');
        for (const id of ids) this.endSeat(id, 'owner gone');
        return;
      }
      this.missedKeeps.set(owner, 0);
      const unknown = Array.isArray(reply.unknown) ? reply.unknown.filter((u): u is string => typeof u === 'string') : [];
      for (const id of unknown) this.endSeat(id, 'owner does not know it');
    }));
  }

  // ---- the owner side ----------------------------------------------------------------------

  private guest(req: NgDict): Guest {
    const id = str(req, 'participant', 64);
    const g = this.guests.get(id);
    // Only the process that joined a participant speaks for it.
    if (!g || g.from !== req.from) throw new RelayError('unknown-call', `no participant ${id} joined from edge process ${String(req.from)}`);
    return g;
  }

  /** Guests whose dialog process stopped keeping them: it is gone, and their dialogs with it. */
  private expireGuests(now: number): void {
    for (const [id, g] of this.guests) {
      if (now - g.keptAt <= GUEST_LOST_KEEPS * this.keepMs + this.commandMs) continue;
      this.log.warn({ participant: id, who: g.p.who, dialogProcess: g.from }, 'room: the edge process holding this participant\'s dialog is gone: it leaves');
      this.guestLeaves(id, g);
    }
  }

  /** A guest's dialog ended (or its process is gone): it leaves, with no word back to that process. */
  private guestLeaves(id: string, g: Guest): void {
    this.guests.delete(id);
    g.p.end = null;
    this.opts.rooms.roomOf(g.p)?.leave(g.p, 'hangup');
  }

  private async handle(req: NgDict): Promise<NgDict> {
    try {
      return await this.execute(req);
    } catch (err) {
      const kind = errorKind(err);
      if (kind === null) {
        this.log.error({ err, command: req.command }, 'room control: command failed unexpectedly');
        return { result: 'error', 'error-reason': 'internal error' };
      }
      const ports = err instanceof PortPoolExhausted ? { 'port-min': err.min, 'port-max': err.max } : {};
      return { result: 'error', 'error-reason': (err as Error).message, 'error-kind': kind, ...ports };
    }
  }

  private async execute(req: NgDict): Promise<NgDict> {
    const from = req.from as number;
    const { rooms } = this.opts;
    switch (req.command) {
      case 'room-join': {
        const name = str(req, 'room', 64).toLowerCase();
        if (this.ownerOf(name) !== this.index) throw new RoomError('no-such-room', `edge process ${this.index} does not own room ${name}`);
        const sdp = str(req, 'sdp');
        const { participant: p } = await rooms.join(name, str(req, 'who', 1024), decodeLeg(req.leg), sdp);
        this.guests.set(p.id, { p, from, keptAt: Date.now() });
        // The room let it go (removed, media timeout, closed): its dialog process sends the BYE.
        p.end = () => {
          this.guests.delete(p.id);
          void this.ask(from, 'room-ended', { participant: p.id }).catch(() => undefined); // its next room-keep hears it too
        };
        return { result: 'ok', participant: p.id, sdp: sealLegKeys(p.answer(sdp), this.sealKey) };
      }
      case 'room-describe': {
        const { p } = this.guest(req);
        const sdp = str(req, 'sdp');
        p.describe(sdp);
        return { result: 'ok', sdp: sealLegKeys(p.answer(sdp), this.sealKey) };
      }
      case 'room-dtmf': {
        const { p } = this.guest(req);
        const key = str(req, 'key', 1);
        if (!DTMF_KEYS.includes(key)) throw new RelayError('bad-request', '"key" must be one of 0-9, *, #, A-D');
        rooms.roomOf(p)?.reportDtmf(p, key);
        return { result: 'ok' };
      }
      case 'room-leave': {
        const id = str(req, 'participant', 64);
        const g = this.guests.get(id);
        if (g && g.from === from) this.guestLeaves(id, g);
        return { result: 'ok' };
      }
      case 'room-keep': {
        const ids = Array.isArray(req.participants) ? req.participants : null;
        if (!ids) throw new RelayError('bad-request', '"participants" must be a list');
        const now = Date.now();
        const unknown: string[] = [];
        for (const id of ids) {
          const g = typeof id === 'string' ? this.guests.get(id) : undefined;
          if (g && g.from === from) g.keptAt = now;
          else if (typeof id === 'string') unknown.push(id);
        }
        return { result: 'ok', unknown };
      }
      case 'room-ended': {
        const id = str(req, 'participant', 64);
        if (this.seated.get(id)?.owner === from) this.endSeat(id, 'the owner let it go');
        return { result: 'ok' };
      }
      case 'room-list':
        // JSON inside: RoomInfo has nulls, which bencode cannot carry.
        return { result: 'ok', rooms: JSON.stringify(rooms.info()) };
      case 'room-admin': {
        const method = str(req, 'method', 8);
        const answer = await roomActions(rooms).handle(method === 'POST' ? 'POST' : 'GET', str(req, 'path', 1024));
        return { result: 'ok', status: answer.status, body: JSON.stringify(answer.body) };
      }
      default:
        throw new RelayError('bad-request', `Unrecognized command: ${String(req.command)}`);
    }
  }

  // ---- both --------------------------------------------------------------------------------

  /** Every room of every process, as each owner sees it; a process that does not answer is logged and left out. */
  async allRooms(): Promise<RoomInfo[]> {
    const all: RoomInfo[] = this.opts.rooms.info();
    await Promise.all(this.siblings().map(async (i) => {
      try {
        all.push(...(JSON.parse(String((await this.ask(i, 'room-list', {})).rooms)) as RoomInfo[]));
      } catch (err) {
        this.log.warn({ edgeProcess: i, err: (err as Error).message }, 'room admin: a sibling edge process did not list its rooms');
      }
    }));
    return all.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** An admin request about a room, run by the process that owns it. */
  async adminAt(owner: number, method: string, path: string): Promise<{ status: number; body: unknown }> {
    const reply = await this.ask(owner, 'room-admin', { method, path });
    return { status: Number(reply.status), body: JSON.parse(String(reply.body)) as unknown };
  }

  private siblings(): number[] {
    return [...Array(this.opts.share.count).keys()].filter((i) => i !== this.index);
  }

  /** One signed command to sibling `index`; result=error becomes the error the owner threw. */
  private async ask(index: number, command: string, args: NgDict, timeoutMs = this.commandMs): Promise<NgMessage> {
    if (this.closed) throw new RoomUnavailable('room control channel closed');
    let client = this.clients.get(index);
    if (!client) {
      client = new NgClient({ host: '127.0.0.1', port: this.portOf(index), timeoutMs: this.commandMs, sign: signedAs(this.index, this.macKey) });
      this.clients.set(index, client);
    }
    let reply: NgMessage;
    try {
      reply = await client.send(command, args, timeoutMs);
    } catch (err) {
      if (err instanceof NgTimeout) throw new RoomUnavailable(`edge process ${index} does not answer on 127.0.0.1:${this.portOf(index)}`);
      throw err;
    }
    if (reply.result === 'error') rethrow(reply);
    return reply;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.server.close();
    for (const c of this.clients.values()) c.close();
  }
}
