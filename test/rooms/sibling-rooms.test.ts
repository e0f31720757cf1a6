/**
 * Rooms across edge processes (src/rooms/sibling-rooms.ts), two "processes" in one jest process:
 * each with its own relay and registry, talking over the real loopback control channel. The
 * owner choice, what a sibling may ask, and what anyone else gets (nothing: no answer at all).
 */
import dgram from 'node:dgram';
import bencode from 'bencode';
import { Relay } from '../../src/media/relay';
import { roomActions } from '../../src/rooms/admin';
import { RoomRegistry } from '../../src/rooms/registry';
import { roomOwner } from '../../src/rooms/room-owner';
import { siblingRoomActions } from '../../src/rooms/sibling-admin';
import { MAX_SKEW_MS, fromSibling, signSibling } from '../../src/control/sibling-auth';
import { SiblingRooms } from '../../src/rooms/sibling-rooms';
import type { RoomSeat } from '../../src/rooms/seats';
import { sdp, sleep, testMediaConfig, testPeers, waitFor } from '../helpers/peers';

const ROOMS = { enabled: true, prefix: 'room-', names: null, maxParticipants: 10, broadcast: [] };
const SECRET = 'a sibling secret for this test only, long enough';
const BASE_PORT = 24000 + (process.pid % 2000) * 4;
/** Room names owned by process 0 and by process 1 of two. */
const owned = (by: number): string => [...Array(100).keys()].map((i) => `r${i}`).find((n) => roomOwner(n, 2) === by)!;

describe('roomOwner', () => {
  it('is one process for a room whatever its case, stable, and spreads rooms over the processes', () => {
    expect(roomOwner('standup', 1)).toBe(0);
    expect(roomOwner('Standup', 4)).toBe(roomOwner('standup', 4));
    // FNV-1a of "standup": a change here moves every room of a running edge on upgrade.
    expect([2, 3, 4].map((n) => roomOwner('standup', n))).toEqual([2, 3, 4].map((n) => 0xd8288c56 % n));
    for (const count of [2, 3, 4, 8]) {
      const per = new Array<number>(count).fill(0);
      for (let i = 0; i < 800; i++) per[roomOwner(`room${i}`, count)]!++;
      // Every process owns rooms, none more than twice its share.
      expect({ count, spread: per.every((n) => n > 0 && n < (2 * 800) / count) }).toEqual({ count, spread: true });
    }
  });
});

