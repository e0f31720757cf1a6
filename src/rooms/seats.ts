/**
 * What the room desk (sip-rooms.ts) holds for one joined dialog: a seat in a room. With one
 * edge process every seat is local (LocalSeats, a Participant in this process's RoomRegistry);
 * with several, a seat in a room another process owns is remote (src/rooms/sibling-rooms.ts):
 * the same operations, asked of the owner over the control channel.
 */
import type { LegOptions } from '../media/call';
import type { Participant } from './participant';
import type { RoomRegistry } from './registry';

/** The process that owns the room did not answer, or refused in a way no caller can fix: 503. */
export class RoomUnavailable extends Error {
  override name = 'RoomUnavailable';
}

export interface RoomSeat {
  /** The participant's id in its room (the owner's Participant id). */
  readonly id: string;
  /** A re-INVITE's offer: the media may have moved or gone on hold. Resolves with the answer SDP. */
  describe(offer: string): Promise<string>;
  /** A key the participant sent in SIP INFO. */
  dtmf(key: string): void;
  /** The dialog ended (BYE, CANCEL, a failed 200): the participant leaves the room. */
  hangup(): void;
  /**
   * What to do when the room lets the participant go for any other reason (removed, media
   * timeout, the room closed, the owner process gone): end the dialog with a BYE.
   */
  onEnd(end: () => void): void;
}

export interface RoomSeats {
  /** Joins room `name`; resolves with the seat and the answer SDP. Throws what RoomRegistry.join throws. */
  join(name: string, who: string, leg: LegOptions, offer: string): Promise<{ seat: RoomSeat; answer: string }>;
}

/** A seat in a room of this process: the participant itself. */
export function localSeat(rooms: RoomRegistry, p: Participant): RoomSeat {
  return {
    id: p.id,
    describe: async (offer) => {
      p.describe(offer);
      return p.answer(offer);
    },
    dtmf: (key) => rooms.roomOf(p)?.reportDtmf(p, key),
    hangup: () => rooms.roomOf(p)?.leave(p, 'hangup'),
    onEnd: (end) => {
      p.end = end;
    },
  };
}

/** Every room in this process's registry. */
export class LocalSeats implements RoomSeats {
  constructor(private readonly rooms: RoomRegistry) {}

  async join(name: string, who: string, leg: LegOptions, offer: string): Promise<{ seat: RoomSeat; answer: string }> {
    const { participant } = await this.rooms.join(name, who, leg, offer);
    return { seat: localSeat(this.rooms, participant), answer: participant.answer(offer) };
  }
}
