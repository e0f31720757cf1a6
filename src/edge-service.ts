import type http from 'node:http';
import type { Config } from './config/schema';
import { ConfigError } from './config/load';
import { serveMetrics } from './control/http-server';
import type { Logger } from './log';
import { relayMetrics } from './media/metrics';
import { Relay } from './media/relay';
import { MemoryBindingStore, type BindingStore } from './nat/binding-store';
import { registerKeepaliveMetrics } from './nat/keepalive';
import { RedisBindingStore } from './nat/redis-binding-store';
import { splitHostPort } from './relay-service';
import { startSipEdge, type SipEdge } from './sip/edge';

export interface EdgeService {
  relay: Relay;
  edge: SipEdge;
  close(): Promise<void>;
}

/** Settings the SIP edge cannot run without, checked up front with the key named. */
function requireEdgeSettings(config: Config): { secret: string; pbx: string; advertised: string } {
  const missing = [
    ['sip.drachtio.secret', config.sip.drachtio.secret],
    ['sip.pbx', config.sip.pbx],
    ['sip.advertisedAddress', config.sip.advertisedAddress],
    ...(config.sip.pbxDrachtio ? [['sip.pbxDrachtio.secret', config.sip.pbxDrachtio.secret]] : []),
  ].filter(([, v]) => !v).map(([k]) => k);
  if (missing.length) throw new ConfigError(`invalid configuration: ${missing.map((k) => `${k}: required for keylatch edge`).join('; ')}`);
  return { secret: config.sip.drachtio.secret!, pbx: config.sip.pbx!, advertised: config.sip.advertisedAddress! };
}

/** The whole product: relay, SIP edge on drachtio, binding store and metrics. */
export async function startEdgeService(config: Config, log: Logger): Promise<EdgeService> {
  const { secret } = requireEdgeSettings(config);
  const store: BindingStore = config.sip.bindingStore === 'memory' ? new MemoryBindingStore() : new RedisBindingStore(config.sip.bindingStore, { logger: log });
  const relay = new Relay(config.media, { logger: log });
  let edge: SipEdge;
  try {
    const pbxDrachtio = config.sip.pbxDrachtio ? { ...config.sip.pbxDrachtio, secret: config.sip.pbxDrachtio.secret! } : null;
    edge = await startSipEdge({ drachtio: { ...config.sip.drachtio, secret }, pbxDrachtio, sip: config.sip, relay, store, logger: log });
  } catch (err) {
    await relay.close();
    await store.close();
    throw err;
  }
  let httpServer: http.Server | null = null;
  if (config.metrics.listen) {
    const { host, port } = splitHostPort(config.metrics.listen);
    const registry = relayMetrics(relay);
    registerKeepaliveMetrics(edge.keepalive, registry);
    httpServer = await serveMetrics(registry, port, host);
  }
  return {
    relay,
    edge,
    async close() {
      httpServer?.close();
      await edge.close();
      await relay.close();
    },
  };
}