describe('fromSibling', () => {
  const key = Buffer.alloc(32, 7);
  const share = { index: 0, count: 3 };
  const signed = (over: Record<string, unknown> = {}): Record<string, unknown> => {
    const body = { command: 'room-keep', participants: [], from: 1, ts: Date.now(), ...over };
    return { ...body, mac: signSibling(key, body) };
  };

  it('takes a signed, fresh request of another process of this edge, from loopback only', () => {
    expect(fromSibling(signed(), '127.0.0.1', key, share)).toBe(true);
    expect(fromSibling(signed(), '::ffff:127.0.0.1', key, share)).toBe(true);
    expect(fromSibling(signed(), '198.18.0.7', key, share)).toBe(false);
    expect(fromSibling(signed(), '10.0.0.1', key, share)).toBe(false);
  });

  it('refuses a wrong or missing mac, a changed field, itself, an index out of range, a stale time, and junk', () => {
    const good = signed();
    expect(fromSibling({ ...good, mac: signSibling(Buffer.alloc(32, 8), { ...good, mac: undefined }) }, '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling({ ...good, mac: undefined }, '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling({ ...good, participants: ['aaaaaaaaaaaa'] }, '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling(signed({ from: 0 }), '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling(signed({ from: 3 }), '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling(signed({ from: '1' }), '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling(signed({ ts: Date.now() - MAX_SKEW_MS - 1000 }), '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling({ ...good, mac: 'zz' }, '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling({ ...good, mac: 12 }, '127.0.0.1', key, share)).toBe(false);
    expect(fromSibling({}, '127.0.0.1', key, share)).toBe(false);
  });
});

describe('rooms over the sibling channel', () => {
  const peer = testPeers();
  let relays: Relay[] = [];
  let registries: RoomRegistry[] = [];
  let procs: SiblingRooms[] = [];
  afterEach(async () => {
    procs.forEach((p) => p.close());
    registries.forEach((r) => r.close());
    await Promise.all(relays.map((r) => r.close()));
    [relays, registries, procs] = [[], [], []];
  });

  /** Two edge processes of one edge; keeps every 200 ms so deaths show quickly. */
  async function twoProcesses(secrets: [string, string] = [SECRET, SECRET]): Promise<void> {
    // Each process's relay on its own slice of the edge's ports, as configForShare cuts them.
    const media = [testMediaConfig(), testMediaConfig()];
    const slice = (i: number): { portMin: number; portMax: number } => ({ portMin: media[i]!.portMin, portMax: media[i]!.portMax });
    for (const index of [0, 1]) {
      const relay = new Relay(media[index]!);
      const rooms = new RoomRegistry({ ...ROOMS }, relay, media[index]!, { siblingMedia: [slice(1 - index)] });
      const proc = new SiblingRooms({ share: { index, count: 2 }, basePort: BASE_PORT, secret: secrets[index]!, rooms, keepMs: 200, commandMs: 500 });
      await proc.listen();
      relays.push(relay);
      registries.push(rooms);
      procs.push(proc);
    }
  }

  const offer = async (ip = '127.0.0.2', opts: { keylatch?: boolean } = {}): Promise<string> => sdp(ip, (await peer(ip)).port, opts);

  it('a join on the other process gets the owner\'s media; re-INVITE, DTMF and leave reach the owner', async () => {
    await twoProcesses();
    const name = owned(0);
    const { seat, answer } = await procs[1]!.join(name, 'sip:a@test', { policy: 'guarded', secure: false, signallingAddress: '127.0.0.2' }, await offer());
    const room = registries[0]!.get(name)!;
    expect(registries[1]!.get(name)).toBeUndefined();
    expect(room.participants().map((p) => [p.id, p.who])).toEqual([[seat.id, 'sip:a@test']]);
    // The answer names the owner's relay port: the media goes there, not to the dialog's process.
    const port = Number(/m=audio (\d+)/.exec(answer)![1]);
    expect(relays[0]!.pool.inUse).toBe(1);
    expect(relays[1]!.pool.inUse).toBe(0);
    const keys: string[] = [];
    room.on('dtmf', (p, key, via) => keys.push(`${p.id} ${key} ${via}`));
    seat.dtmf('5');
    await waitFor(() => keys.length === 1, 2000);
    expect(keys).toEqual([`${seat.id} 5 info`]);
    const again = await seat.describe(await offer('127.0.0.3'));
    expect(again).toMatch(new RegExp(`m=audio ${port} `));
    await expect(seat.describe('not sdp')).rejects.toThrow();
    seat.hangup();
    await waitFor(() => registries[0]!.list().length === 0, 2000);
    expect(relays[0]!.pool.inUse).toBe(0);
  });

  it('a join on the owner stays local; a refusal there is the owner\'s (room full, bad SDP)', async () => {
    await twoProcesses();
    const local = await procs[0]!.join(owned(0), 'sip:a@test', { policy: 'guarded', secure: false }, await offer());
    expect(registries[0]!.get(owned(0))!.get(local.seat.id)).toBeDefined();
    await expect(procs[0]!.join(owned(1), 'sip:b@test', { policy: 'guarded', secure: false }, 'v=0\r\n')).rejects.toMatchObject({ name: 'SdpError' });
    registries[1]!.config.maxParticipants = 1;
    await procs[0]!.join(owned(1), 'sip:b@test', { policy: 'guarded', secure: false }, await offer());
    await expect(procs[0]!.join(owned(1), 'sip:c@test', { policy: 'guarded', secure: false }, await offer())).rejects.toMatchObject({ name: 'RoomError', code: 'room-full' });
  });

  it('an owner\'s refusal of a call the PBX routed back (its offer names a leg of the owner\'s relay) reaches the dialog side as that refusal', async () => {
    await twoProcesses();
    const ownLeg = (await relays[1]!.offer({ callId: 'to-pbx', fromTag: 'a', sdp: await offer() })).sdp;
    await expect(procs[0]!.join(owned(1), 'sip:c@test', { policy: 'guarded', secure: false }, ownLeg)).rejects.toMatchObject({ name: 'RoomError', code: 'hairpin' });
  });

  it('refuses as routed back a call whose leg toward the PBX is on the other process\'s relay, not the owner\'s', async () => {
    await twoProcesses();
    // The phone's call went out through process 0; the PBX sent it back to a room owned by 1.
    const siblingLeg = (await relays[0]!.offer({ callId: 'to-pbx', fromTag: 'a', sdp: await offer() })).sdp;
    expect(relays[1]!.legAddressedBy(siblingLeg)).toBeNull();
    await expect(procs[0]!.join(owned(1), 'sip:c@test', { policy: 'guarded', secure: false }, siblingLeg)).rejects.toMatchObject({ name: 'RoomError', code: 'hairpin' });
    await expect(procs[1]!.join(owned(1), 'sip:c@test', { policy: 'guarded', secure: false }, siblingLeg)).rejects.toMatchObject({ name: 'RoomError', code: 'hairpin' });
    expect(relays[1]!.pool.inUse).toBe(0);
    // A phone of the PBX's own, on any other address, still gets in.
    await procs[0]!.join(owned(1), 'sip:d@test', { policy: 'guarded', secure: false }, await offer());
    expect(registries[1]!.get(owned(1))!.size).toBe(1);
  });

  it('a key leg\'s key crosses the channel sealed, and the dialog side gets it in clear', async () => {
    await twoProcesses();
    const name = owned(0);
    const { answer } = await procs[1]!.join(name, 'sip:a@test', { policy: 'key', secure: true }, await offer('127.0.0.2', { keylatch: true }));
    expect(answer).toMatch(/^a=keylatch:v1 leg=\S+ key=[A-Za-z0-9_-]{43}\r?$/m);
    // What went over the wire, asked by hand as process 1 would.
    const reply = await rawAsk(signedRequest({ command: 'room-join', room: name, who: 'sip:b@test', leg: { policy: 'key', secure: 'yes' }, sdp: await offer('127.0.0.3', { keylatch: true }), from: 1 }));
    expect(reply).toMatch(/a=keylatch:v1 leg=\S+ sealed=/);
    expect(reply).not.toMatch(/ key=/);
  });

  it('the owner letting a participant go ends its dialog on the other process; so does the owner\'s death', async () => {
    await twoProcesses();
    const ends: string[] = [];
    const join = async (name: string, who: string): Promise<RoomSeat> => {
      const { seat } = await procs[1]!.join(name, who, { policy: 'guarded', secure: false }, await offer());
      seat.onEnd(() => ends.push(who));
      return seat;
    };
    const a = await join(owned(0), 'sip:a@test');
    await join(owned(0), 'sip:b@test');
    const removed = await roomActions(registries[0]!).handle('POST', `/rooms/${owned(0)}/participants/${a.id}/remove`);
    expect(removed.status).toBe(200);
    await waitFor(() => ends.length === 1, 2000);
    expect(ends).toEqual(['sip:a@test']);
    // The owner dies: its rooms are lost, and b's dialog ends within a few keeps.
    procs[0]!.close();
    await waitFor(() => ends.length === 2, 6000);
    expect(ends).toEqual(['sip:a@test', 'sip:b@test']);
  });

  it('a participant whose dialog process died leaves the owner\'s room', async () => {
    await twoProcesses();
    await procs[1]!.join(owned(0), 'sip:a@test', { policy: 'guarded', secure: false }, await offer());
    expect(registries[0]!.get(owned(0))!.size).toBe(1);
    await sleep(500);
    // Still kept while its process lives...
    expect(registries[0]!.get(owned(0))!.size).toBe(1);
    procs[1]!.close();
    // ...gone once it stops keeping it (3 keeps of 200 ms and a command's 500 ms).
    await waitFor(() => registries[0]!.list().length === 0, 6000);
    expect(relays[0]!.pool.inUse).toBe(0);
  });

  it('answers nothing to junk, to an unsigned or wrongly signed request, nor to an edge with another secret; and goes on serving', async () => {
    await twoProcesses([SECRET, 'another edge entirely, another secret here']);
    const name = owned(0);
    const junk = [
      Buffer.from('nocookie'),
      Buffer.from('c1 not bencode'),
      Buffer.from('c2 li1ee'),
      Buffer.concat([Buffer.from('c3 '), Buffer.from(bencode.encode({ command: 'room-list' }))]),
      Buffer.concat([Buffer.from('c4 '), Buffer.from(bencode.encode({ command: 'room-list', from: 1, ts: Date.now(), mac: '00'.repeat(32) }))]),
      Buffer.concat([Buffer.from('c5 '), Buffer.alloc(60000, 0x64)]),
    ];
    for (const j of junk) expect(await rawSend(j)).toBeNull();
    // Process 1 holds another secret: it is no sibling of process 0.
    await expect(procs[1]!.join(name, 'sip:a@test', { policy: 'guarded', secure: false }, await offer())).rejects.toMatchObject({ name: 'RoomUnavailable' });
    expect(registries[0]!.list()).toHaveLength(0);
    // Signed but malformed: an error answer, and the process goes on.
    for (const bad of [{ command: 'room-join', room: name, from: 1 }, { command: 'room-join', room: name, who: 'x', sdp: 'v=0', leg: 'key', from: 1 },
      { command: 'room-dtmf', participant: 'nobody', key: '5', from: 1 }, { command: 'room-keep', participants: 'all', from: 1 }, { command: 'shutdown', from: 1 }]) {
      expect(await rawAsk(signedRequest(bad))).toMatch(/"result":"error"/);
    }
    const listed = await rawAsk(signedRequest({ command: 'room-list', from: 1 }));
    expect(JSON.parse(listed)).toMatchObject({ result: 'ok', rooms: '[]' });
  });

  it('a port already taken is said in terms of rooms.siblingPort', async () => {
    await twoProcesses();
    const third = new SiblingRooms({ share: { index: 1, count: 2 }, basePort: BASE_PORT, secret: SECRET, rooms: registries[0]! });
    try {
      await expect(third.listen()).rejects.toThrow(/rooms\.siblingPort/);
    } finally {
      third.close();
    }
  });

  it('the admin routes of either process list and act on every room', async () => {
    await twoProcesses();
    const { seat: a } = await procs[1]!.join(owned(0), "sip:a@test", { policy: "guarded", secure: false }, await offer());
    await procs[0]!.join(owned(1), 'sip:b@test', { policy: 'guarded', secure: false }, await offer());
    const admin = [0, 1].map((i) => siblingRoomActions(roomActions(registries[i]!), procs[i]!));
    for (const route of admin) {
      const list = await route.handle('GET', '/rooms');
      expect((list.body as Array<{ name: string; participants: Array<{ who: string }> }>).map((r) => [r.name, r.participants.map((p) => p.who)]))
        .toEqual([[owned(0), ['sip:a@test']], [owned(1), ['sip:b@test']]].sort((x, y) => String(x[0]).localeCompare(String(y[0]))));
    }
    // Muted through process 1's admin, in process 0's room.
    expect(await admin[1]!.handle('POST', `/rooms/${owned(0)}/participants/${a.id}/mute`)).toMatchObject({ status: 200, body: { id: a.id, muted: true } });
    expect(registries[0]!.get(owned(0))!.get(a.id)!.muted).toBe(true);
    expect((await admin[1]!.handle('GET', '/rooms/nosuch')).status).toBe(404);
    expect((await admin[1]!.handle('GET', '/rooms/%E0%A4%A')).status).toBe(400);
  });

  /** A request signed as process 1 of this edge. */
  function signedRequest(body: Record<string, unknown>): Buffer {
    const key = (procs[0] as unknown as { macKey: Buffer }).macKey;
    const dict = { ...body, ts: Date.now() };
    return Buffer.concat([Buffer.from('ck '), Buffer.from(bencode.encode({ ...dict, mac: signSibling(key, dict) }))]);
  }

  /** Sends to process 0 from a fresh socket; its reply as JSON, or null when none came in 400 ms. */
  async function rawSend(packet: Buffer): Promise<string | null> {
    const s = dgram.createSocket('udp4');
    try {
      return await new Promise<string | null>((resolve) => {
        const timer = setTimeout(() => resolve(null), 400);
        s.on('message', (m) => {
          clearTimeout(timer);
          const space = m.indexOf(0x20);
          resolve(JSON.stringify(bencode.decode(m.subarray(space + 1), 'utf8')));
        });
        s.send(packet, BASE_PORT, '127.0.0.1');
      });
    } finally {
      s.close();
    }
  }

  async function rawAsk(packet: Buffer): Promise<string> {
    const reply = await rawSend(packet);
    if (reply === null) throw new Error('no reply');
    return reply;
  }
});
