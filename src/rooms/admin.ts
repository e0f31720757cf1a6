import type { ActionRoute } from '../control/http-server';
import type { RoomRegistry } from './registry';

/**
 * Room control on the admin listener (admin.listen, keep it on loopback or a management net):
 *   GET  /rooms                                         every room and its participants
 *   GET  /rooms/<room>                                  one room
 *   POST /rooms/<room>/participants/<id>/mute|unmute    not heard / heard again
 *   POST /rooms/<room>/participants/<id>/remove         out of the room (it gets a BYE)
 */
export function roomActions(rooms: RoomRegistry): ActionRoute {
  return {
    prefix: '/rooms',
    async handle(method, path) {
      const parts = path.split('/').filter(Boolean).map((p) => decodeURIComponent(p));
      if (parts[0] !== 'rooms') return { status: 404, body: { error: 'not found' } };
      if (parts.length === 1) return method === 'GET' ? { status: 200, body: rooms.info() } : { status: 405, body: { error: 'GET only' } };
      const room = rooms.get(parts[1]!);
      if (!room) return { status: 404, body: { error: `no room ${parts[1]}` } };
      if (parts.length === 2) return method === 'GET' ? { status: 200, body: room.info() } : { status: 405, body: { error: 'GET only' } };
      const p = parts[2] === 'participants' ? room.get(parts[3] ?? '') : undefined;
      if (!p) return { status: 404, body: { error: `no participant ${parts[3] ?? ''} in room ${room.name}` } };
      if (parts.length === 4) return method === 'GET' ? { status: 200, body: p.info() } : { status: 405, body: { error: 'GET only' } };
      if (method !== 'POST' || parts.length !== 5) return { status: 405, body: { error: 'POST mute, unmute or remove' } };
      if (parts[4] === 'mute' || parts[4] === 'unmute') {
        room.mute(p, parts[4] === 'mute');
        return { status: 200, body: p.info() };
      }
      if (parts[4] === 'remove') {
        room.leave(p, 'removed');
        return { status: 200, body: { removed: p.id } };
      }
      return { status: 404, body: { error: `no action ${parts[4]}` } };
    },
  };
}
