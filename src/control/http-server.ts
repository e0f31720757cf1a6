import { once } from 'node:events';
import http from 'node:http';
import type { Registry } from 'prom-client';

/** Serves /metrics for Prometheus; nothing else. */
export async function serveMetrics(registry: Registry, port: number, address: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err: Error) => res.writeHead(500).end(err.message),
    );
  });
  server.listen(port, address);
  await once(server, 'listening');
  return server;
}
