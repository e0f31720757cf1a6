import type Srf from 'drachtio-srf';
import type { Config } from './config/schema';
import { ConfigError, describeProblems, envName, type ConfigProblem } from './config/load';
import { metricsRoute } from './control/http-server';
import { statusRoute } from './control/status';
import { startHttpListeners, type HttpListeners } from './control/status-server';
import type { Logger } from './log';
import { relayMetrics } from './media/metrics';
import { tuneFastPath } from './media/media-socket';
import { Relay } from './media/relay';
import { MemoryBindingStore, type BindingStore } from './nat/binding-store';
import { registerKeepaliveMetrics } from './nat/keepalive';
import { RedisBindingStore } from './nat/redis-binding-store';
import { roomActions } from './rooms/admin';
import { registerRoomMetrics } from './rooms/metrics';
import { RoomRegistry } from './rooms/registry';
import { startSipEdge, type SipEdge } from './sip/edge';
import { relayAdmin } from './control/relay-admin';
import { InProcessNode, NgNode, type RelayNode } from './relay-pool/nodes';
import { registerPoolMetrics } from './relay-pool/metrics';
import { RelayPool } from './relay-pool/pool';
import { pooledCallStatuses } from './relay-pool/pool-status';
import { ngSealKey } from './control/ng-key-seal';
import { SOLE, configForShare, siblingSecretOf, siblingSlices, type EdgeShare } from './edge-processes';
import { siblingRoomActions } from './rooms/sibling-admin';
import { SiblingRooms } from './rooms/sibling-rooms';
import { SiblingRelays } from './relay-pool/sibling-relays';

export interface EdgeService {
  relay: Relay;
  pool: RelayPool;
  edge: SipEdge;
  /** What is up, one line per part: the start-up summary, and the top of `keylatch status`. */
  summary(): Record<string, string>;
  close(): Promise<void>;
}

/** Settings the SIP edge cannot run without, with an example of what to set for each. */
const REQUIRED: Array<{ key: string; get: (c: Config) => string | null | undefined; example: string }> = [
  { key: 'sip.drachtio.secret', get: (c) => c.sip.drachtio.secret, example: "SECRET, drachtio-server's <admin> secret" },
  // Only when a second drachtio-server faces the PBX (sip.pbxDrachtio set): then it needs its secret too.
  { key: 'sip.pbxDrachtio.secret', get: (c) => (c.sip.pbxDrachtio ? c.sip.pbxDrachtio.secret : undefined), example: "SECRET, the PBX-side drachtio-server's <admin> secret" },
  { key: 'sip.pbx', get: (c) => c.sip.pbx, example: 'sip:HOST:PORT' },
  { key: 'sip.advertisedAddress', get: (c) => c.sip.advertisedAddress, example: "HOST:PORT, keylatch's SIP address as the PBX reaches it" },
];

/** Checked up front: one problem per missing setting, each naming its key and variable. */
export function requireEdgeSettings(config: Config): { secret: string } {
  const problems: ConfigProblem[] = REQUIRED.filter((r) => r.get(config) === null || r.get(config) === '').map((r) => ({
    key: r.key,
    message: 'required for keylatch edge',
    hint: `${envName(r.key)}=${r.example}`,
  }));
  if (problems.length) throw new ConfigError(describeProblems(problems), problems);
  return { secret: config.sip.drachtio.secret! };
}

/** The SIP listeners drachtio-server reported when keylatch connected, e.g. ["udp/198.18.0.1:5060"]. */
export function drachtioListeners(srf: Srf): string[] {
  // drachtio-srf keeps what the server said on connect per socket, but has no accessor for it.
  const client = (srf as unknown as { _app?: { client?: { mapServer?: Map<unknown, { hostport?: unknown }> } } })._app?.client;
  const out: string[] = [];
  for (const server of client?.mapServer?.values() ?? []) if (typeof server.hostport === 'string') out.push(...server.hostport.split(',').filter(Boolean));
  return out;
}

