/**
 * keylatch relay on two worker processes, as `keylatch relay --workers 2` runs it: the real
 * ng socket, real worker processes with their own native fast paths, real media.
 */
import http from 'node:http';
import { Client } from 'rtpengine-client';
import { loadConfig } from '../../src/config/load';
import { silentLogger } from '../../src/log';
import { homeWorker } from '../../src/media/cluster/placement';
import type { WorkerExit } from '../../src/media/cluster/relay-cluster';
import { startRelayService, type RelayService } from '../../src/relay-service';
import { holdsPort } from '../helpers/proc-sockets';
import { Peer, mediaPorts, rtp, sdp, sleep, testMediaConfig, waitFor, waitForAsync } from '../helpers/peers';

jest.setTimeout(60000);

let service: RelayService;
let client: InstanceType<typeof Client>;
let ng: { host: string; port: number };
const peers: Peer[] = [];

function metricsText(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

interface TestCall {
  id: string;
  a: Peer;
  b: Peer;
  toA: number; // the relay port A sends to
  toB: number;
}

async function call(id: string): Promise<TestCall> {
  const [a, b] = await Promise.all([Peer.open(), Peer.open('127.0.0.2')]);
  peers.push(a, b);
  const offer = await client.offer(ng, { 'call-id': id, 'from-tag': 'ta', sdp: sdp(a.address, a.port), 'received-from': ['IP4', '127.0.0.1'] });
  expect(offer.result).toBe('ok');
  const answer = await client.answer(ng, { 'call-id': id, 'from-tag': 'ta', 'to-tag': 'tb', sdp: sdp(b.address, b.port), 'received-from': ['IP4', '127.0.0.2'] });
  expect(answer.result).toBe('ok');
  return { id, a, b, toA: mediaPorts(answer.sdp)[0]!, toB: mediaPorts(offer.sdp)[0]! };
}

/**
 * Sends n packets each way and waits until each side has them (less the 2 that teach a new
 * call's guarded latch). If they have not all come within a second, it goes on sending, paced
 * like a phone, for up to 3 s in all: a worker is a process of its own, and a freshly restarted
 * one is cold, which must not read as a lost call.
 */
async function talk(c: TestCall, n: number, seq0 = 0): Promise<void> {
  // Counted by SSRC: only the other side's packets, whatever else reaches the peer's port.
  const heard = (p: Peer, ssrc: number) => p.media().filter((b) => b.length >= 12 && b.readUInt32BE(8) === ssrc).length;
  const [gotA, gotB] = [heard(c.a, 0xb), heard(c.b, 0xa)];
  const want = n - (seq0 === 0 ? 2 : 0); // the first 2 packets of each side teach the latch
  const progress = () => ({ toB: heard(c.b, 0xa) - gotB >= want, toA: heard(c.a, 0xb) - gotA >= want });
  const arrived = () => progress().toA && progress().toB;
  const send = (i: number): void => {
    c.a.send(rtp(i, i * 160, 0xa), { address: '127.0.0.1', port: c.toA });
    c.b.send(rtp(i, i * 160, 0xb), { address: '127.0.0.1', port: c.toB });
  };
  let i = seq0;
  for (; i < seq0 + n; i++) {
    send(i);
    await sleep(2);
  }
  const started = Date.now();
  await waitFor(arrived, 1000).catch(() => undefined);
  for (; !arrived() && Date.now() - started < 3000; i++) {
    send(i);
    await sleep(20);
  }
  if (!arrived()) {
    // What the relay saw, so that a failure says which leg and why, not only that audio is missing.
    const q = await client.query(ng, { 'call-id': c.id }).catch((e: Error) => e.message);
    const strays = [c.a, c.b].map((p) => p.received.filter((r) => r.buf.length < 12 || ![0xa, 0xb].includes(r.buf.readUInt32BE(8))).length);
    console.log(`talk ${c.id}: A ${c.a.address}:${c.a.port} heard ${heard(c.a, 0xb) - gotA}, B ${c.b.address}:${c.b.port} heard ${heard(c.b, 0xa) - gotB}, ` +
      `want ${want}, sent ${i - seq0}, stray packets A ${strays[0]} B ${strays[1]}; ports toA ${c.toA} toB ${c.toB}; query ${JSON.stringify(q)}`);
  }
  expect(progress()).toEqual({ toB: true, toA: true });
}

beforeEach(async () => {
  const base = loadConfig({ env: {} });
  service = await startRelayService(
    { ...base, media: testMediaConfig({ workers: 2 }), control: { ng: '127.0.0.1:0', ngKeySecret: null }, metrics: { listen: '127.0.0.1:0' } },
    silentLogger,
  );
  ng = { host: '127.0.0.1', port: service.ng!.port };
  client = new Client({ localPort: 0, localAddress: '127.0.0.1', timeout: 3000 });
});
afterEach(async () => {
  peers.splice(0).forEach((p) => p.close());
  client.close();
  await service.close();
});

describe('relay workers', () => {
  it('gives each worker its own share and sockets; every command of a call reaches the worker its media flows through', async () => {
    const cluster = service.cluster!;
    expect(service.relay).toBeNull();
    const [s0, s1] = cluster.shares;
    expect(s0!.portMax).toBeLessThan(s1!.portMin);
    const calls: TestCall[] = [];
    // Media right after each call's answer, as phones do: guarded latching learns only for a
    // while after signalling, and the /proc checks below take their time on a busy machine.
    for (let i = 0; i < 8; i++) {
      const c = await call(`w-${i}@test`);
      calls.push(c);
      await talk(c, 6);
    }
    const byWorker = [0, 1].map((w) => calls.filter((c) => cluster.placement.of(c.id) === w));
    expect(byWorker[0]!.length).toBeGreaterThan(0);
    expect(byWorker[1]!.length).toBeGreaterThan(0);
    const pids = cluster.info().map((w) => w.pid!);
    expect(new Set([...pids, process.pid]).size).toBe(3);
    for (const c of calls) {
      const w = cluster.placement.of(c.id)!;
      expect(w).toBe(homeWorker(c.id, 2));
      const share = cluster.shares[w]!;
      for (const port of [c.toA, c.toA + 1, c.toB, c.toB + 1]) {
        expect(port).toBeGreaterThanOrEqual(share.portMin);
        expect(port).toBeLessThanOrEqual(share.portMax);
        // The worker's process, not the dispatcher or the other worker, holds the socket.
        expect(holdsPort(pids[w]!, port)).toBe(true);
        expect(holdsPort(pids[1 - w]!, port)).toBe(false);
        expect(holdsPort(process.pid, port)).toBe(false);
      }
    }
    for (const c of calls) {
      const q = await client.query(ng, { 'call-id': c.id });
      expect(q.result).toBe('ok');
      expect(q.tags.ta.packets).toBeGreaterThanOrEqual(6);
      expect(q.tags.tb.packets).toBeGreaterThanOrEqual(6);
      expect(q.tags.ta.latched).toEqual({ address: '127.0.0.1', port: c.a.port });
    }
    const list = await client.list(ng, { limit: 100 });
    expect(list.result).toBe('ok');
    expect([...(list.calls as string[])].sort()).toEqual(calls.map((c) => c.id).sort());
    expect((await client.list(ng, { limit: 3 })).calls).toHaveLength(3);
    const metrics = await metricsText(service.metrics!.port);
    expect(metrics).toMatch(/^keylatch_relay_calls 8$/m);
    expect(metrics).toMatch(/^keylatch_relay_workers\{state="alive"\} 2$/m);
    // Every packet each side sent reached the relay: 8 calls x 2 sides x 6.
    expect(metrics).toMatch(/^keylatch_relay_packets_received_total 96$/m);
    expect(metrics).toMatch(new RegExp(`^keylatch_leg_packets_received\\{call_id="${calls[0]!.id}",tag="ta",policy="guarded"\\} 6$`, 'm'));
    const del = await client.delete(ng, { 'call-id': calls[0]!.id, 'from-tag': 'ta' });
    expect(del.result).toBe('ok');
    expect(cluster.placement.of(calls[0]!.id)).toBeUndefined();
    expect((await client.query(ng, { 'call-id': calls[0]!.id }))['error-reason']).toBe('Unknown call-id');
  });

  it('reports a worker that dies, keeps the other worker\'s calls flowing, and starts the dead one again', async () => {
    const cluster = service.cluster!;
    const calls: TestCall[] = [];
    for (let i = 0; calls.filter((c) => cluster.placement.of(c.id) === 0).length < 2 || calls.filter((c) => cluster.placement.of(c.id) === 1).length < 2; i++) {
      calls.push(await call(`crash-${i}@test`));
    }
    for (const c of calls) await talk(c, 5);
    const victims = calls.filter((c) => cluster.placement.of(c.id) === 0);
    const survivors = calls.filter((c) => cluster.placement.of(c.id) === 1);
    const exits: WorkerExit[] = [];
    cluster.on('worker-exit', (e) => exits.push(e));
    const pid0 = cluster.info()[0]!.pid!;
    process.kill(pid0, 'SIGKILL');
    await waitFor(() => exits.length === 1, 5000);
    expect(exits[0]).toMatchObject({ index: 0, pid: pid0, signal: 'SIGKILL', callsLost: victims.length });
    // While worker 0 is down: worker 1's calls go on, ng still answers, lost calls are unknown, and a new call is placed on worker 1.
    for (const c of survivors) await talk(c, 5, 100);
    expect(await client.ping(ng)).toMatchObject({ result: 'pong' });
    expect((await client.query(ng, { 'call-id': victims[0]!.id })).result).toBe('error');
    const list = await client.list(ng, { limit: 100 });
    expect([...(list.calls as string[])].sort()).toEqual(survivors.map((c) => c.id).sort());
    await waitForAsync(async () => /^keylatch_relay_worker_exits_total\{worker="0"\} 1$/m.test(await metricsText(service.metrics!.port)), 3000);
    // Restarted on the same share: calls whose home is worker 0 go there again.
    await waitFor(() => cluster.isAlive(0), 15000);
    expect(cluster.info()[0]!.pid).not.toBe(pid0);
    expect(cluster.info()[0]!.restarts).toBe(1);
    let id = '';
    for (let i = 0; homeWorker((id = `after-${i}@test`), 2) !== 0; i++);
    const again = await call(id);
    expect(cluster.placement.of(id)).toBe(0);
    expect(again.toA).toBeGreaterThanOrEqual(cluster.shares[0]!.portMin);
    expect(again.toA).toBeLessThanOrEqual(cluster.shares[0]!.portMax);
    await talk(again, 5);
    for (const c of survivors) await talk(c, 5, 200);
  });
});
