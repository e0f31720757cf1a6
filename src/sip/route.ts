import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import type { Binding } from '../nat/binding';
import type { BindingStore } from '../nat/binding-store';
import { refreshBinding } from './binding-refresh';
import type { LocalNames } from './local-names';
import type { PbxPeer } from './pbx-peer';
import { bindingIdOf, contactUri } from './registration';
import { fromWithoutTag, type SipRequest } from './srf';

/** Where a new request goes: the PBX for a client's, a client's learned flow for the PBX's. */
export type Route =
  | { uri: string; proxy: string; toClient: Binding | null; hops: number; /** To the edge that holds the client's flow (sip.peerEdges). */ toPeer?: boolean }
  | { reject: number; reason: string };

export interface RouteDeps {
  store: BindingStore;
  sip: SipConfig;
  names: LocalNames;
  pbx: PbxPeer;
  log: Logger;
}

/** Asserted identity is the PBX's to give (RFC 3325's trust domain); a phone's is dropped. */
const PASSED_FROM_PBX = ['P-Asserted-Identity'];

/**
 * Routes an out-of-dialog request (INVITE, MESSAGE, OPTIONS to a user) that arrived on the
 * phones' drachtio-server or, with onPbxSide, on the PBX-facing one. Only the PBX may use the
 * PBX-facing one. Our Path (now the PBX's Route) or the Contact we registered names the
 * binding a PBX request is for; a client's request refreshes its binding and goes to the PBX,
 * with a Request-URI naming keylatch turned toward the PBX.
 *
 * keylatch starts each new request afresh, so it counts Max-Forwards down itself: a PBX that
 * sends a request back for someone it does not know then ends in 483, not in a loop.
 */
export async function routeRequest(req: SipRequest, deps: RouteDeps, onPbxSide: boolean): Promise<Route> {
  const { store, sip, names, pbx, log } = deps;
  const mf = req.has('Max-Forwards') ? Number(req.get('Max-Forwards')) : 70;
  if (!(mf > 0)) return { reject: 483, reason: 'Too Many Hops' };
  const hops = Math.min(mf, 70) - 1;
  if (pbx.strangerOnPbxSide(req, onPbxSide)) return { reject: 403, reason: 'Forbidden' };
  const id = bindingIdOf(req.uri, req.has('Route') ? req.get('Route') : null);
  const named = id ? await store.get(id) : null;
  if (!pbx.owns(req, onPbxSide, named !== null)) {
    await refreshBinding(store, req, log);
    return { uri: names.towardPbx(req.uri), proxy: sip.pbx!, toClient: null, hops };
  }
  if (!named || named.expires < Date.now()) return { reject: 404, reason: 'Not Found' };
  if (!names.holdsFlow(named.localSocket) && sip.peerEdges.includes(named.localSocket)) {
    // Another edge's drachtio-server holds the flow: only it can send down it (the client's
    // NAT would drop what comes from here). It gets the binding named in its own terms.
    log.debug({ binding: named.id, edge: named.localSocket }, 'request for a flow another edge holds: forwarded to it');
    return { uri: `sip:${named.id}@${named.localSocket}`, proxy: `sip:${named.localSocket}`, toClient: null, hops, toPeer: true };
  }
  const via = named.transport === 'udp' ? '' : `;transport=${named.transport}`;
  return { uri: contactUri(named.contact), proxy: `sip:${named.source.address}:${named.source.port}${via}`, toClient: named, hops };
}

/**
 * Headers for the new request a route leads to: From (less its tag: the new leg gets its own)
 * and To as the sender sent them, so identity stays end to end and a PBX that takes its digest
 * realm from the From domain sees the phone's; the counted-down Max-Forwards; each of `passed`
 * the sender gave; and P-Asserted-Identity only from the PBX.
 */
export function routedHeaders(req: SipRequest, route: Extract<Route, { uri: string }>, passed: string[]): Record<string, string> {
  const headers: Record<string, string> = { From: fromWithoutTag(req), To: req.get('To'), 'Max-Forwards': String(route.hops) };
  for (const h of [...passed, ...(route.toClient ? PASSED_FROM_PBX : [])]) if (req.has(h)) headers[h] = req.get(h);
  return headers;
}
