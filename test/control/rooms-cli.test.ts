/**
 * `keylatch rooms` as an operator runs it: the real CLI (a child process) against a running
 * `keylatch edge` (another child process) on drachtio-server, with two callers the PBX (sipp)
 * put into room "standup". Lists, mutes, unmutes and removes them; unknown rooms and
 * participants, a wrong command, an admin listener nobody serves and an edge without rooms each
 * get a clear message and exit code.
 */
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { startHttpListeners } from '../../src/control/status-server';
import type { RoomInfo } from '../../src/rooms/room';
import { runCli, spawnCli } from '../helpers/cli';
import { drachtioBinary, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { Peer, waitFor, waitForAsync } from '../helpers/peers';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';

const noSipTools = !drachtioBinary() || sippUnavailable() !== null;
if (noSipTools) console.warn('!!! SKIPPED keylatch rooms CLI test: needs drachtio-server (DRACHTIO_BIN or PATH) and sipp');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

(noSipTools ? describe.skip : describe)('keylatch rooms (CLI) against a running edge', () => {
  const sipPort = 17060 + (process.pid % 500);
  const pbxPort = 24060 + (process.pid % 500);
  const admin = `127.0.0.1:${18465 + (process.pid % 500)}`;
  let drachtio: RunningDrachtio;
  let edge: ChildProcess;
  let edgeOut = '';
  let media: Peer;

  beforeAll(async () => {
    drachtio = await startDrachtio({ contacts: [`sip:127.0.0.1:${sipPort};transport=udp`], adminPort: 17622 + (process.pid % 500) });
    edge = spawnCli(['edge', '--interface', '127.0.0.1', '--ports', '38300-38399'], {
      KEYLATCH_SIP__DRACHTIO__PORT: String(drachtio.admin.port),
      KEYLATCH_SIP__DRACHTIO__SECRET: drachtio.admin.secret,
      KEYLATCH_SIP__PBX: `sip:127.0.0.2:${pbxPort}`,
      KEYLATCH_SIP__ADVERTISED_ADDRESS: `127.0.0.1:${sipPort}`,
      KEYLATCH_ADMIN__LISTEN: admin,
      KEYLATCH_ROOMS__ENABLED: 'true',
    });
    edge.stdout!.on('data', (d: Buffer) => (edgeOut = (edgeOut + d.toString()).slice(-20000)));
    edge.stderr!.on('data', (d: Buffer) => (edgeOut = (edgeOut + d.toString()).slice(-20000)));
    await waitFor(() => edgeOut.includes('keylatch edge is up'), 15000).catch(() => {
      throw new Error(`the edge did not start:\n${edgeOut}`);
    });
    media = await Peer.open('127.0.0.2');
  }, 30000);

  afterAll(async () => {
    media?.close();
    edge?.kill('SIGTERM');
    await drachtio?.stop();
  });

  const rooms = async (): Promise<RoomInfo[]> => {
    const r = await runCli(['rooms', '--json', '--admin', admin]);
    expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: '' });
    return JSON.parse(r.out) as RoomInfo[];
  };

  it('says at startup, and in keylatch status, which URI dials a room: one that names this edge', async () => {
    const line = `rooms            sip:room-<name>@127.0.0.1:${sipPort}, any name`;
    expect(edgeOut).toContain(line);
    const status = await runCli(['status', '--admin', admin]);
    expect(status.out).toContain(line);
  });

  it('lists the room and its participants, mutes, unmutes and removes them; mistakes are named', async () => {
    // The PBX puts two callers into the room; each stays until keylatch sends it a BYE.
    const callers = runSipp(['-sf', path.join(SCENARIOS, 'pbx-room-stay.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '2', '-l', '2', '-s', 'room-standup',
      '-key', 'mport', String(media.port), `127.0.0.1:${sipPort}`], { timeoutMs: 60000 });
    const [c1, c2] = ['sip:caller1@keylatch.test', 'sip:caller2@keylatch.test'];
    await waitForAsync(async () => {
      const r = await fetch(`http://${admin}/rooms/standup`);
      return r.status === 200 && ((await r.json()) as RoomInfo).participants.length === 2;
    }, 10000).catch(() => {
      throw new Error(`the callers did not join:\n${edgeOut.slice(-3000)}`);
    });

    const table = await runCli(['rooms', '--admin', admin]);
    expect(table.code).toBe(0);
    const lines = table.out.trimEnd().split('\n');
    expect(lines[0]).toBe('Rooms: 1');
    expect(lines[1]!.trim().split(/\s{2,}/)).toEqual(['ROOM', 'PARTICIPANT', 'WHO', 'ROLE/GETS', 'LATCH', 'LATCHED ON', 'STATE', 'PKTS IN', 'PKTS OUT']);
    expect(lines.slice(2).map((l) => /\s(sip:\S+)\s+speaker\/mix\s+guarded:/.exec(l)?.[1]).sort()).toEqual([c1, c2]);
    expect(lines[2]).toMatch(/^ {2}standup\s/);

    const listed = await rooms();
    const id = (who: string): string => listed[0]!.participants.find((p) => p.who === who)!.id;

    // Named by SIP URI, then by id.
    const muted = await runCli(['rooms', 'mute', 'standup', c1, '--admin', admin]);
    expect(muted).toEqual({ code: 0, out: `standup: ${c1} (${id(c1)}) muted: nobody hears it\n`, err: '' });
    expect((await rooms())[0]!.participants.map((p) => [p.who, p.muted]).sort()).toEqual([[c1, true], [c2, false]]);
    const unmuted = await runCli(['rooms', 'unmute', 'standup', id(c1), '--json', '--admin', admin]);
    expect(unmuted.code).toBe(0);
    expect(JSON.parse(unmuted.out)).toMatchObject({ id: id(c1), who: c1, muted: false });

    // Mistakes: each says what is there instead, exit 1; a wrong command line is usage, exit 2.
    const noRoom = await runCli(['rooms', 'mute', 'nosuch', c1, '--admin', admin]);
    expect(noRoom).toEqual({ code: 1, out: '', err: 'keylatch rooms: no room nosuch (rooms now: standup)\n' });
    const nobody = await runCli(['rooms', 'remove', 'standup', 'sip:nobody@keylatch.test', '--admin', admin]);
    expect(nobody.code).toBe(1);
    expect(nobody.err).toMatch(/^keylatch rooms: no participant sip:nobody@keylatch\.test in room standup \(in it: \S+ sip:caller\d@keylatch\.test, \S+ sip:caller\d@keylatch\.test\)\n$/);
    const shout = await runCli(['rooms', 'shout', 'standup', c1, '--admin', admin]);
    expect(shout.code).toBe(2);
    expect(shout.err).toMatch(/^keylatch rooms: no action shout: mute, unmute or remove\nusage: keylatch edge/);
    expect((await runCli(['rooms', 'mute', 'standup', '--admin', admin])).err).toMatch(/^keylatch rooms: mute takes ROOM and PARTICIPANT/);
    expect(await runCli(['rooms', '--admin', 'localhost'])).toMatchObject({ code: 2, err: expect.stringMatching(/^keylatch rooms: not HOST:PORT: localhost\n/) as unknown });

    // Removing both: each caller gets a BYE (sipp answers it and ends), and the room is gone.
    expect(await runCli(['rooms', 'remove', 'standup', c2, '--admin', admin])).toEqual({ code: 0, out: `standup: ${c2} (${id(c2)}) removed (it gets a BYE)\n`, err: '' });
    const removed = await runCli(['rooms', 'remove', 'standup', id(c1), '--json', '--admin', admin]);
    expect({ code: removed.code, body: JSON.parse(removed.out) as unknown }).toEqual({ code: 0, body: { removed: id(c1) } });
    const sipp = await callers;
    expect({ code: sipp.code, out: sipp.code === 0 ? '' : sipp.out.slice(-2000) }).toEqual({ code: 0, out: '' });
    expect(await runCli(['rooms', '--admin', admin])).toEqual({ code: 0, out: 'Rooms: 0\n', err: '' });
    expect(await rooms()).toEqual([]);
  }, 90000);

  it('says when nothing serves the admin address, when the edge has no rooms, and when admin.listen is off', async () => {
    const closed = await freePort();
    const refused = await runCli(['rooms', '--admin', `127.0.0.1:${closed}`]);
    expect(refused.code).toBe(1);
    expect(refused.err).toBe(`keylatch rooms: cannot reach the admin listener at 127.0.0.1:${closed} (connect ECONNREFUSED 127.0.0.1:${closed}): is keylatch edge running with admin.listen there? --admin HOST:PORT picks another\n`);

    // An admin listener without the room routes, as an edge with rooms.enabled off serves it.
    const plain = await startHttpListeners({ metrics: { listen: null }, admin: { listen: '127.0.0.1:0' } }, {
      metrics: async () => ({ contentType: 'text/plain', body: '' }),
      status: async () => ({ contentType: 'application/json', body: '{}' }),
      admin: { routes: {}, actions: {}, prefixed: [] },
    });
    try {
      const where = new URL(plain.urls['/status']!).host;
      const off = await runCli(['rooms', 'mute', 'standup', 'sip:a@b', '--admin', where]);
      expect(off).toEqual({ code: 1, out: '', err: `keylatch rooms: the edge at ${where} has no rooms: rooms.enabled is off there (KEYLATCH_ROOMS__ENABLED=true turns them on)\n` });
    } finally {
      plain.close();
    }

    const noAdmin = await runCli(['rooms'], { KEYLATCH_ADMIN__LISTEN: 'null' });
    expect(noAdmin.code).toBe(2);
    expect(noAdmin.err).toMatch(/^keylatch: invalid configuration: admin\.listen: off, so there is no room admin to reach \(set KEYLATCH_ADMIN__LISTEN=HOST:PORT/);
  }, 30000);
});
