import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import type { BindingStore } from '../nat/binding-store';
import { refreshBinding } from './binding-refresh';
import type { LocalNames } from './local-names';
import type { PbxPeer } from './pbx-peer';
import { bindingIdOf, contactUri } from './registration';
import { fromWithoutTag, type SipRequest, type SipResponse } from './srf';
import { requestWithTimeout } from './upstream';

/** Timer F: how long a non-INVITE transaction may take. */
const UPSTREAM_TIMEOUT_MS = 32_000;
const PASSED_REQUEST_HEADERS = ['Authorization', 'Proxy-Authorization', 'Content-Type', 'User-Agent', 'Accept', 'Expires'];
/** Asserted identity is the PBX's to give (RFC 3325); a phone's is dropped. */
const PASSED_FROM_PBX = ['P-Asserted-Identity'];
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
    if (!sip.pbx) {
      res.send(503, 'No PBX configured', {});
      return;
    }
    const hops = req.has('Max-Forwards') ? Number(req.get('Max-Forwards')) : 70;
    if (!(hops > 0)) {
      res.send(483, 'Too Many Hops', {});
      return;
    }
    if (pbx?.strangerOnPbxSide(req, fromPbxSide)) {
      res.send(403, 'Forbidden', {});
      return;
    }
    const id = bindingIdOf(req.uri, req.has('Route') ? req.get('Route') : null);
    const named = id ? await store.get(id) : null;
    const fromPbx = pbx?.owns(req, fromPbxSide, named !== null) ?? false;
    const headers: Record<string, string> = { From: fromWithoutTag(req), To: req.get('To'), 'Max-Forwards': String(Math.min(hops, 70) - 1) };
    for (const h of [...PASSED_REQUEST_HEADERS, ...(fromPbx ? PASSED_FROM_PBX : [])]) if (req.has(h)) headers[h] = req.get(h);
    let target: { uri: string; proxy: string };
    if (fromPbx) {
      if (!named || named.expires < Date.now()) {
        res.send(404, 'Not Found', {});
        return;
      }
      const b = named;
      target = { uri: contactUri(b.contact), proxy: `sip:${b.source.address}:${b.source.port}${b.transport === 'udp' ? '' : `;transport=${b.transport}`}` };
    } else {
      await refreshBinding(store, req, log);
      target = { uri: names.towardPbx(req.uri), proxy: sip.pbx };
    }
    let answer: SipResponse;
    try {
      answer = await requestWithTimeout(srf, target.uri, { method: req.method, headers, body: req.body || undefined, proxy: target.proxy }, UPSTREAM_TIMEOUT_MS);
    } catch (err) {
      log.warn({ err: (err as Error).message, method: req.method, to: target.proxy }, 'no answer to a forwarded request');
      res.send(504, 'No answer', {});
      return;
    }
    const back: Record<string, string> = {};
    for (const h of PASSED_RESPONSE_HEADERS) if (answer.has(h)) back[h] = answer.get(h);
    res.send(answer.status, answer.reason, { headers: back });
  };
}
