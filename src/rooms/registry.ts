import type { MediaConfig, RoomsConfig } from '../config/schema';
import { silentLogger, type Logger } from '../log';
import type { LegOptions } from '../media/call';
import type { PortShare } from '../media/cluster/port-shares';
import type { Relay } from '../media/relay';
import { Participant } from './participant';
import { Room, type LeaveReason, type RoomInfo } from './room';

/** Why a join was refused; each answers the INVITE its own way (sip-rooms.ts, refuse). */
export const ROOM_ERROR_CODES = ['no-such-room', 'room-full', 'hairpin'] as const;
export type RoomErrorCode = (typeof ROOM_ERROR_CODES)[number];

export class RoomError extends Error {
  override name = 'RoomError';
  constructor(readonly code: RoomErrorCode, message: string) {
    super(message);
  }
}

const NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/i;

/** Counts the edge's metrics read (src/rooms/metrics.ts). */
export interface RoomTotals {
  joins: number;
  leaves: Record<LeaveReason, number>;
  talkspurts: number;
  dtmf: number;
}

/**
 * Every room of this keylatch, by name. A room exists while someone is in it: the first join
 * opens it, the last leave closes it. The registry also does its participants' housekeeping,
 * which the relay's own tick does only for calls: latch re-challenges and dead media.
 */
export class RoomRegistry {
  private readonly rooms = new Map<string, Room>();
  private readonly broadcasts: Map<string, Set<string>>;
  private readonly timer: NodeJS.Timeout;
  private readonly log: Logger;
  readonly totals: RoomTotals = { joins: 0, leaves: { hangup: 0, removed: 0, 'media timeout': 0, 'room closed': 0 }, talkspurts: 0, dtmf: 0 };

  /** With sip.processes > 1: the media ports of the edge's other processes, on this relay's address. */
  private readonly siblingMedia: readonly PortShare[];

  /** rooms.siblingPort is the edge's business (sibling-rooms.ts), not the registry's. */
  constructor(
    readonly config: Omit<RoomsConfig, 'siblingPort'>, private readonly relay: Relay, private readonly media: Pick<MediaConfig, 'timeouts' | 'key'>,
    opts: { logger?: Logger; siblingMedia?: readonly PortShare[] } = {},
  ) {
    this.log = opts.logger ?? silentLogger;
    this.siblingMedia = opts.siblingMedia ?? [];
    this.broadcasts = new Map(config.broadcast.map((b) => [b.name.toLowerCase(), new Set(b.speakers.map((s) => s.toLowerCase()))]));
    const tickMs = Math.max(50, Math.min(1000, media.key.rechallengeIntervalMs / 2));
    this.timer = setInterval(() => this.tick(Date.now()), tickMs);
    this.timer.unref();
  }

  /** The room a Request-URI's user part names ("room-standup" -> "standup"), if it is one that may exist. */
  roomNameOf(user: string | null): string | null {
    if (!this.config.enabled || !user || !user.toLowerCase().startsWith(this.config.prefix.toLowerCase())) return null;
    const name = user.slice(this.config.prefix.length).toLowerCase();
    return NAME.test(name) ? name : null;
  }

  /** Whether the room may exist: configured names, or any when none are. */
  allowed(name: string): boolean {
    return this.broadcasts.has(name) || this.config.names === null || this.config.names.some((n) => n.toLowerCase() === name);
  }

  /**
   * Opens a leg for `who` in room `name` and hooks it into the mixer. Its media counts only once
   * its leg has latched. Throws RoomError, SdpError, RelayError or PortPoolExhausted.
   */
  async join(name: string, who: string, leg: LegOptions, offer: string): Promise<{ room: Room; participant: Participant }> {
    if (!this.allowed(name)) throw new RoomError('no-such-room', `no room ${name}`);
    // A call of one of our own clients that the PBX routed back here (an extension it maps to a
    // room): its offer names the call's own leg toward the PBX, on this relay. A participant
    // leg would send to that port and it to ours, and the relay sends to neither of its own
    // ports: a silent call. Refuse it and say how the phone gets in. With several edge
    // processes the leg may be on a sibling's relay: refused all the same, so that whether a
    // phone gets in does not hang on which process drachtio-server gave its call to.
    if (this.relay.legAddressedBy(offer) || this.relay.addressedWithin(offer, this.siblingMedia)) {
      throw new RoomError('hairpin', `this call comes from a phone registered through keylatch, routed back by the PBX: have the phone dial sip:${this.config.prefix}${name}@ its own domain or keylatch`);
    }
    const room = this.rooms.get(name) ?? this.open(name);
    if (room.size >= this.config.maxParticipants) throw new RoomError('room-full', `room ${name} has ${room.size} participants`);
    const speakers = this.broadcasts.get(name);
    const p = new Participant(who, !speakers || speakers.has(who.toLowerCase()) ? 'speaker' : 'listener', leg, this.relay);
    try {
      await p.open(offer);
      p.mode = room.modeFor(p);
      room.join(p);
    } catch (err) {
      p.close();
      if (room.size === 0) this.closeRoom(room);
      throw err;
    }
    return { room, participant: p };
  }

  get(name: string): Room | undefined {
    return this.rooms.get(name.toLowerCase());
  }

  /** The room a participant is in, while it is in one. */
  roomOf(p: Participant): Room | undefined {
    return this.list().find((r) => r.get(p.id) === p);
  }

  list(): Room[] {
    return [...this.rooms.values()];
  }

  info(): RoomInfo[] {
    return this.list().map((r) => r.info());
  }

  close(): void {
    clearInterval(this.timer);
    for (const r of this.list()) this.closeRoom(r);
  }

  private open(name: string): Room {
    const speakers = this.broadcasts.get(name) ?? null;
    const room = new Room(name, speakers);
    this.rooms.set(name, room);
    room.on('joined', (p) => {
      this.totals.joins++;
      this.log.info({ room: name, participant: p.id, who: p.who, role: p.role, mode: p.mode, policy: p.leg.policy, codec: p.media.codec }, 'room: joined');
    });
    room.on('left', (p, why) => {
      this.totals.leaves[why]++;
      this.log.info({ room: name, participant: p.id, who: p.who, why }, 'room: left');
      if (room.size === 0 && why !== 'room closed') this.closeRoom(room);
    });
    room.on('talking', (p, talking) => {
      if (talking) this.totals.talkspurts++;
      this.log.debug({ room: name, participant: p.id, who: p.who, talking }, 'room: talking');
    });
    room.on('dtmf', (p, key, via) => {
      this.totals.dtmf++;
      this.log.info({ room: name, participant: p.id, who: p.who, key, via }, 'room: DTMF');
    });
    room.on('muted', (p, muted) => this.log.info({ room: name, participant: p.id, who: p.who, muted }, 'room: mute'));
    this.log.info({ room: name, broadcast: speakers !== null }, 'room: opened');
    return room;
  }

  private closeRoom(room: Room): void {
    if (this.rooms.get(room.name) === room) this.rooms.delete(room.name);
    room.close();
    this.log.info({ room: room.name }, 'room: closed');
  }

  private tick(now: number): void {
    const limitMs = this.media.timeouts.mediaSec * 1000;
    for (const room of this.list()) {
      for (const p of room.participants()) {
        p.tick(now);
        if (now - p.lastSeen() > limitMs) {
          this.log.warn({ room: room.name, participant: p.id, who: p.who }, 'room: media timeout');
          room.leave(p, 'media timeout');
        }
      }
    }
  }
}
