/**
 * The admin /status endpoint and `keylatch status`, end to end without drachtio-server: a real
 * relay carrying a real call over loopback UDP (one key leg that proves its key, one guarded leg
 * that locks), a memory binding store, the edge's HTTP listeners, and the CLI in a child process.
 * (The same command against a real edge: test/control/cli.test.ts.)
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { metricsRoute } from '../../src/control/http-server';
import { statusRoute, type StatusSnapshot } from '../../src/control/status';
import { startHttpListeners, type HttpListeners } from '../../src/control/status-server';
import { relayMetrics } from '../../src/media/metrics';
import type { Relay } from '../../src/media/relay';
import { newBindingId, type Binding } from '../../src/nat/binding';
import { MemoryBindingStore } from '../../src/nat/binding-store';
import { keyFromSdp, mediaPorts, newRelay, prove, rtp, sdp, testPeers, waitFor } from '../helpers/peers';

const root = path.join(__dirname, '..', '..');
const peer = testPeers();

function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['-r', path.join(root, 'test/helpers/ts-register.js'), path.join(root, 'src/cli.ts'), 'status', ...args], {
      env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function request(url: string, method = 'GET'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.request(url, { method }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject).end();
  });
}

function binding(over: Partial<Binding> & Record<string, unknown>): Binding {
  const now = Date.now();
  return {
    id: newBindingId(), aor: 'sip:alice@example.com', contact: '<sip:alice@192.168.1.20:5060>', instance: null,
    source: { address: '203.0.113.7', port: 40112 }, transport: 'udp', localSocket: 'udp/198.18.0.1:5060',
    lastSeen: now - 4000, expires: now + 60000, natted: true, natTests: ['private-contact', 'contact-port-differs'], secure: false,
    upstreamExpires: now + 3600000, keylatch: false, ...over,
  };
}

/** The configured keepalive, shown for NATed UDP bindings that have learned none of their own. */
const defaultKeepaliveSec = loadConfig({ env: {} }).sip.keepalive.intervalSec;
let relay: Relay;
let listeners: HttpListeners;
let admin: string;
const store = new MemoryBindingStore();

beforeAll(async () => {
  relay = newRelay();
  await store.put(binding({}));
  // A binding that carries its own keepalive interval (the field is optional; older ones have none).
  await store.put(binding({ aor: 'sip:bob@example.com', source: { address: '198.51.100.9', port: 5060 }, natTests: ['via-differs'], keepaliveIntervalMs: 12000, expires: Date.now() + 90000 }));
  await store.put(binding({ aor: 'sip:carol@example.com', transport: 'wss', secure: true, keylatch: true, natted: false, natTests: [], source: { address: '198.51.100.20', port: 443 }, expires: Date.now() + 120000 }));
  listeners = await startHttpListeners({ metrics: { listen: '127.0.0.1:0' }, admin: { listen: '127.0.0.1:0' } }, {
    metrics: metricsRoute(relayMetrics(relay)),
    status: statusRoute({ service: 'edge', startedAt: Date.now() - 65_000, relay, store, summary: () => ({ PBX: 'sip:192.0.2.10:5060' }), defaultKeepaliveMs: defaultKeepaliveSec * 1000 }),
  });
  admin = new URL(listeners.urls['/status']!).host;
});
afterAll(async () => {
  listeners?.close();
  await relay?.close();
});

