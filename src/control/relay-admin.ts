/**
 * The relay pool on the edge's admin listener: GET /relays lists the nodes (state, calls,
 * ping), POST /relays/drain?url=ng://HOST:PORT stops new calls to one (its calls finish there),
 * POST /relays/undrain?url=... gives it calls again. `keylatch relays` is the client.
 */
import http from 'node:http';
import type { NodeStatus, RelayPool } from '../relay-pool/pool';
import type { Action, Route } from './http-server';

export const RELAYS_PATH = '/relays';

export function relayAdmin(pool: RelayPool): { routes: Record<string, Route>; actions: Record<string, Action> } {
  const drain = (on: boolean): Action => async (query) => {
    const url = query.get('url');
    if (!url) return { status: 400, body: 'url=ng://HOST:PORT (or in-process) is required\n' };
    if (!pool.drain(url, on)) return { status: 404, body: `no relay node ${url} in media.relays\n` };
    return { status: 200, body: `${url} ${on ? 'draining: no new calls' : 'takes new calls'}\n` };
  };
  return {
    routes: { [RELAYS_PATH]: async () => ({ contentType: 'application/json', body: JSON.stringify(pool.status()) }) },
    actions: { [`${RELAYS_PATH}/drain`]: drain(true), [`${RELAYS_PATH}/undrain`]: drain(false) },
  };
}

/** One request to an edge's relay admin; resolves with the status code and body. */
export function relayAdminRequest(host: string, port: number, method: 'GET' | 'POST', path: string, timeoutMs = 3000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, path, method, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** The node list as `keylatch relays` prints it. */
export function formatRelays(nodes: NodeStatus[]): string {
  const rows = [['RELAY', 'KIND', 'WEIGHT', 'STATE', 'CALLS', 'PING'], ...nodes.map((n) => [n.id, n.kind, String(n.weight), n.state, String(n.calls), n.lastPingMs === null ? '-' : `${n.lastPingMs} ms`])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}
