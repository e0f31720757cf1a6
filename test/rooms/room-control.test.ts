/** Room control and status: the admin routes' answers, and how `keylatch status` prints rooms. */
import { formatStatus } from '../../src/control/status-format';
import type { Relay } from '../../src/media/relay';
import { roomActions } from '../../src/rooms/admin';
import { RoomRegistry } from '../../src/rooms/registry';
import { newRelay, sdp, testMediaConfig, testPeers } from '../helpers/peers';

const peer = testPeers();
let relay: Relay;
let rooms: RoomRegistry;
afterEach(async () => {
  rooms?.close();
  await relay?.close();
});

async function withParticipant(): Promise<{ id: string }> {
  relay = newRelay();
  rooms = new RoomRegistry({ enabled: true, prefix: 'room-', names: null, maxParticipants: 2, broadcast: [] }, relay, testMediaConfig());
  const p = await peer('127.0.0.2');
  const { participant } = await rooms.join('standup', 'sip:a@test', { policy: 'guarded', secure: false, signallingAddress: '127.0.0.2' }, sdp('127.0.0.2', p.port));
  return { id: participant.id };
}

describe('room control', () => {
  it('lists rooms, mutes and unmutes, removes; unknown names are 404 and wrong methods 405', async () => {
    const { id } = await withParticipant();
    const admin = roomActions(rooms);
    const list = await admin.handle('GET', '/rooms');
    expect(list.status).toBe(200);
    expect((list.body as Array<{ name: string; participants: unknown[] }>).map((r) => [r.name, r.participants.length])).toEqual([['standup', 1]]);
    expect((await admin.handle('GET', '/rooms/nosuch')).status).toBe(404);
    expect((await admin.handle('GET', '/rooms/standup/participants/nobody')).status).toBe(404);
    expect((await admin.handle('POST', '/rooms')).status).toBe(405);
    expect((await admin.handle('GET', `/rooms/standup/participants/${id}/mute`)).status).toBe(405);
    expect((await admin.handle('POST', `/rooms/standup/participants/${id}/shout`)).status).toBe(404);
    const muted = await admin.handle('POST', `/rooms/standup/participants/${id}/mute`);
    expect(muted).toMatchObject({ status: 200, body: { id, muted: true } });
    expect(rooms.get('standup')!.get(id)!.muted).toBe(true);
    expect((await admin.handle('POST', `/rooms/standup/participants/${id}/unmute`)).body).toMatchObject({ muted: false });
    expect(relay.pool.inUse).toBe(1);
    expect(await admin.handle('POST', `/rooms/standup/participants/${id}/remove`)).toEqual({ status: 200, body: { removed: id } });
    // The last one out closes the room and gives its ports back.
    expect(rooms.list()).toHaveLength(0);
    expect(relay.pool.inUse).toBe(0);
  });

  it('a full room refuses the next participant, and a name outside rooms.names does not exist', async () => {
    await withParticipant();
    const p = await peer('127.0.0.3');
    await rooms.join('standup', 'sip:b@test', { policy: 'guarded', secure: false }, sdp('127.0.0.3', p.port));
    await expect(rooms.join('standup', 'sip:c@test', { policy: 'guarded', secure: false }, sdp('127.0.0.3', p.port))).rejects.toMatchObject({ code: 'room-full' });
    const limited = new RoomRegistry({ enabled: true, prefix: 'room-', names: ['standup'], maxParticipants: 5, broadcast: [] }, relay, testMediaConfig());
    try {
      await expect(limited.join('other', 'sip:c@test', { policy: 'guarded', secure: false }, sdp('127.0.0.3', p.port))).rejects.toMatchObject({ code: 'no-such-room' });
      expect(limited.roomNameOf('room-Standup')).toBe('standup');
      expect(limited.roomNameOf('alice')).toBeNull();
      expect(limited.roomNameOf('room-')).toBeNull();
    } finally {
      limited.close();
    }
    expect(relay.pool.inUse).toBe(2);
  });

  it('keylatch status prints each room with its participants', async () => {
    await withParticipant();
    const text = formatStatus({ service: 'edge', now: Date.now(), uptimeSec: 5, summary: {}, bindings: null, calls: [], rooms: rooms.info() });
    expect(text).toMatch(/Rooms: 1/);
    expect(text).toMatch(/standup\s+\S+\s+sip:a@test\s+speaker\/mix\s+guarded:learning\s+-/);
  });
});
