/**
 * The HTTP listeners of a running service: Prometheus /metrics (metrics.listen) and the admin
 * /status (admin.listen). When both name the same HOST:PORT they share one listener.
 */
import type http from 'node:http';
import type { Config } from '../config/schema';
import { ConfigError, envName } from '../config/load';
import { splitHostPort } from '../host-port';
import { serveRoutes, type Action, type ActionRoute, type Route } from './http-server';
import { STATUS_PATH } from './status';

export interface HttpListeners {
  /** Where each route is served, e.g. { '/metrics': '127.0.0.1:9464' }, for the start-up summary. */
  urls: Record<string, string>;
  close(): void;
}

/**
 * admin: further admin GET routes and POST actions by path (the relay pool's), and actions under
 * a path prefix (room control), all on admin.listen only.
 */
export async function startHttpListeners(
  config: Pick<Config, 'metrics' | 'admin'>,
  routes: { metrics: Route; status: Route; admin?: { routes: Record<string, Route>; actions: Record<string, Action>; prefixed?: ActionRoute[] } },
): Promise<HttpListeners> {
  const byListen = new Map<string, { key: string; routes: Record<string, Route>; actions: Record<string, Action>; prefixed: ActionRoute[] }>();
  const add = (key: string, listen: string | null, path: string, route: Route): void => {
    if (!listen) return;
    const entry = byListen.get(listen) ?? { key, routes: {}, actions: {}, prefixed: [] };
    entry.routes[path] = route;
    byListen.set(listen, entry);
  };
  add('metrics.listen', config.metrics.listen, '/metrics', routes.metrics);
  add('admin.listen', config.admin.listen, STATUS_PATH, routes.status);
  for (const [path, route] of Object.entries(routes.admin?.routes ?? {})) add('admin.listen', config.admin.listen, path, route);
  if (config.admin.listen) {
    const admin = byListen.get(config.admin.listen)!;
    Object.assign(admin.actions, routes.admin?.actions ?? {});
    admin.prefixed.push(...(routes.admin?.prefixed ?? []));
  }
  const servers: http.Server[] = [];
  const urls: Record<string, string> = {};
  try {
    for (const [listen, { key, routes: served, actions, prefixed }] of byListen) {
      const { host, port } = splitHostPort(listen);
      const server = await serveRoutes(served, port, host, actions, prefixed).catch((err: NodeJS.ErrnoException) => {
        const why = err.code === 'EADDRINUSE' ? `${listen} is already in use` : err.code === 'EADDRNOTAVAIL' ? `${host} is not an address of this host` : `cannot listen on ${listen}: ${err.message}`;
        throw new ConfigError(`invalid configuration: ${key}: ${why}`, [{ key, message: why, hint: `${envName(key)}=HOST:PORT, or null to turn it off` }]);
      });
      servers.push(server);
      const a = server.address();
      const where = a && typeof a === 'object' ? (a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`) : listen;
      for (const path of Object.keys(served)) urls[path] = `http://${where}${path}`;
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  return {
    urls,
    close: () => {
      for (const s of servers) s.close();
    },
  };
}
