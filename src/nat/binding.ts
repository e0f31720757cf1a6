import { randomBytes } from 'node:crypto';
import type { NatTest } from './detect';

export type SipTransport = 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';

/**
 * What keylatch learned about one registered contact: the Contact exactly as the client sent
 * it, beside the flow it actually arrived on. Calls to the client go to the flow, never to the
 * (often private) Contact.
 */
export interface Binding {
  /** Stable handle for this contact; it goes into the Contact or Path keylatch shows the PBX. */
  id: string;
  aor: string;
  /** The Contact URI as the client sent it, untouched. */
  contact: string;
  /** +sip.instance, when present (RFC 5626): the same device re-registering from a new flow. */
  instance: string | null;
  source: { address: string; port: number };
  transport: SipTransport;
  /** The drachtio socket the client reached us on, e.g. "udp/198.18.0.1:5060". */
  localSocket: string;
  lastSeen: number;
  /** When the binding lapses (ms since the epoch). */
  expires: number;
  natted: boolean;
  natTests: NatTest[];
  /** The client's signalling path is TLS or WSS: the only kind its leg key may travel. */
  secure: boolean;
  /** When the PBX's registration of this binding lapses; refreshes go upstream only near it. */
  upstreamExpires: number;
  /** The client announced keylatch (+keylatch Contact parameter): calls to it may carry a key. */
  keylatch: boolean;
  /**
   * The keepalive interval learned for this flow's NAT (src/nat/keepalive-policy.ts). Absent:
   * nothing learned yet, the configured sip.keepalive.intervalSec applies.
   */
  keepaliveIntervalMs?: number;
  /** The shortest keepalive interval seen to outlive this client's NAT mapping; growth stays below it. */
  keepaliveFailedMs?: number;
}

export const newBindingId = (): string => randomBytes(9).toString('base64url');

export const isSecureTransport = (t: SipTransport): boolean => t === 'tls' || t === 'wss';

/** The same registered device: by instance id where the client gives one, else by Contact. */
export function sameDevice(a: Pick<Binding, 'aor' | 'instance' | 'contact'>, b: Pick<Binding, 'aor' | 'instance' | 'contact'>): boolean {
  if (a.aor !== b.aor) return false;
  return a.instance && b.instance ? a.instance === b.instance : a.contact === b.contact;
}

/**
 * What a re-registration keeps of the keepalive learned for a device: all of it while the
 * device stays behind the same public address (the same NAT), nothing once it has moved on.
 */
export function learnedKeepalive(existing: Binding | null, sourceAddress: string): Pick<Binding, 'keepaliveIntervalMs' | 'keepaliveFailedMs'> {
  if (!existing || existing.source.address !== sourceAddress) return {};
  const kept: Pick<Binding, 'keepaliveIntervalMs' | 'keepaliveFailedMs'> = {};
  if (existing.keepaliveIntervalMs !== undefined) kept.keepaliveIntervalMs = existing.keepaliveIntervalMs;
  if (existing.keepaliveFailedMs !== undefined) kept.keepaliveFailedMs = existing.keepaliveFailedMs;
  return kept;
}
