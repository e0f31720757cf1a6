/**
 * The relay pool against real keylatch relays behind real ng servers on loopback: calls spread
 * by weight, every command of a call on its node, key legs only where they can be held, a
 * node that stops answering is found down with the calls it had, and a drained node gets none.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import bencode from 'bencode';
import pino from 'pino';
import { NgServer } from '../../src/control/ng-server';
import type { Relay } from '../../src/media/relay';
import { NgClient, NgTimeout } from '../../src/relay-pool/ng-client';
import { NgNode, parseNgUrl, type RelayNode } from '../../src/relay-pool/nodes';
import { NoRelayAvailable, RelayPool } from '../../src/relay-pool/pool';
import { keyFromSdp, mediaPorts, newRelay, sdp, waitFor } from '../helpers/peers';

interface Running {
  relay: Relay;
  server: NgServer;
  url: string;
}

const running: Running[] = [];
const pools: RelayPool[] = [];

async function relayNode(portMin: number): Promise<Running> {
  const relay = newRelay({ portMin, portMax: portMin + 99 });
  const server = new NgServer(relay);
  const { port } = await server.listen(0, '127.0.0.1');
  const r = { relay, server, url: `ng://127.0.0.1:${port}` };
  running.push(r);
  return r;
}

const node = (url: string, kind: 'keylatch' | 'rtpengine' = 'keylatch'): RelayNode => new NgNode(url, kind, { pingMs: 150, commandMs: 1000 });

function pool(nodes: Array<{ node: RelayNode; weight: number }>): RelayPool {
  const p = new RelayPool(nodes, { pingIntervalMs: 100, missedPingsDown: 2 });
  pools.push(p);
  return p;
}

afterEach(async () => {
  pools.splice(0).forEach((p) => p.close());
  for (const r of running.splice(0)) {
    try {
      r.server.close();
    } catch {
      /* closed by the test */
    }
    await r.relay.close();
  }
});

const guarded = { policy: 'guarded' as const, secure: false, signallingAddress: '127.0.0.1' };

describe('relay pool', () => {
  it('spreads calls by weight and keeps every command of a call on its node', async () => {
    const [a, b] = [await relayNode(41000), await relayNode(41200)];
    const p = pool([{ node: node(a.url), weight: 1 }, { node: node(b.url), weight: 2 }]);
    const placed: RelayNode[] = [];
    for (let i = 0; i < 6; i++) {
      const n = p.place(`c${i}`, false);
      placed.push(n);
      const offer = await n.offer({ callId: `c${i}`, fromTag: 'ta', sdp: sdp('127.0.0.1', 20000 + i * 2), offerer: guarded, answerer: guarded });
      await n.answer({ callId: `c${i}`, fromTag: 'ta', toTag: 'tb', sdp: sdp('127.0.0.1', 21000 + i * 2) });
      expect(mediaPorts(offer.sdp)[0]).toBeGreaterThanOrEqual(n.id === a.url ? 41000 : 41200);
    }
    expect(placed.filter((n) => n.id === a.url)).toHaveLength(2);
    expect(placed.filter((n) => n.id === b.url)).toHaveLength(4);
    expect([a.relay.callCount, b.relay.callCount]).toEqual([2, 4]);
    expect(p.status().map((s) => [s.state, s.calls])).toEqual([['up', 2], ['up', 4]]);
    const i = placed.findIndex((n) => n.id === a.url);
    await placed[i]!.delete(`c${i}`);
    p.release(placed[i]!, `c${i}`);
    expect(a.relay.callCount).toBe(1);
    expect(p.status()[0]!.calls).toBe(1);
  });

  it('puts key legs only on keylatch nodes, whose SDP then carries the key; rtpengine nodes get guarded calls', async () => {
    const [k, other] = [await relayNode(41400), await relayNode(41600)];
    const rtpengineLike = node(other.url, 'rtpengine');
    const p = pool([{ node: rtpengineLike, weight: 100 }, { node: node(k.url), weight: 1 }]);
    const n = p.place('key1', true);
    expect(n.id).toBe(k.url);
    const offer = await n.offer({ callId: 'key1', fromTag: 'ta', sdp: sdp('127.0.0.1', 22000), offerer: guarded, answerer: { policy: 'key', secure: true } });
    expect(keyFromSdp(offer.sdp)).not.toBeNull();
    expect(p.place('plain', false)).toBe(rtpengineLike);
    await expect(rtpengineLike.offer({ callId: 'x', fromTag: 't', sdp: sdp('127.0.0.1', 22002), offerer: { policy: 'key', secure: true } })).rejects.toThrow(/cannot hold key legs/);
    const onlyRtpengine = pool([{ node: node(other.url, 'rtpengine'), weight: 1 }]);
    expect(() => onlyRtpengine.place('key2', true)).toThrow(NoRelayAvailable);
  });

  it('finds a node that stops answering down, with the calls it had, and sends new calls elsewhere', async () => {
    const [a, b] = [await relayNode(41800), await relayNode(42000)];
    const [na, nb] = [node(a.url), node(b.url)];
    const p = pool([{ node: na, weight: 1 }, { node: nb, weight: 1 }]);
    p.start();
    const on = ['d0', 'd1', 'd2', 'd3'].map((id) => [id, p.place(id, false)] as const);
    const onA = on.filter(([, n]) => n === na).map(([id]) => id);
    expect(onA).toHaveLength(2);
    const down = once(p, 'down') as Promise<[RelayNode, string[]]>;
    const killedAt = Date.now();
    a.server.close();
    const [which, calls] = await down;
    const tookMs = Date.now() - killedAt;
    expect(which).toBe(na);
    expect(calls.sort()).toEqual(onA.sort());
    // pingInterval + 2 x pingTimeout = 400 ms at most, with room for a loaded machine.
    expect(tookMs).toBeLessThan(1500);
    expect(p.status()[0]).toMatchObject({ state: 'down', calls: 0 });
    for (let i = 0; i < 3; i++) expect(p.place(`n${i}`, false)).toBe(nb);
  });

  it('says a node that is not listening yet at the start has not answered (not that its calls move), and gives it calls once it answers', async () => {
    // As in a compose stack or a DaemonSet started together: the edge pings before the relay listens.
    const probe = dgram.createSocket('udp4');
    probe.bind(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = probe.address().port;
    probe.close();
    const logged: Array<{ level: number; msg: string; relay?: string }> = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line) as { level: number; msg: string }) });
    const late = node(`ng://127.0.0.1:${port}`);
    const p = new RelayPool([{ node: late, weight: 1 }], { pingIntervalMs: 100, missedPingsDown: 2 }, log);
    pools.push(p);
    p.start();
    await waitFor(() => p.status()[0]!.state === 'down', 3000);
    expect(() => p.place('early', false)).toThrow(NoRelayAvailable);
    const relay = newRelay({ portMin: 42400, portMax: 42499 });
    const server = new NgServer(relay);
    running.push({ relay, server, url: late.id });
    await server.listen(port, '127.0.0.1');
    await waitFor(() => p.status()[0]!.state === 'up', 3000);
    expect(p.place('c1', false)).toBe(late);
    const said = logged.map((l) => `${l.level} ${l.msg}`);
    expect(said).toContain('40 relay node has not answered since the edge started: no calls go to it until it does (is it running, and is its media.relays URL right?)');
    expect(said).toContain('30 relay node answers: it takes calls');
    expect(said.filter((l) => /moving its calls|answers again/.test(l))).toEqual([]);
    expect(logged.every((l) => l.level < 50)).toBe(true);
  });

  it('gives a drained node no new calls and takes it back on undrain; unknown ids are refused', async () => {
    const [a, b] = [await relayNode(42200), await relayNode(42400)];
    const p = pool([{ node: node(a.url), weight: 1 }, { node: node(b.url), weight: 1 }]);
    expect(p.place('x0', false).id).toBe(a.url);
    expect(p.drain(a.url)).toBe(true);
    expect(p.status()[0]).toMatchObject({ state: 'draining', calls: 1 });
    for (let i = 1; i < 4; i++) expect(p.place(`x${i}`, false).id).toBe(b.url);
    expect(p.drain(a.url, false)).toBe(true);
    expect(p.place('x4', false).id).toBe(a.url);
    expect(p.drain('ng://192.0.2.1:1')).toBe(false);
    p.drain(a.url);
    p.drain(b.url);
    expect(() => p.place('x5', false)).toThrow(NoRelayAvailable);
  });
});