/** A Redis URL without its password, fit for a log line or a status page. */
export function redactUrl(url: string): string {
  if (url === 'memory') return 'memory (this instance only; lost on restart)';
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}

/** drachtio-srf's connect errors, said in terms of the settings that cause them. */
function explainDrachtioFailure(err: Error & { code?: string }, config: Config): Error {
  const at = `drachtio-server at ${config.sip.drachtio.host}:${config.sip.drachtio.port}`;
  if (/authenticate/i.test(err.message)) {
    const message = `${at} refused the secret`;
    return new ConfigError(`invalid configuration: sip.drachtio.secret: ${message}`, [{ key: 'sip.drachtio.secret', message }]);
  }
  if (err.code === 'ECONNREFUSED' || err.code === 'ENOTFOUND' || err.code === 'EHOSTUNREACH' || err.code === 'ETIMEDOUT') {
    return new Error(`cannot reach ${at} (${err.code}): is it running? (sip.drachtio.host/port: set ${envName('sip.drachtio.host')}, ${envName('sip.drachtio.port')})`);
  }
  return err;
}

/** How long an ng relay node has to answer a ping and a command (media.relayPool). */
const nodeTimeouts = (config: Config): { pingMs: number; commandMs: number } => ({ pingMs: config.media.relayPool.pingTimeoutMs, commandMs: config.media.relayPool.commandTimeoutMs });

/**
 * media.relays as a pool; with none listed, the in-process relay alone. `siblings`: the other
 * edge processes' relays, with weight 0: asked about hairpins, never given a call (sibling-relays.ts).
 */
export function relayPoolFor(config: Config, relay: Relay, log: Logger, siblings: RelayNode[] = []): RelayPool {
  const listed = config.media.relays;
  const p = config.media.relayPool;
  const nodes: Array<{ node: RelayNode; weight: number }> = listed.length
    ? listed.map((r) => ({
        node: r.url === 'in-process' ? new InProcessNode(relay) : new NgNode(r.url, r.kind, nodeTimeouts(config), p.keySecret ? ngSealKey(p.keySecret) : null),
        weight: r.weight,
      }))
    : [{ node: new InProcessNode(relay), weight: 1 }];
  const all = [...nodes, ...siblings.map((node) => ({ node, weight: 0, sibling: true }))];
  return new RelayPool(all, { pingIntervalMs: p.pingIntervalMs, missedPingsDown: p.missedPingsDown, mediaCheckIntervalMs: p.mediaCheckIntervalMs }, log);
}

