/**
 * keylatch's relay in rtpengine's place behind a stock Kamailio NAT-traversal edge: Debian's
 * Kamailio with nathelper and its rtpengine module drives the relay over ng, and the PBX is a
 * record-routing proxy behind it (test/nat/pbx/kamailio-ng.cfg). The answer reaches the relay
 * with received-from = the PBX and the callee's private SDP address, so signalling never names
 * the callee's real source: guarded latching has to learn it as the sole plausible stream.
 * alice (our test phone) sits behind a symmetric NAT (--random-fully), carol (baresip) behind a
 * port-preserving one. Calls both ways, a tone each way, hold and resume, a conntrack flush,
 * and an attacker spraying the relay's port range.
 */
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { NgServer } from '../../src/control/ng-server';
import { createLogger, silentLogger } from '../../src/log';
import { Relay } from '../../src/media/relay';
import { Baresip, baresipUnavailable, wavRms } from '../helpers/baresip';
import { kamailioModuleUnavailable, kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { LiveEvents, RELAY_IP, Topology, jsonLines, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor } from '../helpers/peers';

const PHONE = path.join(__dirname, 'nat-phone.ts');
const SPRAYER = path.join(__dirname, 'sprayer.ts');
const NG_PORT = 22422; // bound on RELAY_IP, so it never meets the loopback tests
const PORT_MIN = 36600;
const PORT_MAX = 36639;
/** Generous: the suite must hold on a loaded 2-core machine; conditions are polled, not slept for. */
const STEP_MS = 10000;

const why = netnsUnavailable() ?? kamailioUnavailable() ?? kamailioModuleUnavailable('rtpengine') ?? kamailioModuleUnavailable('nathelper') ?? baresipUnavailable();
if (why) console.warn(`!!! SKIPPED Kamailio-over-ng tests: ${why}`);

type Heard = { packets: number; loudPackets: number; lastRms: number; sources: string[]; ssrcs: number[] };

(why ? describe.skip : describe)("Kamailio's rtpengine module driving keylatch's relay over ng, a proxy PBX behind it", () => {
  let topo: Topology;
  let relay: Relay;
  let ng: NgServer;
  let edge: ReturnType<typeof startKamailio>;
  let pbx: ReturnType<typeof startKamailio>;
  let alice: LiveEvents;
  let carol: Baresip;
  let aliceNet: ReturnType<Topology['addNattedClient']>;
  let carolNet: ReturnType<Topology['addNattedClient']>;
  let edgeHost: ReturnType<Topology['addPublicHost']>;
  let pbxHost: ReturnType<Topology['addPublicHost']>;
  let attacker: ReturnType<Topology['addPublicHost']>;

  beforeAll(async () => {
    topo = new Topology(`klk${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    aliceNet = topo.addNattedClient('al', 2, 'symmetric');
    carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
    edgeHost = topo.addPublicHost('edge', 5);
    pbxHost = topo.addPublicHost('pbx', 6);
    attacker = topo.addPublicHost('atk', 66);
    const logger = process.env.KEYLATCH_TEST_LOG ? createLogger(process.env.KEYLATCH_TEST_LOG) : silentLogger;
    // Exactly what `keylatch relay --ng` runs: the default configuration, on the public net.
    relay = new Relay({ ...loadConfig({ env: {} }).media, interface: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX }, { logger });
    ng = new NgServer(relay, logger);
    await ng.listen(NG_PORT, RELAY_IP); // before Kamailio, whose rtpengine module pings it at start
    pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { config: 'kamailio-ng.cfg', defines: ['ROLE_PBX', `EDGE_URI="sip:${edgeHost.ip}:5060"`] });
    edge = startKamailio(topo, edgeHost.ns, `${edgeHost.ip}:5060`, {
      config: 'kamailio-ng.cfg',
      defines: [`PBX_IP="${pbxHost.ip}"`, `PBX_URI="sip:${pbxHost.ip}:5060"`, `RTPENGINE_SOCK="udp:${RELAY_IP}:${NG_PORT}"`],
    });
    await waitFor(() => /listening on/i.test(edge.log()) && /listening on/i.test(pbx.log()), STEP_MS).catch(() => {
      throw new Error(`Kamailio did not start\n${edge.log().slice(-2000)}\n${pbx.log().slice(-2000)}`);
    });
    alice = new LiveEvents(topo.spawnTs(aliceNet.clientNs, PHONE, { localIp: aliceNet.privateIp, port: 5060, edge: { address: edgeHost.ip, port: 5060 }, user: 'alice', durationMs: 150000 }));
    carol = new Baresip(topo, carolNet.clientNs, { localIp: carolNet.privateIp, user: 'carol', edge: `${edgeHost.ip}:5060` });
    await waitFor(() => /REGISTERED alice/.test(edge.log()) && /REGISTERED carol/.test(edge.log()), STEP_MS).catch(() => {
      throw new Error(`registration failed\n${carol.tail()}\n${edge.log().slice(-3000)}`);
    });
  }, 60000);

  afterAll(async () => {
    ng?.close();
    await relay?.close();
    edge?.stop();
    pbx?.stop();
    topo?.destroy();
    carol?.remove();
  });

  const heard = async (): Promise<Heard> => {
    const mark = alice.mark();
    alice.command({ cmd: 'stats' });
    return (await alice.next('stats', STEP_MS, mark)).heard as Heard;
  };
  /** Until alice has heard `more` loud packets beyond `from`: polled, so load only makes it slower. */
  const hearMore = async (from: number, more: number, what: string): Promise<Heard> => {
    const until = Date.now() + STEP_MS;
    for (;;) {
      const h = await heard();
      if (h.loudPackets - from >= more) return h;
      if (Date.now() > until) throw new Error(`${what}: alice heard ${h.loudPackets - from} loud packets, wanted ${more}\n${JSON.stringify(relay.stats(relay.callIds()[0] ?? '') ?? 'no call')}\n${edge.log().slice(-1500)}`);
      await sleep(50);
    }
  };
  const legs = () => relay.stats(relay.callIds()[0]!)!;
  const legAt = (ip: string) => legs().find((l) => l.latched?.address === ip);
  const reinvite = async (cmd: 'hold' | 'resume'): Promise<void> => {
    const mark = alice.mark();
    alice.command({ cmd });
    expect((await alice.next('reinvite-answered', STEP_MS, mark)).status).toBe(200);
  };
  const hangUp = async (): Promise<void> => {
    alice.command({ cmd: 'bye' });
    // Kamailio's rtpengine_manage on the BYE deletes the call: every port goes back.
    await waitFor(() => relay.callCount === 0, STEP_MS);
    expect(relay.pool.inUse).toBe(0);
  };

  it('registers both phones at Kamailio, which fixed their NATed contacts', () => {
    expect(edge.log()).toMatch(new RegExp(`REGISTERED alice from ${aliceNet.publicIp.replace(/\./g, '\\.')}:`));
    expect(edge.log()).toMatch(new RegExp(`REGISTERED carol from ${carolNet.publicIp.replace(/\./g, '\\.')}:`));
  });

  it('alice calls carol: the callee behind the PBX hop latches, a tone both ways through hold and resume, and the sprayer gets nothing', async () => {
    const spray = jsonLines(topo.spawnTs(attacker.ns, SPRAYER, { target: RELAY_IP, portMin: PORT_MIN, portMax: PORT_MAX, durationMs: 8000 }));
    await sleep(300); // spraying before the call exists, through its learning windows
    const start = await heard();
    const mark = alice.mark();
    const dialled = Date.now();
    alice.command({ cmd: 'call', to: 'sip:carol@keylatch.test' });
    const answered = await alice.next('answered', STEP_MS, mark, () => `${JSON.stringify(alice.lines.slice(-4))}\n${carol.tail()}\n${edge.log().slice(-2000)}`);
    const setupMs = Date.now() - dialled;
    // What the relay was told about carol: the PBX sent her answer, with her LAN address in it.
    expect(edge.log()).toMatch(new RegExp(`answer from the core side: 200, received from ${pbxHost.ip.replace(/\./g, '\\.')}`));
    await hearMore(start.loudPackets, 1, "carol's first packet");
    const firstMediaMs = Date.now() - dialled - setupMs;
    let h = await hearMore(start.loudPackets, 50, "carol's tone");
    console.log(`alice->carol: set up in ${setupMs} ms; carol's tone at alice within ${firstMediaMs} ms of the answer (polled every 50 ms)`);
    expect(h.sources).toEqual([`${RELAY_IP}:${(answered.remoteRtp as { port: number }).port}`]);
    expect(legAt(aliceNet.publicIp)).toBeDefined();
    expect(legAt(carolNet.publicIp)).toBeDefined(); // neither received-from nor her SDP named this IP

    await reinvite('hold');
    expect(legs().some((l) => l.streams[0]!.onHold)).toBe(true);
    await reinvite('resume');
    expect(legs().every((l) => !l.streams[0]!.onHold)).toBe(true);
    h = await hearMore(h.loudPackets, 50, "carol's tone after resume");
    expect(legAt(carolNet.publicIp)).toBeDefined();

    await hangUp();
    await waitFor(() => carol.recordings().length === 1, STEP_MS);
    expect(wavRms(carol.recordings()[0]!, 0.5)).toBeGreaterThan(1000); // alice's tone, as baresip heard it

    const s = (await spray).find((l) => l.event === 'done')!;
    console.log(`sprayer: sent ${s.sent}, got ${s.mediaIn} media and ${s.stunIn} STUN back; relay refused ${relay.drops['spraying-source']} as spraying`);
    expect(s.mediaIn).toBe(0);
    expect(s.stunIn).toBe(0);
    expect(relay.drops['spraying-source']).toBeGreaterThan(0);
    expect((await heard()).ssrcs).not.toContain(0xbad);
  }, 90000);

  it('carol calls alice: alice behind the PBX hop latches, holds and resumes, follows a NAT flush, and audio flows both ways', async () => {
    const start = await heard();
    const mark = alice.mark();
    carol.command('/dial sip:alice@keylatch.test');
    await alice.next('invite', STEP_MS, mark, () => `${carol.tail()}\n${edge.log().slice(-2000)}`);
    let h = await hearMore(start.loudPackets, 50, "carol's tone");
    const aliceLeg = legAt(aliceNet.publicIp);
    expect(aliceLeg).toBeDefined();
    expect(legAt(carolNet.publicIp)).toBeDefined();

    await reinvite('hold'); // from the callee this time
    await reinvite('resume');
    h = await hearMore(h.loudPackets, 50, "carol's tone after resume");

    // The symmetric NAT forgets alice: her media leaves from a new port, and the relay must follow.
    topo.flushConntrack(aliceNet.natNs);
    alice.command({ cmd: 'register' });
    await hearMore(h.loudPackets, 50, "carol's tone after the NAT flush");
    const moved = legs().find((l) => l.legId === aliceLeg!.legId)!;
    expect(moved.latched?.address).toBe(aliceNet.publicIp);
    expect(moved.latched?.port).not.toBe(aliceLeg!.latched!.port);
    const toCarolBefore = legs().find((l) => l.legId !== aliceLeg!.legId)!.packetsOut;
    await waitFor(() => legs().find((l) => l.legId !== aliceLeg!.legId)!.packetsOut > toCarolBefore + 50, STEP_MS); // and alice's reach carol again

    await hangUp();
    await waitFor(() => carol.recordings().length === 2, STEP_MS);
    expect(wavRms(carol.recordings()[1]!, 0.5)).toBeGreaterThan(1000);
  }, 90000);
});
