import type http from 'node:http';
import { availableParallelism } from 'node:os';
import type { Config } from './config/schema';
import { splitHostPort } from './host-port';
import { serveMetrics, serveRoutes } from './control/http-server';
import { NgServer } from './control/ng-server';
import { ngSealKey } from './control/ng-key-seal';
import type { Logger } from './log';
import { clusterCommands } from './media/cluster/dispatcher';
import { poolCommands } from './relay-pool/cluster-ng';
import { RelayCluster, resolveWorkers } from './media/cluster/relay-cluster';
import { tuneFastPath } from './media/media-socket';
import { relayMetrics } from './media/metrics';
import { Relay } from './media/relay';

export interface RelayService {
  /** The relay, when it runs in this process (media.workers: 1). */
  relay: Relay | null;
  /** The relay workers, when there are several (docs/scaling.md). */
  cluster: RelayCluster | null;
  ng: { address: string; port: number } | null;
  metrics: { address: string; port: number } | null;
  close(): Promise<void>;
}

/**
 * The standalone relay: the Relay (or, with media.workers above 1, the relay workers and the
 * dispatcher in front of them), its ng control socket and its metrics listener.
 */
export async function startRelayService(config: Config, log: Logger): Promise<RelayService> {
  const workers = resolveWorkers(config.media.workers, availableParallelism());
  tuneFastPath(config.media); // workers set it from the same media config
  const relay = workers === 1 ? new Relay(config.media, { logger: log }) : null;
  const cluster = relay ? null : await RelayCluster.start(config.media, { workers, logger: log, logLevel: log.level });
  let ngServer: NgServer | null = null;
  let ng: RelayService['ng'] = null;
  let httpServer: http.Server | null = null;
  let metrics: RelayService['metrics'] = null;
  try {
    if (config.control.ng) {
      const { host, port } = splitHostPort(config.control.ng);
      const sealKey = config.control.ngKeySecret ? ngSealKey(config.control.ngKeySecret) : null;
      ngServer = new NgServer(relay ?? poolCommands(clusterCommands(cluster!), cluster!, config.media.advertisedAddress ?? config.media.interface), log, sealKey);
      ng = await ngServer.listen(port, host);
    }
    if (config.metrics.listen) {
      const { host, port } = splitHostPort(config.metrics.listen);
      httpServer = relay
        ? await serveMetrics(relayMetrics(relay), port, host)
        : await serveRoutes({ '/metrics': async () => { const r = await cluster!.metrics(); return { contentType: r.contentType, body: await r.metrics() }; } }, port, host);
      const a = httpServer.address();
      metrics = a && typeof a === 'object' ? { address: a.address, port: a.port } : null;
    }
  } catch (err) {
    ngServer?.close();
    await (relay ?? cluster!).close();
    throw err;
  }
  return {
    relay, cluster, ng, metrics,
    async close() {
      ngServer?.close();
      httpServer?.close();
      await (relay ?? cluster!).close();
    },
  };
}