/** The whole product: relay, SIP edge on drachtio, binding store, metrics and the admin status endpoint. */
/** share: which of sip.processes edge processes this is (src/edge-processes.ts); edgeConfig is the whole edge's, sliced here. */
export async function startEdgeService(edgeConfig: Config, log: Logger, share: EdgeShare = SOLE): Promise<EdgeService> {
  const config = configForShare(edgeConfig, share);
  const { secret } = requireEdgeSettings(config);
  // Several processes: what they ask each other over loopback is signed under the supervisor's secret.
  const siblingSecret = siblingSecretOf(share, process.env);
  const startedAt = Date.now();
  tuneFastPath(config.media);
  const relay = new Relay(config.media, { logger: log });
  const hairpins = siblingSecret
    ? new SiblingRelays({ share, basePort: config.sip.siblingRelayPort, secret: siblingSecret, relay, timeouts: nodeTimeouts(config), logger: log })
    : null;
  const pool = relayPoolFor(config, relay, log, hairpins?.nodes ?? []);
  const store: BindingStore = config.sip.bindingStore === 'memory' ? new MemoryBindingStore() : new RedisBindingStore(config.sip.bindingStore, { logger: log });
  let edge: SipEdge | null = null;
  let listeners: HttpListeners | null = null;
  const registry = relayMetrics(relay);
  const rooms = config.rooms.enabled ? new RoomRegistry(config.rooms, relay, config.media, { logger: log, siblingMedia: siblingSlices(edgeConfig.media.portMin, edgeConfig.media.portMax, share) }) : null;
  if (rooms) registerRoomMetrics(rooms, registry);
  let siblings: SiblingRooms | null = null;
  const summary = (): Record<string, string> => ({
    'SIP listeners': edge ? drachtioListeners(edge.srf).join(', ') || '(drachtio-server reported none)' : '(not connected)',
    'drachtio-server': `${config.sip.drachtio.host}:${config.sip.drachtio.port}` +
      (config.sip.pbxDrachtio ? `; toward the PBX ${config.sip.pbxDrachtio.host}:${config.sip.pbxDrachtio.port}` : ''),
    PBX: `${config.sip.pbx} (registrations upstream by ${config.sip.registration.upstreamMode}, keylatch as ${config.sip.advertisedAddress})`,
    'media relay': config.media.relays.length
      ? `pool of ${pool.status().map((n) => `${n.id} (${n.kind}, weight ${n.weight}, ${n.state})`).join(', ')}`
      : `${config.media.interface} ports ${config.media.portMin}-${config.media.portMax}` +
        (relay.advertisedAddress !== config.media.interface ? `, advertised as ${relay.advertisedAddress}` : ''),
    'leg key': config.sip.requireKey ? 'required (calls without a key are refused)' : 'optional (plain softphones get guarded latching)',
    'binding store': redactUrl(config.sip.bindingStore),
    metrics: listeners?.urls['/metrics'] ?? 'off (metrics.listen)',
    admin: listeners?.urls['/status'] ? `${listeners.urls['/status']} (keylatch status)` : 'off (admin.listen)',
    // The URI to dial, with a host that names keylatch (a phone's domain, else its address): a
    // literal '@keylatch' read as a host name that nothing resolves.
    rooms: rooms ? `sip:${config.rooms.prefix}<name>@${config.sip.domains[0] ?? config.sip.advertisedAddress}, ${config.rooms.names ? config.rooms.names.join(', ') : 'any name'}` : 'off (rooms.enabled)',
  });
  try {
    await hairpins?.listen();
    if (rooms && siblingSecret) {
      // Several processes: each room in its owner process, the others ask it (src/rooms/sibling-rooms.ts).
      siblings = new SiblingRooms({ share, basePort: config.rooms.siblingPort, secret: siblingSecret, rooms, logger: log });
      await siblings.listen();
    }
    const roomRoutes = rooms ? (siblings ? siblingRoomActions(roomActions(rooms), siblings) : roomActions(rooms)) : null;
    listeners = await startHttpListeners(config, {
      metrics: metricsRoute(registry),
      status: statusRoute({
        service: 'edge', startedAt, relay, store, summary, defaultKeepaliveMs: config.sip.keepalive.intervalSec * 1000,
        ...(config.media.relays.length ? { pooledCalls: () => pooledCallStatuses(edge?.calls.values() ?? []) } : {}),
        ...(rooms ? { rooms: () => rooms.info() } : {}),
      }),
      admin: { ...relayAdmin(pool), prefixed: roomRoutes ? [roomRoutes] : [] },
    });
    pool.start();
    const pbxDrachtio = config.sip.pbxDrachtio ? { ...config.sip.pbxDrachtio, secret: config.sip.pbxDrachtio.secret! } : null;
    edge = await startSipEdge({ drachtio: { ...config.sip.drachtio, secret }, pbxDrachtio, sip: config.sip, relay, pool, store, rooms, roomSeats: siblings, logger: log, share }).catch((err: Error) => {
      throw explainDrachtioFailure(err, config);
    });
    registerKeepaliveMetrics(edge.keepalive, registry);
    registerPoolMetrics(pool, registry);
  } catch (err) {
    listeners?.close();
    siblings?.close();
    hairpins?.close();
    rooms?.close();
    pool.close();
    await relay.close();
    await store.close();
    throw err;
  }
  const running = edge;
  return {
    relay,
    pool,
    edge: running,
    summary,
    async close() {
      listeners?.close();
      await running.close();
      siblings?.close();
      hairpins?.close();
      rooms?.close();
      pool.close();
      await relay.close();
    },
  };
}
