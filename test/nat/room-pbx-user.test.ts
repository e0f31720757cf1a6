/**
 * Rooms as docs/rooms.md sets them up, from the user's side: `keylatch edge` (the CLI) with
 * nothing but KEYLATCH_ROOMS__ENABLED=true beside the required settings, a stock Kamailio as
 * the PBX with the room route the doc gives ("PBX users in a room"), and two stock baresip
 * phones: carol, registered through keylatch from behind a NAT, and erin, a PBX user registered
 * at Kamailio itself. Both dial sip:room-standup@<keylatch>; each must hear the other's tone,
 * and `keylatch rooms` must list both as the doc's table shows.
 */
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Baresip, baresipUnavailable, wavClosed, wavHoldsTone } from '../helpers/baresip';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { Topology, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor } from '../helpers/peers';

const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable();
if (why) console.warn(`!!! SKIPPED room with a PBX user tests: ${why}`);
const skip = skipUnlessDrachtio('room with a PBX user tests') || why !== null;

const CLI = path.join(__dirname, '..', '..', 'src', 'cli.ts');
const TS_REGISTER = path.join(__dirname, '..', 'helpers', 'ts-register.js');
const ESTABLISHED = /Call established/;

(skip ? describe.skip : describe)('a room dialled by a phone registered through keylatch and by a PBX user', () => {
  let topo: Topology;
  let drachtio: RunningDrachtio;
  let pbx: ReturnType<typeof startKamailio>;
  let edge: ChildProcess;
  let edgeLog = '';
  let edgeNs: string;
  let carol: Baresip;
  let erin: Baresip;
  const EDGE_IP = '198.18.0.2';

  /** `keylatch <args>` in the edge's namespace, where admin.listen's default 127.0.0.1:9465 is. */
  const cli = (args: string[]): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve) => {
      const child = topo.spawnIn(edgeNs, process.execPath, ['-r', TS_REGISTER, CLI, ...args]);
      let out = '';
      for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => (out += d.toString()));
      child.on('exit', (code) => resolve({ code, out }));
    });

  beforeAll(async () => {
    topo = new Topology(`klrp${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    const pbxHost = topo.addPublicHost('pbx', 5);
    // The doc's Kamailio lines, with keylatch's sip.advertisedAddress.
    pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { defines: [`KEYLATCH_ROOMS="sip:${EDGE_IP}:5060"`] });
    const edgeHost = topo.addPublicHost('edge', 2);
    expect(edgeHost.ip).toBe(EDGE_IP);
    edgeNs = edgeHost.ns;
    drachtio = await startDrachtio({ contacts: [`sip:${EDGE_IP}:5060;transport=udp,tcp`], adminPort: 9022, adminHost: EDGE_IP, netns: edgeNs });
    edge = topo.spawnIn(edgeNs, 'env', [`KEYLATCH_SIP__DRACHTIO__SECRET=${drachtio.admin.secret}`, `KEYLATCH_SIP__DRACHTIO__HOST=${EDGE_IP}`,
      `KEYLATCH_SIP__PBX=sip:${pbxHost.ip}:5060`, `KEYLATCH_SIP__ADVERTISED_ADDRESS=${EDGE_IP}:5060`, `KEYLATCH_MEDIA__INTERFACE=${EDGE_IP}`,
      'KEYLATCH_ROOMS__ENABLED=true', process.execPath, '-r', TS_REGISTER, CLI, 'edge']);
    for (const s of [edge.stdout!, edge.stderr!]) s.on('data', (d: Buffer) => (edgeLog = (edgeLog + d.toString()).slice(-30000)));
    await waitFor(() => edgeLog.includes('keylatch edge is up'), 30000).catch(() => {
      throw new Error(`the edge did not start:\n${edgeLog}`);
    });
    const carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
    carol = new Baresip(topo, carolNet.clientNs, { localIp: carolNet.privateIp, user: 'carol', edge: `${EDGE_IP}:5060`, toneHz: 440 });
    const erinHost = topo.addPublicHost('er', 30);
    erin = new Baresip(topo, erinHost.ns, { localIp: erinHost.ip, user: 'erin', edge: `${pbxHost.ip}:5060`, toneHz: 1000 });
    await waitFor(() => carol.count(/200 OK/) > 0 && erin.count(/200 OK/) > 0, 15000).catch(() => {
      throw new Error(`a phone did not register:\n${carol.tail()}\n${erin.tail()}\n${pbx.log().slice(-2000)}`);
    });
  }, 90000);

  afterAll(async () => {
    if (edge) Topology.killGroup(edge);
    await drachtio?.stop();
    pbx?.stop();
    topo?.destroy();
    carol?.remove();
    erin?.remove();
  });

  /** carol and erin hang up; each one's recording of the room holds the other's tone. */
  async function bothHangUpHavingHeardEachOther(): Promise<void> {
    const recordings = [carol.recordings().length, erin.recordings().length];
    carol.command('/hangup');
    erin.command('/hangup');
    for (const [p, hz, n] of [[carol, 1000, recordings[0]!], [erin, 440, recordings[1]!]] as const) {
      await waitFor(() => p.recordings().length >= n && wavClosed(p.recordings()[n - 1]!), 8000);
      expect(wavHoldsTone(p.recordings()[n - 1]!, hz, 0.5)).toMatchObject({ ok: true });
    }
  }

  it('joins both into one room, lists them in keylatch rooms, and each hears the other', async () => {
    const room = `sip:room-standup@${EDGE_IP}`;
    carol.command(`/dial ${room}`);
    await waitFor(() => carol.count(ESTABLISHED) > 0, 10000).catch(() => {
      throw new Error(`carol did not join:\n${carol.tail()}\n${edgeLog.slice(-3000)}`);
    });
    erin.command(`/dial ${room}`);
    await waitFor(() => erin.count(ESTABLISHED) > 0, 10000).catch(() => {
      throw new Error(`erin (a PBX user) did not join:\n${erin.tail()}\n${pbx.log().slice(-3000)}`);
    });
    await sleep(3000);

    const listed = await cli(['rooms']);
    expect(listed.code).toBe(0);
    const lines = listed.out.trimEnd().split('\n');
    expect(lines[0]).toBe('Rooms: 1');
    expect(lines[1]!.trim().split(/\s{2,}/)).toEqual(['ROOM', 'PARTICIPANT', 'WHO', 'ROLE/GETS', 'LATCH', 'LATCHED ON', 'STATE', 'PKTS IN', 'PKTS OUT']);
    // carol is latched on her NAT's public side, erin on her own address (the PBX relays no media).
    expect(lines[2]).toMatch(/^ {2}standup\s+\S+\s+sip:carol@keylatch\.test\s+speaker\/mix\s+guarded:locked\s+198\.18\.0\.13:\d+\s+talking\s+\d+\s+\d+$/);
    expect(lines[3]).toMatch(/^ {11}\S+\s+sip:erin@keylatch\.test\s+speaker\/mix\s+guarded:locked\s+198\.18\.0\.30:\d+\s+talking\s+\d+\s+\d+$/);
    console.log(`keylatch rooms, carol (through keylatch) and erin (a PBX user) in room standup:\n${listed.out}`);

    await bothHangUpHavingHeardEachOther();
    // erin's room call came through the PBX (keylatch took it as the PBX's) and keylatch answered it.
    expect(edgeLog).toMatch(/"who":"sip:erin@keylatch.test".*"msg":"room: joined"/);
  }, 60000);

  it('takes carol\'s call to the room in her own domain (the PBX\'s) itself: she hears erin, and the PBX never sees it', async () => {
    // The PBX would send it back here with carol's own relay leg as the offer: a silent room.
    const room = 'sip:room-standup@keylatch.test';
    const [carolIn, erinIn] = [carol.count(ESTABLISHED), erin.count(ESTABLISHED)];
    const pbxBefore = pbx.log().length;
    erin.command(`/dial ${room}`);
    await waitFor(() => erin.count(ESTABLISHED) > erinIn, 10000);
    carol.command(`/dial ${room}`);
    await waitFor(() => carol.count(ESTABLISHED) > carolIn, 10000).catch(() => {
      throw new Error(`carol did not join:\n${carol.tail()}\n${edgeLog.slice(-3000)}`);
    });
    await sleep(3000);
    const listed = await cli(['rooms']);
    expect(listed.out).toMatch(/sip:carol@keylatch\.test\s+speaker\/mix\s+guarded:locked\s+198\.18\.0\.13:\d+\s+talking/);
    await bothHangUpHavingHeardEachOther();
    // The PBX's room route logs each call it sends to keylatch: erin's, not carol's.
    const routed = pbx.log().slice(pbxBefore).split('\n').filter((l) => l.includes('room call'));
    expect(routed.map((l) => /from (\S+)/.exec(l)?.[1])).toEqual(['sip:erin@keylatch.test']);
  }, 60000);

  it('refuses, with a reason, carol\'s call to an extension the PBX maps to the room, instead of a silent call', async () => {
    const failed = carol.count(/488 Not Acceptable Here/);
    carol.command('/dial sip:8000@keylatch.test');
    await waitFor(() => carol.count(/488 Not Acceptable Here/) > failed, 10000).catch(() => {
      throw new Error(`carol's call was not refused:\n${carol.tail()}\n${edgeLog.slice(-3000)}`);
    });
    expect(edgeLog).toMatch(/routed back by the PBX: have the phone dial sip:room-standup@/);
    expect((await cli(['rooms'])).out).toMatch(/^Rooms: 0/);
    // A PBX user dialling the same extension gets into the room.
    const erinIn = erin.count(ESTABLISHED);
    erin.command('/dial sip:8000@keylatch.test');
    await waitFor(() => erin.count(ESTABLISHED) > erinIn, 10000);
    await sleep(1500);
    expect((await cli(['rooms'])).out).toMatch(/standup\s+\S+\s+sip:erin@keylatch\.test\s+speaker\/mix\s+guarded:locked/);
    erin.command('/hangup');
  }, 30000);
});
