import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import { isSecureTransport, learnedKeepalive, newBindingId, sameDevice, type Binding } from '../nat/binding';
import type { BindingStore } from '../nat/binding-store';
import { detectNat } from '../nat/detect';
import { BadRegister, grantedExpires, mustRefreshUpstream, parseRegister, upstreamRegistration, withExpires, type RegisterRequest } from './registration';
import type { LocalNames } from './local-names';
import { transportOf, type SipRequest, type SipResponse } from './srf';
import { requestWithTimeout } from './upstream';

/** Timer F: what a non-INVITE transaction may take before it is given up. */
const UPSTREAM_TIMEOUT_MS = 32_000;

export interface RegistrarDeps {
  srf: Srf;
  names: LocalNames;
  store: BindingStore;
  sip: SipConfig;
  log: Logger;
}

/** Headers of the PBX's answer that the client must see: the digest challenge above all. */
const RELAYED_RESPONSE_HEADERS = ['WWW-Authenticate', 'Proxy-Authenticate', 'Date', 'Min-Expires', 'Retry-After'];
/** Headers of the client's REGISTER the PBX must see: its credentials, and who it is. */
const RELAYED_REQUEST_HEADERS = ['Authorization', 'Proxy-Authorization', 'User-Agent', 'Supported'];

function expiresFromPbx(res: SipResponse, fallback: number): number {
  const contact = res.has('Contact') ? /;\s*expires\s*=\s*(\d+)/i.exec(res.get('Contact')) : null;
  if (contact) return Number(contact[1]);
  return res.has('Expires') ? Number(res.get('Expires')) || fallback : fallback;
}

/**
 * REGISTER from a client: learn its flow, keep the binding, and register a keylatch address
 * that names the binding at the PBX. The PBX's answer, digest challenges included, goes back
 * to the client, so authentication stays the PBX's job. NATed UDP clients get a short expiry;
 * their refreshes reach the PBX only when its registration is close to lapsing.
 */
export function registrar(deps: RegistrarDeps) {
  const { srf, store, sip, names, log } = deps;

  function forwardUpstream(req: SipRequest, binding: Binding, expires: number): Promise<SipResponse> {
    const { contact, path } = upstreamRegistration(binding, sip);
    const headers: Record<string, string> = { From: req.get('From'), To: req.get('To'), Contact: contact, Expires: String(expires) };
    for (const h of RELAYED_REQUEST_HEADERS) if (req.has(h)) headers[h] = req.get(h);
    if (path) {
      headers.Path = path;
      headers.Supported = headers.Supported ? `${headers.Supported}, path` : 'path';
    }
    // Same Call-ID and CSeq as the client's: to the PBX it is one registration, and the
    // digest nonce accounting it keeps per Call-ID stays intact.
    headers['Call-ID'] = req.get('Call-ID');
    headers.CSeq = req.get('CSeq');
    // A phone whose registrar is keylatch itself sends sip:<keylatch>: the PBX gets its own name
    // there. The digest response covers the uri the phone signed, which travels unchanged in
    // the Authorization header's uri parameter; registrars check that one (RFC 2617 3.2.2).
    return requestWithTimeout(srf, names.towardPbx(req.uri), { method: 'REGISTER', headers, proxy: sip.pbx! }, UPSTREAM_TIMEOUT_MS);
  }

  function relay(res: SipResponse, upstream: SipResponse, extra: Record<string, string> = {}): void {
    const headers: Record<string, string> = { ...extra };
    for (const h of RELAYED_RESPONSE_HEADERS) if (upstream.has(h)) headers[h] = upstream.get(h);
    res.send(upstream.status, upstream.reason, { headers });
  }

  return async (req: SipRequest, res: SipResponse): Promise<void> => {
    if (!sip.pbx || !sip.advertisedAddress) {
      res.send(503, 'No PBX configured', {});
      return;
    }
    let reg: RegisterRequest;
    try {
      reg = parseRegister({
        to: req.get('To'),
        contact: req.has('Contact') ? req.get('Contact') : undefined,
        expires: req.has('Expires') ? req.get('Expires') : undefined,
      });
    } catch (err) {
      if (!(err instanceof BadRegister)) throw err;
      log.info({ err: err.message, source: req.source_address }, 'bad REGISTER');
      res.send(400, err.message, {});
      return;
    }
    if (reg.contact === '*') {
      // Out of scope so far: a wildcard unregister would have to walk every binding of the AOR.
      res.send(501, 'Contact: * not supported', {});
      return;
    }
    const now = Date.now();
    const transport = transportOf(req);
    const source = { address: req.source_address, port: Number(req.source_port) };
    const via = req.getParsedHeader('Via')[0];
    const natTests = detectNat({
      source,
      transport,
      via: via ? { host: via.host, port: via.port ? Number(via.port) : null } : null,
      contact: { host: reg.contactHost, port: reg.contactPort },
    });
    const existing = (await store.byAor(reg.aor)).find((b) => sameDevice(b, reg)) ?? null;
    const binding: Binding = {
      id: existing?.id ?? newBindingId(),
      aor: reg.aor,
      contact: reg.contact,
      instance: reg.instance,
      source,
      transport,
      localSocket: (req as unknown as { receivedOn?: string }).receivedOn ?? transport,
      lastSeen: now,
      expires: now,
      natted: natTests.length > 0,
      natTests,
      secure: isSecureTransport(transport),
      upstreamExpires: existing?.upstreamExpires ?? 0,
      keylatch: reg.keylatch,
      ...learnedKeepalive(existing, source.address),
    };

    // Only the flow's own IP may refresh locally: anything else goes to the PBX, which can
    // challenge it, so a forged REGISTER cannot quietly move someone's calls.
    const sameIp = existing?.source.address === source.address;
    if (reg.expires > 0 && sameIp && !mustRefreshUpstream(existing, now, sip.registration)) {
      const granted = grantedExpires(reg.expires, binding, sip.registration);
      await store.put({ ...binding, expires: now + granted * 1000 });
      res.send(200, { headers: { Contact: withExpires(reg.contact, granted) } });
      return;
    }

    const upstreamExpires = reg.expires === 0 ? 0 : sip.registration.upstreamExpiresSec;
    let upstream: SipResponse;
    try {
      upstream = await forwardUpstream(req, binding, upstreamExpires);
    } catch (err) {
      log.warn({ err: (err as Error).message, aor: reg.aor }, 'PBX unreachable for REGISTER');
      res.send(504, 'PBX did not answer', {});
      return;
    }
    if (upstream.status !== 200) {
      relay(res, upstream);
      return;
    }
    if (reg.expires === 0) {
      if (existing) await store.remove(existing.id);
      relay(res, upstream);
      return;
    }
    const granted = grantedExpires(reg.expires, binding, sip.registration);
    const pbxExpires = expiresFromPbx(upstream, upstreamExpires);
    await store.put({ ...binding, expires: now + granted * 1000, upstreamExpires: now + pbxExpires * 1000 });
    // Per request, so debug: at info it was a JSON line per registration at thousands a second.
    log.debug({ aor: reg.aor, binding: binding.id, source, transport, natTests, granted, pbxExpires }, 'registered');
    relay(res, upstream, { Contact: withExpires(reg.contact, granted) });
  };
}