describe('ng client', () => {
  it('takes replies only from its node, and times out when the node is silent', async () => {
    const fake = dgram.createSocket('udp4');
    fake.bind(0, '127.0.0.1');
    await once(fake, 'listening');
    const spoofer = dgram.createSocket('udp4');
    spoofer.bind(0, '127.0.0.1');
    await once(spoofer, 'listening');
    const client = new NgClient({ host: '127.0.0.1', port: fake.address().port, timeoutMs: 300 });
    // The "node" never answers; a stranger answers every request with the right cookie.
    fake.on('message', (msg, rinfo) => {
      const cookie = msg.subarray(0, msg.indexOf(0x20)).toString();
      spoofer.send(Buffer.concat([Buffer.from(`${cookie} `), Buffer.from(bencode.encode({ result: 'pong' }))]), rinfo.port, rinfo.address);
    });
    await expect(client.send('ping')).rejects.toThrow(NgTimeout);
    client.close();
    fake.close();
    spoofer.close();
  });

  it('parses ng URLs and refuses others', () => {
    expect(parseNgUrl('ng://198.18.0.2:2223')).toEqual({ host: '198.18.0.2', port: 2223 });
    expect(parseNgUrl('ng://[2001:db8::1]:2223')).toEqual({ host: '2001:db8::1', port: 2223 });
    expect(() => parseNgUrl('udp://1.2.3.4:5')).toThrow(/ng URL/);
    expect(() => parseNgUrl('ng://1.2.3.4:70000')).toThrow(/ng URL/);
  });
});

describe('ng client, closed', () => {
  it('ends requests in flight when closed, without sending on the closed socket', async () => {
    const silent = dgram.createSocket('udp4');
    silent.bind(0, '127.0.0.1');
    await once(silent, 'listening');
    const client = new NgClient({ host: '127.0.0.1', port: silent.address().port, timeoutMs: 2000 });
    const pending = client.send('ping');
    await new Promise((r) => setTimeout(r, 50));
    client.close();
    await expect(pending).rejects.toThrow(/closed/);
    await expect(client.send('ping')).rejects.toThrow(NgTimeout);
    await new Promise((r) => setTimeout(r, 800)); // past the retransmit interval: nothing may throw
    silent.close();
  });
});
