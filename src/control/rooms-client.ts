/**
 * `keylatch rooms`' side of the admin listener (the routes are src/rooms/admin.ts): list the
 * rooms, and mute, unmute or remove a participant named by its id or its SIP URI. Every failure
 * is a RoomsClientError whose message says what to do next, for the CLI to print as it is.
 */
import { joinHostPort } from '../host-port';
import type { ParticipantInfo } from '../rooms/participant';
import type { RoomInfo } from '../rooms/room';
import { relayAdminRequest } from './relay-admin';

export const ROOM_ACTIONS = ['mute', 'unmute', 'remove'] as const;
export type RoomAction = (typeof ROOM_ACTIONS)[number];

export class RoomsClientError extends Error {
  override name = 'RoomsClientError';
}

export interface AdminAddress {
  host: string;
  port: number;
}

/** What an action did, as the admin answered it, and one line saying so. */
export interface ActionResult {
  line: string;
  answer: unknown;
}

export class RoomsClient {
  private readonly label: string;

  constructor(private readonly admin: AdminAddress) {
    this.label = joinHostPort(admin.host, admin.port);
  }

  async list(): Promise<RoomInfo[]> {
    const { status, body } = await this.ask('GET', '/rooms');
    if (status !== 200 || !Array.isArray(body)) throw new RoomsClientError(`${this.label}/rooms answered ${status}: ${JSON.stringify(body)}`);
    return body as RoomInfo[];
  }

  /** One participant of one room, by id or by its SIP URI (case-insensitive, and only if one matches). */
  async find(roomName: string, who: string): Promise<{ room: RoomInfo; participant: ParticipantInfo }> {
    const { status, body } = await this.ask('GET', `/rooms/${encodeURIComponent(roomName)}`);
    if (status === 404) {
      const names = (await this.list()).map((r) => r.name);
      throw new RoomsClientError(`no room ${roomName} (${names.length ? `rooms now: ${names.join(', ')}` : 'no room has anyone in it'})`);
    }
    if (status !== 200) throw new RoomsClientError(`${this.label}/rooms/${roomName} answered ${status}: ${JSON.stringify(body)}`);
    const room = body as RoomInfo;
    const byId = room.participants.find((p) => p.id === who);
    if (byId) return { room, participant: byId };
    const byUri = room.participants.filter((p) => p.who.toLowerCase() === who.toLowerCase());
    if (byUri.length === 1) return { room, participant: byUri[0]! };
    const listed = room.participants.map((p) => `${p.id} ${p.who}`).join(', ');
    if (byUri.length > 1) throw new RoomsClientError(`${who} is in room ${room.name} ${byUri.length} times: name one by its id (${listed})`);
    throw new RoomsClientError(`no participant ${who} in room ${room.name} (in it: ${listed || 'nobody'})`);
  }

  async act(action: RoomAction, roomName: string, who: string): Promise<ActionResult> {
    const { room, participant } = await this.find(roomName, who);
    const path = `/rooms/${encodeURIComponent(room.name)}/participants/${encodeURIComponent(participant.id)}/${action}`;
    const { status, body } = await this.ask('POST', path);
    // It may have left between the look-up and the action: the admin's own words say so.
    if (status !== 200) throw new RoomsClientError(`${action} ${participant.who} in room ${room.name}: ${errorOf(body) ?? `answered ${status}`}`);
    const done = action === 'remove' ? 'removed (it gets a BYE)' : action === 'mute' ? 'muted: nobody hears it' : 'unmuted: heard again';
    return { line: `${room.name}: ${participant.who} (${participant.id}) ${done}`, answer: body };
  }

  /** One request; an unreachable listener, one that serves no rooms, or a non-JSON answer become clear errors. */
  private async ask(method: 'GET' | 'POST', path: string): Promise<{ status: number; body: unknown }> {
    let answer: { status: number; body: string };
    try {
      answer = await relayAdminRequest(this.admin.host, this.admin.port, method, path);
    } catch (err) {
      throw new RoomsClientError(`cannot reach the admin listener at ${this.label} (${(err as Error).message}): is keylatch edge running with admin.listen there? --admin HOST:PORT picks another`);
    }
    // The room routes always answer JSON; a bare 404 is the listener saying it has no /rooms at all.
    if (answer.status === 404 && answer.body === '') throw new RoomsClientError(`the edge at ${this.label} has no rooms: rooms.enabled is off there (KEYLATCH_ROOMS__ENABLED=true turns them on)`);
    try {
      return { status: answer.status, body: JSON.parse(answer.body) as unknown };
    } catch {
      throw new RoomsClientError(`${this.label}${path} did not answer JSON (${answer.status}: ${answer.body.trim().slice(0, 200)})`);
    }
  }
}

function errorOf(body: unknown): string | undefined {
  return typeof body === 'object' && body !== null && typeof (body as { error?: unknown }).error === 'string' ? (body as { error: string }).error : undefined;
}
