/**
 * Draining a relay node as an operator does it: `keylatch relays` (the real CLI, a child
 * process) against the admin listener of a pool of real ng relays on loopback. And the
 * media.relays settings, validated as the edge loads them.
 */
import { loadConfig } from '../../src/config/load';
import { metricsRoute } from '../../src/control/http-server';
import { NgServer } from '../../src/control/ng-server';
import { statusRoute } from '../../src/control/status';
import { startHttpListeners, type HttpListeners } from '../../src/control/status-server';
import { relayAdmin } from '../../src/control/relay-admin';
import { relayMetrics } from '../../src/media/metrics';
import type { Relay } from '../../src/media/relay';
import { relayPoolFor } from '../../src/edge-service';
import { silentLogger } from '../../src/log';
import type { RelayPool } from '../../src/relay-pool/pool';
import { runCli } from '../helpers/cli';
import { newRelay } from '../helpers/peers';

const cli = runCli;

describe('keylatch relays: the relay pool on the admin listener', () => {
  const relays: Relay[] = [];
  const servers: NgServer[] = [];
  let pool: RelayPool;
  let listeners: HttpListeners;
  let admin: string;
  let urls: string[];

  beforeAll(async () => {
    urls = [];
    for (const portMin of [43000, 43200]) {
      const relay = newRelay({ portMin, portMax: portMin + 99 });
      const server = new NgServer(relay);
      const { port } = await server.listen(0, '127.0.0.1');
      relays.push(relay);
      servers.push(server);
      urls.push(`ng://127.0.0.1:${port}`);
    }
    const config = loadConfig({ env: {}, overrides: { media: { relays: [{ url: urls[0] }, { url: urls[1], weight: 2 }, { url: 'in-process', weight: 0 }] } } });
    const local = newRelay({ portMin: 43400, portMax: 43499 });
    relays.push(local);
    pool = relayPoolFor(config, local, silentLogger);
    pool.start();
    listeners = await startHttpListeners({ metrics: { listen: null }, admin: { listen: '127.0.0.1:0' } }, {
      metrics: metricsRoute(relayMetrics(local)),
      status: statusRoute({ service: 'edge', startedAt: Date.now(), relay: local, summary: () => ({}) }),
      admin: relayAdmin(pool),
    });
    admin = new URL(listeners.urls['/status']!).host;
  });
  afterAll(async () => {
    listeners?.close();
    pool?.close();
    servers.forEach((s) => s.close());
    for (const r of relays) await r.close();
  });

  it('lists the nodes with their kind, weight, state and calls', async () => {
    pool.place('a', false);
    const { code, out } = await cli(['relays', '--admin', admin]);
    expect(code).toBe(0);
    const rows = out.trim().split('\n').map((l) => l.split(/\s{2,}/));
    expect(rows[0]).toEqual(['RELAY', 'KIND', 'WEIGHT', 'STATE', 'CALLS', 'PING']);
    expect(rows.slice(1).map((r) => r.slice(0, 5))).toEqual([
      [urls[0], 'keylatch', '1', 'up', '0'],
      [urls[1], 'keylatch', '2', 'up', '1'],
      ['in-process', 'in-process', '0', 'up', '0'],
    ]);
    const json = await cli(['relays', '--admin', admin, '--json']);
    expect(JSON.parse(json.out)).toHaveLength(3);
  });

  it('drains a node (no new calls go there) and undrains it; an unknown node is an error', async () => {
    const drained = await cli(['relays', '--admin', admin, '--drain', urls[1]!]);
    expect(drained).toMatchObject({ code: 0, out: `${urls[1]} draining: no new calls\n` });
    for (let i = 0; i < 3; i++) expect(pool.place(`d${i}`, false).id).toBe(urls[0]);
    expect(pool.status()[1]).toMatchObject({ state: 'draining', calls: 1 });
    expect((await cli(['relays', '--admin', admin, '--undrain', urls[1]!])).code).toBe(0);
    expect(pool.place('u', false).id).toBe(urls[1]);
    const unknown = await cli(['relays', '--admin', admin, '--drain', 'ng://192.0.2.9:1']);
    expect(unknown.code).toBe(1);
    expect(unknown.err).toMatch(/no relay node ng:\/\/192\.0\.2\.9:1/);
  });

  it('refuses GET on an action and POST on a route', async () => {
    const base = `http://${admin}`;
    expect((await fetch(`${base}/relays/drain?url=${urls[0]}`)).status).toBe(405);
    expect((await fetch(`${base}/relays`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${base}/relays/drain`, { method: 'POST' })).status).toBe(400);
  });
});

describe('media.relays settings', () => {
  it('takes ng URLs with weights and kinds, from YAML or the environment', () => {
    const c = loadConfig({ env: { KEYLATCH_MEDIA__RELAYS: '[{url: "ng://10.0.0.2:2223", weight: 3}, {url: "ng://10.0.0.3:2223", kind: rtpengine}]' } });
    expect(c.media.relays).toEqual([
      { url: 'ng://10.0.0.2:2223', weight: 3, kind: 'keylatch' },
      { url: 'ng://10.0.0.3:2223', weight: 1, kind: 'rtpengine' },
    ]);
    expect(c.media.relayPool).toEqual({ pingIntervalMs: 400, pingTimeoutMs: 300, missedPingsDown: 2, commandTimeoutMs: 2000, keySecret: null, mediaCheckIntervalMs: 5000 });
  });

  it('asks after pooled calls\' media every mediaCheckIntervalMs: 0 is off, below 500 is refused', () => {
    const at = (ms: number): number => loadConfig({ env: { KEYLATCH_MEDIA__RELAY_POOL__MEDIA_CHECK_INTERVAL_MS: String(ms) } }).media.relayPool.mediaCheckIntervalMs;
    expect([at(0), at(500), at(10000)]).toEqual([0, 500, 10000]);
    expect(() => at(100)).toThrow(/mediaCheckIntervalMs/);
  });

  it('refuses what is not an ng URL, and a node listed twice', () => {
    expect(() => loadConfig({ env: {}, overrides: { media: { relays: [{ url: 'udp://10.0.0.2:2223' }] } } })).toThrow(/media\.relays\.0\.url/);
    expect(() => loadConfig({ env: {}, overrides: { media: { relays: [{ url: 'ng://10.0.0.2:2223' }, { url: 'ng://10.0.0.2:2223' }] } } })).toThrow(/listed once/);
  });
});
