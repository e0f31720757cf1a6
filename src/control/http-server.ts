import { once } from 'node:events';
import http from 'node:http';
import type { Registry } from 'prom-client';

/** What one GET path answers: a content type and a body, computed per request. */
export type Route = () => Promise<{ contentType: string; body: string }>;

/** What one POST path does (an admin action, e.g. draining a relay node): its status and a text body. */
export type Action = (query: URLSearchParams) => Promise<{ status: number; body: string }>;

/**
 * Requests under a path prefix that change something (e.g. POST /rooms/standup/participants/x/mute),
 * answered with a status and a JSON body. Only the admin listener has any.
 */
export interface ActionRoute {
  prefix: string;
  handle(method: string, path: string): Promise<{ status: number; body: unknown }>;
}

/**
 * An HTTP listener: GET on a known route, POST on a known action, 404 for anything else, 405
 * for other methods. A route or action that fails answers 500 with its message; the listener
 * and the process go on.
 */
export async function serveRoutes(
  routes: Record<string, Route>,
  port: number,
  address: string,
  actions: Record<string, Action> = {},
  prefixed: ActionRoute[] = [],
): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const under = prefixed.find((a) => pathOf(req.url).startsWith(a.prefix));
    if (under) {
      // The body is never read: such an action is named by its method and path alone.
      req.resume();
      under.handle(req.method ?? 'GET', pathOf(req.url)).then(
        ({ status, body }) => res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(`${JSON.stringify(body)}\n`),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(err.message),
      );
      return;
    }
    const action = Object.hasOwn(actions, pathOf(req.url)) ? actions[pathOf(req.url)] : undefined;
    if (action) {
      if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST' }).end();
        return;
      }
      req.resume();
      const query = new URL(req.url ?? '/', 'http://admin').searchParams;
      action(query).then(
        ({ status, body }) => res.writeHead(status, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(body),
        (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(err.message),
      );
      return;
    }
    const route = Object.hasOwn(routes, pathOf(req.url)) ? routes[pathOf(req.url)] : undefined;
    if (!route) {
      res.writeHead(404).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    route().then(
      ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType, 'cache-control': 'no-store' }).end(req.method === 'HEAD' ? undefined : body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(err.message),
    );
  });
  server.listen(port, address);
  await once(server, 'listening');
  return server;
}

function pathOf(url: string | undefined): string {
  const q = (url ?? '/').indexOf('?');
  return q === -1 ? (url ?? '/') : (url ?? '/').slice(0, q);
}

/** The Prometheus route for a registry. */
export function metricsRoute(registry: Registry): Route {
  return async () => ({ contentType: registry.contentType, body: await registry.metrics() });
}

/** Serves /metrics for Prometheus; nothing else. */
export async function serveMetrics(registry: Registry, port: number, address: string): Promise<http.Server> {
  return serveRoutes({ '/metrics': metricsRoute(registry) }, port, address);
}