/** alice (key policy, proves her key) calls bob (guarded, locks after three packets); both send. */
async function liveCall(): Promise<{ toAlice: number; toBob: number }> {
  const [a, b] = [await peer(), await peer()];
  const offer = await relay.offer({ callId: 'call-1', fromTag: 'alice-tag', sdp: sdp(a.address, a.port, { mux: true, keylatch: true }), offerer: { policy: 'key', secure: true }, answerer: { policy: 'guarded', secure: false } });
  const answer = await relay.answer({ callId: 'call-1', fromTag: 'alice-tag', toTag: 'bob-tag', sdp: sdp(b.address, b.port, { mux: true }) });
  const keyA = keyFromSdp(answer.sdp)!;
  const forA = { address: '127.0.0.1', port: mediaPorts(answer.sdp)[0]! };
  const forB = { address: '127.0.0.1', port: mediaPorts(offer.sdp)[0]! };
  await prove(a, forA, keyA.legId, keyA.key);
  for (let i = 0; i < 5; i++) b.send(rtp(i, i * 160, 0x77), forB);
  await waitFor(() => a.media().length > 0);
  for (let i = 0; i < 4; i++) a.send(rtp(i, i * 160), forA);
  await waitFor(() => b.media().length === 4);
  // An offered call that has not been answered yet: no media, nothing latched.
  await relay.offer({ callId: 'call-2', fromTag: 'erin-tag', sdp: sdp(a.address, a.port + 10) });
  return { toAlice: a.media().length, toBob: b.media().length };
}

