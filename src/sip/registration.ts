import type { SipConfig } from '../config/schema';
import type { Binding } from '../nat/binding';

/** A REGISTER reduced to what the registrar decides on. */
export interface RegisterRequest {
  aor: string;
  /** The first Contact as sent (keylatch registers one device per REGISTER), or '*' for all. */
  contact: string;
  contactHost: string;
  contactPort: number | null;
  instance: string | null;
  /** Requested expiry in seconds: the Contact's expires param, else the Expires header, else 3600. */
  expires: number;
  /** The Contact carries the +keylatch feature parameter (RFC 3840 style). */
  keylatch: boolean;
}

export class BadRegister extends Error {
  override name = 'BadRegister';
}

const DEFAULT_EXPIRES = 3600;

function uriOf(headerValue: string): string {
  const angle = /<([^>]*)>/.exec(headerValue);
  return (angle ? angle[1]! : headerValue.split(';')[0]!).trim();
}

/** The host and port of a sip: or sips: URI. */
export function hostPortOf(uri: string): { host: string; port: number | null } {
  const m = /^sips?:(?:[^@]*@)?(\[[0-9a-fA-F:.]+\]|[^:;>?]+)(?::(\d+))?/i.exec(uri);
  if (!m) throw new BadRegister(`not a SIP URI: ${uri}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : null };
}

function param(headerValue: string, name: string): string | null {
  const afterUri = headerValue.includes('>') ? headerValue.slice(headerValue.indexOf('>') + 1) : headerValue.slice(headerValue.indexOf(';'));
  const m = new RegExp(`;\\s*${name}\\s*=\\s*("[^"]*"|[^;,\\s]+)`, 'i').exec(afterUri);
  return m ? m[1]!.replace(/^"|"$/g, '') : null;
}

export function parseRegister(headers: { to: string; contact: string | undefined; expires: string | undefined }): RegisterRequest {
  if (!headers.to) throw new BadRegister('REGISTER without To');
  const aor = uriOf(headers.to);
  hostPortOf(aor);
  const contact = (headers.contact ?? '').split(/,(?=(?:[^"]*"[^"]*")*[^"]*$)/)[0]?.trim() ?? '';
  if (!contact) throw new BadRegister('REGISTER without Contact (a binding query is not supported)');
  const headerExpires = headers.expires !== undefined ? Number(headers.expires) : DEFAULT_EXPIRES;
  if (contact === '*') {
    if (headerExpires !== 0) throw new BadRegister('Contact: * needs Expires: 0');
    return { aor, contact, contactHost: '', contactPort: null, instance: null, expires: 0, keylatch: false };
  }
  const { host, port } = hostPortOf(uriOf(contact));
  const contactExpires = param(contact, 'expires');
  const expires = contactExpires !== null ? Number(contactExpires) : headerExpires;
  if (!Number.isInteger(expires) || expires < 0 || expires > 0x7fffffff) throw new BadRegister('bad expires value');
  const afterUri = contact.includes('>') ? contact.slice(contact.indexOf('>')) : contact;
  const keylatch = /;\s*\+keylatch\b/i.test(afterUri);
  return { aor, contact, contactHost: host, contactPort: port, instance: param(contact, '\\+sip\\.instance'), expires, keylatch };
}

/** NATed UDP clients get a short expiry so they refresh (and so keep their pinhole) often. */
export function grantedExpires(requested: number, binding: Pick<Binding, 'natted' | 'transport'>, cfg: SipConfig['registration']): number {
  if (binding.natted && binding.transport === 'udp') return Math.min(requested, cfg.natExpiresSec);
  return requested;
}

/** Refresh upstream only when the PBX's registration is about to lapse: the PBX is not flooded. */
export function mustRefreshUpstream(existing: Binding | null, now: number, cfg: SipConfig['registration']): boolean {
  return existing === null || existing.upstreamExpires - now < cfg.upstreamRefreshMarginSec * 1000;
}

/** The URI inside a Contact header value, without display name or header parameters. */
export const contactUri = (contact: string): string => (/<([^>]*)>/.exec(contact)?.[1] ?? contact.split(';')[0]!).trim();

/** The Contact with any expires parameter removed. */
export const withoutExpires = (contact: string): string => contact.replace(/;\s*expires\s*=\s*[^;,\s]*/i, '');

/** The client's Contact with its expires parameter set to what we granted. */
export function withExpires(contact: string, seconds: number): string {
  return `${withoutExpires(contact)};expires=${seconds}`;
}

/**
 * What keylatch registers at the PBX for a binding. In `contact` mode, an address of ours that
 * names the binding replaces the client's Contact, which works with any registrar. In `path`
 * mode (RFC 3327) the client's Contact goes up untouched and a Path naming the binding makes
 * the PBX route calls through us anyway.
 */
export function upstreamRegistration(b: Pick<Binding, 'id' | 'contact'>, sip: Pick<SipConfig, 'advertisedAddress' | 'registration'>): { contact: string; path: string | null } {
  const ours = `sip:${b.id}@${sip.advertisedAddress!}`;
  if (sip.registration.upstreamMode === 'path') return { contact: withoutExpires(b.contact), path: `<${ours};lr>` };
  return { contact: `<${ours}>`, path: null };
}

/** The binding a request from the PBX is for: named by the user part of our Path (Route) or registered Contact (Request-URI). */
export function bindingIdOf(requestUri: string, route: string | null): string | null {
  return (route ? userOf(route.split(',')[0]!) : null) ?? userOf(requestUri);
}

/** The user part of a SIP URI (bare or in angle brackets), or null when it has none. */
export const userOf = (uri: string): string | null => /^<?sips?:([^@;>]+)@/i.exec(uri.trim())?.[1] ?? null;
