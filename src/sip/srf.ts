import Srf from 'drachtio-srf';
import type { SipTransport } from '../nat/binding';

export type SipRequest = Srf.SrfRequest;
export type SipResponse = Srf.SrfResponse;
export type Handler = (req: SipRequest, res: SipResponse) => void | Promise<void>;

/** drachtio-srf routes by SIP method through methods its typings leave out. */
export interface MethodRouter {
  options(h: Handler): void;
  register(h: Handler): void;
  invite(h: Handler): void;
  message(h: Handler): void;
}

export const router = (srf: Srf): MethodRouter => srf as unknown as MethodRouter;

type RequestOptions = { method: string; headers: Record<string, string>; body?: string; proxy?: string };
type SendRequest = (uri: string, opts: RequestOptions, cb: (err: unknown, sent?: SipRequest) => void) => void;

/** srf.request as drachtio-srf implements it: (uri, options, callback). */
export const sendRequest = (srf: Srf): SendRequest => {
  const s = srf as unknown as { request: SendRequest };
  return s.request.bind(srf);
};

const TRANSPORTS = new Set<SipTransport>(['udp', 'tcp', 'tls', 'ws', 'wss']);

/**
 * The transport a request really arrived on. drachtio reports WS and WSS requests as "tcp" in
 * req.protocol, and a client's Via may claim anything; what cannot lie is which of drachtio's
 * own listeners (req.server.hostport, e.g. "wss/1.2.3.4:8443,udp/1.2.3.4:5060") owns the local
 * address it arrived on (req.receivedOn). UDP and TCP may share a port; req.protocol tells those apart.
 */
export function transportOf(req: SipRequest): SipTransport {
  const meta = req as unknown as { receivedOn?: string; server?: { hostport?: string } };
  const reported = (req.protocol ?? '').toLowerCase() as SipTransport;
  const matches = (meta.server?.hostport ?? '')
    .split(',')
    .map((l) => l.split('/') as [string, string])
    .filter(([t, hp]) => hp === meta.receivedOn && TRANSPORTS.has(t as SipTransport))
    .map(([t]) => t as SipTransport);
  // Never anything but one of the listeners it arrived on: a report cannot upgrade a request.
  if (matches.length > 0) return matches.includes(reported) ? reported : matches[0]!;
  return TRANSPORTS.has(reported) ? reported : 'udp';
}

/**
 * Ends a dialog without caring whether it still exists: drachtio-srf's destroy() returns a
 * promise (its typings say void) that rejects for a dialog already gone, and an unhandled
 * rejection would end the process.
 */
export function destroyQuietly(dialog: Srf.Dialog): void {
  void Promise.resolve(dialog.destroy() as unknown).catch(() => undefined);
}

/** The caller's From, less its tag (the new leg gets a tag of its own), rebuilt from the parsed header. */
export function fromWithoutTag(req: SipRequest): string {
  const from = req.getParsedHeader('From') as { name?: string; uri: string; params?: Record<string, unknown> };
  const params = Object.entries(from.params ?? {})
    .filter(([k]) => k.toLowerCase() !== 'tag')
    .map(([k, v]) => (v === null || v === undefined || v === '' ? `;${k}` : `;${k}=${String(v)}`))
    .join('');
  return `${from.name ? `${from.name} ` : ''}<${from.uri}>${params}`;
}

/**
 * What a B2BUA may send for a status another hop gave it: drachtio-srf refuses codes it has no
 * reason phrase for, so an unusual one becomes its class's x00 (RFC 3261 8.1.3.2 lets a UA
 * treat it so anyway).
 */
export function sendStatus(res: SipResponse, status: number, reason: string, opts: object): void {
  try {
    res.send(status, reason, opts);
  } catch {
    res.send(Math.floor(status / 100) * 100, reason, opts);
  }
}

/** What of drachtio-srf's connection state routesConfirmed reads; srf has no accessor for it. */
interface AgentInternals {
  wp?: { send(socket: unknown, msg: string): string };
  mapServer?: Map<unknown, { authenticated?: boolean; serverVersion?: string | null; pendingRequests?: Map<string, () => void> }>;
}

/**
 * Resolves once drachtio-server has acted on the `route` requests srf sent when it connected.
 * srf emits 'connect' as soon as it has written them, not when the server confirms them, and
 * until the server has read them it answers a new request for that method itself: 503, "No
 * connected clients found". The server reads one app's messages in order and answers each
 * before the next (client.cpp, processClientMessage), so the answer to a ping sent after the
 * routes means they are in place.
 */
export function routesConfirmed(srf: Srf, timeoutMs = 5000): Promise<void> {
  const agent = (srf as unknown as { _app?: { client?: AgentInternals } })._app?.client;
  const first = agent?.mapServer?.entries().next().value;
  const version = /^v?(\d+)\.(\d+)\.(\d+)/.exec(first?.[1].serverVersion ?? '');
  // drachtio-server answers ping from 0.8.2 on (srf pings only those): an older one, or an srf
  // whose internals moved, is taken at its word.
  const answersPing = version !== null && Number(version[1]) * 1e6 + Number(version[2]) * 1e3 + Number(version[3]) >= 8002;
  const wp = agent?.wp;
  const pending = first?.[1].pendingRequests;
  if (!wp || !first || !first[1].authenticated || !pending || !answersPing) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const id = wp.send(first[0], 'ping');
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error(`drachtio-server did not confirm keylatch's routes within ${timeoutMs} ms`));
    }, timeoutMs);
    pending.set(id, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
