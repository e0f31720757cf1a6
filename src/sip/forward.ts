import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import type { BindingStore } from '../nat/binding-store';
import type { LocalNames } from './local-names';
import type { PbxPeer } from './pbx-peer';
import { routeRequest, routedHeaders } from './route';
import type { SipRequest, SipResponse } from './srf';
import { requestWithTimeout } from './upstream';

/** Timer F: how long a non-INVITE transaction may take. */
const UPSTREAM_TIMEOUT_MS = 32_000;
const PASSED_REQUEST_HEADERS = ['Authorization', 'Proxy-Authorization', 'Content-Type', 'User-Agent', 'Accept', 'Expires'];
const PASSED_RESPONSE_HEADERS = ['WWW-Authenticate', 'Proxy-Authenticate', 'Retry-After', 'Allow', 'Accept', 'Supported'];

export interface ForwardDeps {
  srf: Srf;
  store: BindingStore;
  sip: SipConfig;
  names: LocalNames;
  pbx: PbxPeer | null;
  log: Logger;
}

/**
 * An out-of-dialog request that is not a call or a registration (MESSAGE, an OPTIONS to a
 * user): a client's goes on to the PBX; one from the PBX (or arriving on its side) for a
 * binding goes down that client's flow. Each is a new transaction carrying the sender's
 * identity, credentials and body, and the answer (digest challenges included) is handed back.
 * Max-Forwards counts down, so a PBX that routes a request back to keylatch cannot loop it.
 */
export function forwardRequest(deps: ForwardDeps, fromPbxSide = false) {
  const { srf, store, sip, names, pbx, log } = deps;
  return async (req: SipRequest, res: SipResponse): Promise<void> => {
    if (!sip.pbx || !pbx) {
      res.send(503, 'No PBX configured', {});
      return;
    }
    const route = await routeRequest(req, { store, sip, names, pbx, log }, fromPbxSide);
    if ('reject' in route) {
      res.send(route.reject, route.reason, {});
      return;
    }
    const headers = routedHeaders(req, route, PASSED_REQUEST_HEADERS);
    let answer: SipResponse;
    try {
      answer = await requestWithTimeout(srf, route.uri, { method: req.method, headers, body: req.body || undefined, proxy: route.proxy }, UPSTREAM_TIMEOUT_MS);
    } catch (err) {
      log.warn({ err: (err as Error).message, method: req.method, to: route.proxy }, 'no answer to a forwarded request');
      res.send(504, 'No answer', {});
      return;
    }
    const back: Record<string, string> = {};
    for (const h of PASSED_RESPONSE_HEADERS) if (answer.has(h)) back[h] = answer.get(h);
    res.send(answer.status, answer.reason, { headers: back });
  };
}
