import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import type { BindingStore } from '../nat/binding-store';
import { refreshBinding } from './binding-refresh';
import type { LocalNames } from './local-names';
import type { SipRequest, SipResponse } from './srf';
import { requestWithTimeout } from './upstream';

/** Timer F: how long a non-INVITE transaction may take. */
const UPSTREAM_TIMEOUT_MS = 32_000;
const PASSED_REQUEST_HEADERS = ['Authorization', 'Proxy-Authorization', 'Content-Type', 'User-Agent', 'Accept', 'Expires', 'P-Asserted-Identity'];
const PASSED_RESPONSE_HEADERS = ['WWW-Authenticate', 'Proxy-Authenticate', 'Retry-After', 'Allow', 'Accept', 'Supported'];

/**
 * A client's out-of-dialog request for someone behind the PBX (MESSAGE, an OPTIONS to a user):
 * sent on to the PBX as a new transaction with the caller's identity, credentials and body,
 * and the PBX's answer (digest challenges included) handed back.
 */
export function forwardToPbx(deps: { srf: Srf; store: BindingStore; sip: SipConfig; names: LocalNames; log: Logger }) {
  const { srf, store, sip, names, log } = deps;
  return async (req: SipRequest, res: SipResponse): Promise<void> => {
    if (!sip.pbx) {
      res.send(503, 'No PBX configured', {});
      return;
    }
    await refreshBinding(store, req, log);
    const headers: Record<string, string> = { From: req.get('From').replace(/;\s*tag=[^;>\s]*/i, ''), To: req.get('To') };
    for (const h of PASSED_REQUEST_HEADERS) if (req.has(h)) headers[h] = req.get(h);
    let upstream: SipResponse;
    try {
      upstream = await requestWithTimeout(srf, names.towardPbx(req.uri), { method: req.method, headers, body: req.body || undefined, proxy: sip.pbx }, UPSTREAM_TIMEOUT_MS);
    } catch (err) {
      log.warn({ err: (err as Error).message, method: req.method }, 'PBX unreachable');
      res.send(504, 'PBX did not answer', {});
      return;
    }
    const back: Record<string, string> = {};
    for (const h of PASSED_RESPONSE_HEADERS) if (upstream.has(h)) back[h] = upstream.get(h);
    res.send(upstream.status, upstream.reason, { headers: back });
  };
}
