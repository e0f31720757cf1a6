/**
 * Several edges: two `keylatch edge` processes, each in a namespace of its own with its own
 * drachtio-server, sharing bindings in one Redis and a pool of two `keylatch relay` processes
 * (namespaces of their own too). baresip phones behind NATs register through either edge at
 * Kamailio; the Contact each edge registers names it, so the PBX sends each phone's calls to
 * the edge whose drachtio-server holds its flow. A call between phones on different edges is
 * anchored once: the callee's edge adopts the caller's leg on the node the caller's edge chose.
 *
 * Kill a relay node mid-call (SIGKILL): both edges notice, the caller's edge moves the call,
 * the callee's edge re-adopts the leg on the new node; audio within 2 s both ways. Kill one edge
 * (SIGKILL) and start it again: its phone stays reachable, and it keeps alive its own flows only.
 */
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { relayAdminRequest } from '../../src/control/relay-admin';
import type { NodeStatus } from '../../src/relay-pool/pool';
import { RedisBindingStore } from '../../src/nat/redis-binding-store';
import { Baresip, baresipUnavailable, wavClosed, wavHoldsTone, wavSamples, wavToneShare } from '../helpers/baresip';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor, waitForAsync } from '../helpers/peers';
import { redisUnavailable, startRedis } from '../helpers/redis';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';
import { RtpWatch, TEST_NG_KEY_SECRET, startKeylatchRelay, tsharkUnavailable, type RunningNode } from '../helpers/relay-nodes';

const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable() ?? tsharkUnavailable() ?? redisUnavailable() ?? sippUnavailable();
if (why) console.warn(`!!! SKIPPED multi-edge tests: ${why}`);
const skip = skipUnlessDrachtio('multi-edge tests') || why !== null;

const ESTABLISHED = /Call established/;
const CLOSED = /terminated|closed/i;
const CLI = path.join(__dirname, '..', '..', 'src', 'cli.ts');
const TS_REGISTER = path.join(__dirname, '..', 'helpers', 'ts-register.js');
const EDGE_IPS = ['198.18.0.2', '198.18.0.3'];

interface Edge {
  ip: string;
  ns: string;
  drachtio: RunningDrachtio;
  child: ChildProcess;
  log: () => string;
}

