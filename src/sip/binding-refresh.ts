import type { Logger } from '../log';
import type { BindingStore } from '../nat/binding-store';
import { contactUri } from './registration';
import { transportOf, type SipRequest } from './srf';

/**
 * Any request from a registered client is proof of life, and shows where its flow is now. The
 * binding follows a new source port (a NAT rebinding) on the same IP and transport; a client on
 * a new IP must REGISTER again, which the PBX can authenticate. A From header alone is never
 * enough to move someone's calls.
 */
export async function refreshBinding(store: BindingStore, req: SipRequest, log: Logger): Promise<void> {
  try {
    const aor = contactUri(req.get('From'));
    const contact = req.has('Contact') ? contactUri(req.get('Contact')) : null;
    const source = { address: req.source_address, port: Number(req.source_port) };
    const transport = transportOf(req);
    for (const b of await store.byAor(aor)) {
      if (b.source.address !== source.address || b.transport !== transport) continue;
      const sameFlow = b.source.port === source.port;
      if (!sameFlow && contactUri(b.contact) !== contact) continue;
      if (!sameFlow) log.info({ aor, binding: b.id, from: b.source, to: source }, 'binding follows a new mapping');
      await store.put({ ...b, source, lastSeen: Date.now() });
    }
  } catch (err) {
    // A store hiccup must not cost the request itself.
    log.warn({ err: (err as Error).message }, 'binding refresh failed');
  }
}
