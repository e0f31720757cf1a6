/**
 * Which edge process holds a room (sip.processes > 1, src/edge-processes.ts). A room's mixer
 * and every participant's media ports live in one process, its owner; a join that drachtio-server
 * hands to another process keeps its dialog there and asks the owner for the media
 * (src/rooms/sibling-rooms.ts). The owner is a stable hash of the room's name over the process
 * count: every process agrees without asking anyone, and a restarted process owns what it
 * owned before.
 */
import { stableHash, type EdgeShare } from '../edge-processes';

/** The index of the process that owns room `name` (names are compared lower-case, as rooms are). */
export const roomOwner = (name: string, count: number): number => (count <= 1 ? 0 : stableHash(name.toLowerCase()) % count);

export const ownsRoom = (name: string, share: EdgeShare): boolean => roomOwner(name, share.count) === share.index;