describe('keylatch status against the admin endpoint', () => {
  it('prints bindings and live calls as a table, and the same as JSON with --json', async () => {
    const delivered = await liveCall();
    const [aliceLeg, bobLeg] = relay.stats('call-1')!;
    const table = await cli(['--admin', admin]);
    expect({ code: table.code, stderr: table.stderr }).toEqual({ code: 0, stderr: '' });
    const lines = table.stdout.split('\n');
    expect(lines[0]).toMatch(/^keylatch edge, up 1m\d\ds$/);
    expect(lines).toContainEqual(expect.stringMatching(/^ {2}PBX {2}sip:192\.0\.2\.10:5060$/));
    expect(lines).toContain('Bindings: 3');
    const row = (needle: string): string[] => lines.find((l) => l.includes(needle))!.trim().split(/\s{2,}/);
    expect(row('sip:alice@')).toEqual(['sip:alice@example.com', 'udp', '203.0.113.7:40112', 'private-contact,contact-port-differs', `${defaultKeepaliveSec}s`, expect.stringMatching(/^\d+s ago$/), expect.stringMatching(/^in (\d+s|1m00s)$/)]);
    expect(row('sip:bob@').slice(0, 5)).toEqual(['sip:bob@example.com', 'udp', '198.51.100.9:5060', 'via-differs', '12s']);
    expect(row('sip:carol@').slice(0, 5)).toEqual(['sip:carol@example.com', 'wss+key', '198.51.100.20:443', '-', '-']);
    expect(lines).toContain('Calls: 2');
    // In: what each phone sent (alice's proof as well as her 4 packets); out: what reached it.
    expect(aliceLeg).toMatchObject({ packetsIn: expect.any(Number), packetsOut: delivered.toAlice });
    expect(aliceLeg!.packetsIn).toBeGreaterThan(4);
    expect(bobLeg).toMatchObject({ packetsIn: 5, packetsOut: delivered.toBob });
    expect(row('alice-tag')).toEqual(['call-1', 'alice-tag', 'key', 'authenticated', `127.0.0.1:${aliceLeg!.latched!.port}`, 'relay', String(aliceLeg!.packetsIn), String(delivered.toAlice), expect.stringMatching(/^\d+s ago$/)]);
    expect(row('bob-tag')).toEqual(['bob-tag', 'guarded', 'locked', `127.0.0.1:${bobLeg!.latched!.port}`, 'relay', '5', String(delivered.toBob), expect.stringMatching(/^\d+s ago$/)]);
    expect(row('erin-tag')).toEqual(['call-2', 'erin-tag', 'guarded', 'learning', '-', 'relay', '0', '0', 'never']);

    const json = await cli(['--json', '--admin', admin]);
    expect(json.code).toBe(0);
    const snap = JSON.parse(json.stdout) as StatusSnapshot;
    expect(snap.bindings!.total).toBe(3);
    expect(snap.bindings!.shown.map((b) => [b.aor, b.keepaliveIntervalMs])).toEqual([
      ['sip:alice@example.com', defaultKeepaliveSec * 1000], ['sip:bob@example.com', 12000], ['sip:carol@example.com', null],
    ]);
    const call1 = snap.calls.find((c) => c.callId === 'call-1')!;
    expect(call1.legs.map((l) => [l.tag, l.policy, l.latchState, l.packetsIn, l.packetsOut])).toEqual([
      ['alice-tag', 'key', 'authenticated', aliceLeg!.packetsIn, delivered.toAlice], ['bob-tag', 'guarded', 'locked', 5, delivered.toBob],
    ]);
    expect(snap.bindings!.shown[0]!.lastSeen).toBe((await store.list({ limit: 1 })).bindings[0]!.lastSeen);
    expect(json.stdout).not.toMatch(/"key"\s*:\s*"/); // no leg key material on the admin endpoint
  });

  it('takes the endpoint from admin.listen when --admin is not given', async () => {
    const r = await cli([], { KEYLATCH_ADMIN__LISTEN: admin });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Bindings: 3$/m);
  });

  it('says plainly when there is no edge to ask, and exits 1', async () => {
    const closed = await freePort();
    const r = await cli(['--admin', `127.0.0.1:${closed}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^keylatch status: cannot read http://127\\.0\\.0\\.1:${closed}/status: connect ECONNREFUSED.*is keylatch edge running`));
    const off = await cli([], { KEYLATCH_ADMIN__LISTEN: 'null' });
    expect(off.code).toBe(2);
    expect(off.stderr).toMatch(/^keylatch: invalid configuration: admin\.listen: off, so there is no status to read \(set KEYLATCH_ADMIN__LISTEN=HOST:PORT/);
  });

  it('serves GET only, on its two paths', async () => {
    expect((await request(listeners.urls['/metrics']!)).body).toMatch(/^keylatch_relay_calls \d+$/m);
    expect((await request(`http://${admin}/status`, 'POST')).status).toBe(405);
    expect((await request(`http://${admin}/`)).status).toBe(404);
    expect((await request(`http://${admin}/status?x=1`)).status).toBe(200);
  });

  it('serves metrics and status on one listener when both name the same HOST:PORT, and names a busy port', async () => {
    const shared = await startHttpListeners({ metrics: { listen: '127.0.0.1:0' }, admin: { listen: '127.0.0.1:0' } }, { metrics: metricsRoute(relayMetrics(relay)), status: statusRoute({ service: 'relay', startedAt: Date.now(), relay, summary: () => ({}) }) });
    try {
      const port = Number(new URL(shared.urls['/status']!).port);
      const one = await startHttpListeners({ metrics: { listen: `127.0.0.1:${port}` }, admin: { listen: `127.0.0.1:${port}` } }, { metrics: metricsRoute(relayMetrics(relay)), status: statusRoute({ service: 'relay', startedAt: Date.now(), relay, summary: () => ({}) }) })
        .then(() => null, (err: Error) => err);
      expect(one?.message).toBe(`invalid configuration: metrics.listen: 127.0.0.1:${port} is already in use`);
    } finally {
      shared.close();
    }
    const both = await freePort();
    const l = await startHttpListeners({ metrics: { listen: `127.0.0.1:${both}` }, admin: { listen: `127.0.0.1:${both}` } }, { metrics: metricsRoute(relayMetrics(relay)), status: statusRoute({ service: 'relay', startedAt: Date.now(), relay, summary: () => ({}) }) });
    try {
      expect(l.urls).toEqual({ '/metrics': `http://127.0.0.1:${both}/metrics`, '/status': `http://127.0.0.1:${both}/status` });
      expect((await request(l.urls['/status']!)).status).toBe(200);
      expect((await request(l.urls['/metrics']!)).status).toBe(200);
    } finally {
      l.close();
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
