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