(skip ? describe.skip : describe)('two edges sharing Redis and a pool of two relay nodes', () => {
  let topo: Topology;
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let store: RedisBindingStore;
  let pbx: ReturnType<typeof startKamailio>;
  let nodes: RunningNode[] = [];
  const edges: Edge[] = [];
  let env: (e: { ip: string }) => string[];
  let carol: Baresip;
  let dave: Baresip;
  let carolRtp: RtpWatch;
  let daveRtp: RtpWatch;

  /** `keylatch edge`, the CLI, in the edge's namespace; resolves once it says it is up. */
  async function runEdge(e: { ip: string; ns: string; drachtio: RunningDrachtio }): Promise<{ child: ChildProcess; log: () => string }> {
    const child = topo.spawnIn(e.ns, 'env', [...env(e), `KEYLATCH_SIP__DRACHTIO__HOST=${e.drachtio.admin.host}`, `KEYLATCH_SIP__DRACHTIO__PORT=${e.drachtio.admin.port}`,
      `KEYLATCH_SIP__DRACHTIO__SECRET=${e.drachtio.admin.secret}`, process.execPath, '-r', TS_REGISTER, CLI, 'edge']);
    let log = '';
    for (const s of [child.stdout!, child.stderr!]) s.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-30000)));
    await waitFor(() => log.includes('keylatch edge is up'), 30000).catch(() => {
      throw new Error(`edge ${e.ip} did not start:\n${log}`);
    });
    return { child, log: () => log };
  }

  const relaysOf = async (e: Edge): Promise<NodeStatus[]> => JSON.parse((await relayAdminRequest(e.ip, 9465, 'GET', '/relays')).body) as NodeStatus[];
  const metricsOf = async (e: Edge): Promise<string> => (await relayAdminRequest(e.ip, 9465, 'GET', '/metrics')).body;
  const established = async (p: Baresip, before: number, who: string): Promise<void> => {
    await waitFor(() => p.count(ESTABLISHED) > before, 10000).catch(() => {
      throw new Error(`${who}: no established call\n${p.tail()}\n${pbx.log().slice(-2000)}\n${edges.map((e) => e.log().slice(-1500)).join('\n')}`);
    });
  };
  const call = async (from: Baresip, fromName: string, to: Baresip, toName: string): Promise<void> => {
    const [a, b] = [from.count(ESTABLISHED), to.count(ESTABLISHED)];
    from.command(`/dial sip:${toName}@keylatch.test`);
    await established(from, a, fromName);
    await established(to, b, toName);
  };
  const hangUp = async (p: Baresip, other: Baresip): Promise<void> => {
    const closed = other.count(CLOSED);
    p.command('/hangup');
    await waitFor(() => other.count(CLOSED) > closed, 8000);
  };
  const lastRecording = async (p: Baresip, n: number): Promise<string> => {
    await waitFor(() => p.recordings().length >= n && wavClosed(p.recordings()[n - 1]!), 5000);
    return p.recordings()[n - 1]!;
  };

  beforeAll(async () => {
    topo = new Topology(`klm${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    redis = await startRedis({ bind: RELAY_IP });
    store = new RedisBindingStore(redis.url);
    const pbxHost = topo.addPublicHost('pbx', 5);
    pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`);
    const [r1, r2] = [topo.addPublicHost('r1', 8), topo.addPublicHost('r2', 9)];
    nodes = await Promise.all([startKeylatchRelay(topo, r1.ns, r1.ip, '40000-40199'), startKeylatchRelay(topo, r2.ns, r2.ip, '40000-40199')]);
    const relays = `[${nodes.map((n) => `{url: "${n.url}"}`).join(', ')}]`;
    env = (e) => [
      'KEYLATCH_LOG__LEVEL=info', `KEYLATCH_SIP__PBX=sip:${pbxHost.ip}:5060`, `KEYLATCH_SIP__ADVERTISED_ADDRESS=${e.ip}:5060`,
      `KEYLATCH_SIP__BINDING_STORE=${redis.url}`, `KEYLATCH_MEDIA__INTERFACE=${e.ip}`, `KEYLATCH_MEDIA__RELAYS=${relays}`, `KEYLATCH_MEDIA__RELAY_POOL__KEY_SECRET=${TEST_NG_KEY_SECRET}`,
      `KEYLATCH_ADMIN__LISTEN=${e.ip}:9465`, `KEYLATCH_METRICS__LISTEN=${e.ip}:9465`,
      // Each edge knows the other: a PBX call for a flow the other holds goes there.
      `KEYLATCH_SIP__PEER_EDGES=["${EDGE_IPS.filter((ip) => ip !== e.ip).map((ip) => `${ip}:5060`).join('", "')}"]`,
    ];
    for (const [name, octet] of [['e1', 2], ['e2', 3]] as const) {
      const host = topo.addPublicHost(name, octet);
      expect(host.ip).toBe(EDGE_IPS[octet - 2]);
      const drachtio = await startDrachtio({ contacts: [`sip:${host.ip}:5060;transport=udp,tcp`], adminPort: 9022, adminHost: host.ip, netns: host.ns });
      const e = { ip: host.ip, ns: host.ns, drachtio };
      edges.push({ ...e, ...(await runEdge(e)) });
    }
    const carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
    const daveNet = topo.addNattedClient('da', 4, 'symmetric');
    carolRtp = new RtpWatch(topo, carolNet.clientNs, carolNet.privateIp);
    daveRtp = new RtpWatch(topo, daveNet.clientNs, daveNet.privateIp);
    await Promise.all([carolRtp.ready(), daveRtp.ready()]);
    carol = new Baresip(topo, carolNet.clientNs, { localIp: carolNet.privateIp, user: 'carol', edge: `${edges[0]!.ip}:5060`, toneHz: 440 });
    dave = new Baresip(topo, daveNet.clientNs, { localIp: daveNet.privateIp, user: 'dave', edge: `${edges[1]!.ip}:5060`, toneHz: 1000 });
    for (const [user, p] of [['carol', carol], ['dave', dave]] as const) {
      await waitForAsync(async () => (await store.byAor(`sip:${user}@keylatch.test`)).length > 0, 15000).catch((err: Error) => {
        throw new Error(`${user} did not register: ${err.message}\n${p.tail()}\n${pbx.log().slice(-2000)}\n${edges.map((e) => e.log().slice(-1500)).join('\n')}`);
      });
    }
  }, 120000);

  afterAll(async () => {
    for (const e of edges) Topology.killGroup(e.child);
    for (const e of edges) await e.drachtio.stop();
    await store?.close();
    await redis?.stop();
    carolRtp?.stop();
    daveRtp?.stop();
    pbx?.stop();
    topo?.destroy();
    carol?.remove();
    dave?.remove();
  });

  it('registers each phone through its own edge, in the one shared store', async () => {
    const [c] = await store.byAor('sip:carol@keylatch.test');
    const [d] = await store.byAor('sip:dave@keylatch.test');
    expect(c!.localSocket).toBe(`${edges[0]!.ip}:5060`);
    expect(d!.localSocket).toBe(`${edges[1]!.ip}:5060`);
    expect(pbx.log()).toMatch(new RegExp(`REGISTER sip:carol@keylatch.test proto=udp contact=<sip:\\S+@${edges[0]!.ip.replace(/\./g, '\\.')}:5060>`));
    expect(pbx.log()).toMatch(new RegExp(`REGISTER sip:dave@keylatch.test proto=udp contact=<sip:\\S+@${edges[1]!.ip.replace(/\./g, '\\.')}:5060>`));
  });

  it('carol (edge 1) calls dave (edge 2): anchored once; a relay node SIGKILLed mid-call, both edges move, audio back within 2 s', async () => {
    const recordings = [carol.recordings().length, dave.recordings().length];
    const closed = [carol.count(CLOSED), dave.count(CLOSED)];
    await call(carol, 'carol', dave, 'dave');
    // Edge 1 anchored the call on node 1; edge 2 adopted its leg there (no call of its own).
    expect((await relaysOf(edges[0]!)).map((n) => n.calls)).toEqual([1, 0]);
    expect((await relaysOf(edges[1]!)).map((n) => n.calls)).toEqual([0, 0]);
    await sleep(2500);
    const answeredAt = Date.now() - 2500;
    expect(await carolRtp.sourcesIn(Date.now() - 1500)).toEqual([nodes[0]!.ip]);
    expect(await daveRtp.sourcesIn(Date.now() - 1500)).toEqual([nodes[0]!.ip]);

    const killedAt = Date.now();
    nodes[0]!.kill();
    await waitForAsync(async () => (await relaysOf(edges[0]!))[1]!.calls === 1, 5000).catch(async () => {
      throw new Error(`not moved: ${JSON.stringify(await relaysOf(edges[0]!))}\n${edges.map((e) => e.log().slice(-2000)).join('\n')}`);
    });
    await sleep(4000);
    const until = Date.now();
    await carolRtp.caughtUp(until);
    await daveRtp.caughtUp(until);
    const gaps = { carol: carolRtp.longestGap(killedAt - 1000, until).gapMs, dave: daveRtp.longestGap(killedAt - 1000, until).gapMs };
    console.log(`two edges, relay node SIGKILLed: longest RTP gap (ms): carol ${gaps.carol}, dave ${gaps.dave}`);
    expect(gaps.carol).toBeLessThan(2000);
    expect(gaps.dave).toBeLessThan(2000);
    expect(await carolRtp.sourcesIn(until - 1500)).toEqual([nodes[1]!.ip]);
    expect(await daveRtp.sourcesIn(until - 1500)).toEqual([nodes[1]!.ip]);
    expect([carol.count(CLOSED), dave.count(CLOSED)]).toEqual(closed);
    expect((await relaysOf(edges[1]!)).map((n) => n.state)).toEqual(['down', 'up']);
    const metrics = await metricsOf(edges[0]!);
    expect(metrics).toContain(`keylatch_relay_node_up{relay="${nodes[0]!.url}",kind="keylatch"} 0`);
    expect(metrics).toContain(`keylatch_relay_node_calls{relay="${nodes[1]!.url}"} 1`);
    expect(metrics).toContain('keylatch_relay_calls_moved_total{result="moved"} 1');

    await hangUp(carol, dave);
    const skipSec = (killedAt - answeredAt) / 1000;
    for (const [p, hz, i] of [[carol, 1000, 0], [dave, 440, 1]] as const) {
      const file = await lastRecording(p, recordings[i]! + 1);
      expect(wavSamples(file, skipSec).length).toBeGreaterThan(8000 * 2);
      expect(wavHoldsTone(file, hz, 0.5)).toMatchObject({ ok: true });
      expect(wavHoldsTone(file, hz, skipSec)).toMatchObject({ ok: true });
    }
    await waitForAsync(async () => (await relaysOf(edges[0]!))[1]!.calls === 0, 5000);
  }, 60000);

  it('dave (edge 2) calls carol (edge 1): audio both ways', async () => {
    const recordings = [carol.recordings().length, dave.recordings().length];
    await call(dave, 'dave', carol, 'carol');
    expect((await relaysOf(edges[1]!)).map((n) => n.calls)).toEqual([0, 1]);
    await sleep(2500);
    await hangUp(dave, carol);
    expect(wavToneShare(await lastRecording(carol, recordings[0]! + 1), 1000, 0.5)).toBeGreaterThan(0.5);
    expect(wavToneShare(await lastRecording(dave, recordings[1]! + 1), 440, 0.5)).toBeGreaterThan(0.5);
  }, 40000);

  it('a PBX call for carol sent to the edge that does not hold her flow reaches her through the one that does', async () => {
    const [c] = await store.byAor('sip:carol@keylatch.test');
    const established = carol.count(ESTABLISHED);
    // The "PBX" here is sipp on the PBX's host, sending to edge 2 what belongs to edge 1.
    const pbxNs = topo.ns('pbx');
    const sipp = runSipp(['-sf', path.join(SCENARIOS, 'pbx-call-via-peer.xml'), '-i', '198.18.0.5', '-p', '5090', '-m', '1', '-s', c!.id,
      '-d', '2000', `${edges[1]!.ip}:5060`], { netns: pbxNs, timeoutMs: 20000 });
    await waitFor(() => carol.count(ESTABLISHED) > established, 10000).catch(async () => {
      const { out } = await sipp;
      throw new Error(`carol did not get the call\nsipp: ${out.slice(-2500)}\n${carol.tail()}\n${edges.map((e) => e.log().slice(-2500)).join('\n')}`);
    });
    const { code, out } = await sipp;
    expect({ code, out: code === 0 ? '' : out.slice(-3000) }).toEqual({ code: 0, out: '' });
    // Edge 1 anchored it (on a node of the pool); edge 2 only passed it on.
    await waitForAsync(async () => (await relaysOf(edges[0]!)).every((n) => n.calls === 0), 5000);
  }, 40000);

  it('an edge SIGKILLed and started again: its phone stays reachable, and it keeps alive only its own flows', async () => {
    const e1 = edges[0]!;
    Topology.killGroup(e1.child);
    await sleep(500);
    Object.assign(e1, await runEdge(e1));
    // Its flows, read back from Redis: carol's; dave's flow is edge 2's.
    await waitForAsync(async () => /keylatch_keepalive_flows\{learned="false"\} 1\b/.test(await metricsOf(e1)), 20000).catch(async () => {
      throw new Error(`edge 1 keepalive flows:\n${(await metricsOf(e1)).split('\n').filter((l) => l.includes('keepalive_flows')).join('\n')}`);
    });
    expect(await metricsOf(edges[1]!)).toMatch(/keylatch_keepalive_flows\{learned="false"\} 1\b/);
    const recordings = carol.recordings().length;
    await call(dave, 'dave', carol, 'carol');
    await sleep(2000);
    await hangUp(dave, carol);
    expect(wavToneShare(await lastRecording(carol, recordings + 1), 1000, 0.5)).toBeGreaterThan(0.5);
  }, 60000);
});
