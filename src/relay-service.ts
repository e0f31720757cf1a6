import type http from 'node:http';
import type { Config } from './config/schema';
import { serveMetrics } from './control/http-server';
import { NgServer } from './control/ng-server';
import type { Logger } from './log';
import { relayMetrics } from './media/metrics';
import { Relay } from './media/relay';

export interface RelayService {
  relay: Relay;
  ng: { address: string; port: number } | null;
  metrics: { address: string; port: number } | null;
  close(): Promise<void>;
}

export function splitHostPort(hostPort: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(hostPort);
  if (!m) throw new Error(`not HOST:PORT: ${hostPort}`);
  return { host: m[1]!, port: Number(m[2]) };
}

/** The standalone relay: the Relay, its ng control socket and its metrics listener. */
export async function startRelayService(config: Config, log: Logger): Promise<RelayService> {
  const relay = new Relay(config.media, { logger: log });
  let ngServer: NgServer | null = null;
  let ng: RelayService['ng'] = null;
  let httpServer: http.Server | null = null;
  let metrics: RelayService['metrics'] = null;
  if (config.control.ng) {
    const { host, port } = splitHostPort(config.control.ng);
    ngServer = new NgServer(relay, log);
    ng = await ngServer.listen(port, host);
  }
  if (config.metrics.listen) {
    const { host, port } = splitHostPort(config.metrics.listen);
    httpServer = await serveMetrics(relayMetrics(relay), port, host);
    const a = httpServer.address();
    metrics = a && typeof a === 'object' ? { address: a.address, port: a.port } : null;
  }
  return {
    relay, ng, metrics,
    async close() {
      ngServer?.close();
      httpServer?.close();
      await relay.close();
    },
  };
}
