/**
 * The room routes of the admin listener (admin.ts) when several edge processes share the rooms:
 * whichever process's admin port is asked answers for all of them. GET /rooms lists every
 * process's rooms; a request about one room is run by the process that owns it (room-owner.ts),
 * over the sibling channel. So `keylatch rooms` needs no idea of how many processes there are.
 */
import type { ActionRoute } from '../control/http-server';
import type { SiblingRooms } from './sibling-rooms';

export function siblingRoomActions(local: ActionRoute, siblings: SiblingRooms): ActionRoute {
  return {
    prefix: local.prefix,
    async handle(method, path) {
      const parts = path.split('/').filter(Boolean);
      if (parts[0] !== 'rooms' || parts.length === 1) {
        if (parts.length === 1 && method === 'GET') return { status: 200, body: await siblings.allRooms() };
        return local.handle(method, path);
      }
      let name: string;
      try {
        name = decodeURIComponent(parts[1]!);
      } catch {
        return { status: 400, body: { error: 'bad room name' } };
      }
      const owner = siblings.ownerOf(name);
      if (owner === siblings.index) return local.handle(method, path);
      try {
        return await siblings.adminAt(owner, method, path);
      } catch (err) {
        return { status: 503, body: { error: `edge process ${owner}, which holds room ${name}: ${(err as Error).message}` } };
      }
    },
  };
}
