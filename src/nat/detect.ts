import { isIP } from 'node:net';
import { isPrivateAddress } from './private-address';

/**
 * The tests of Kamailio's nat_uac_test, by name. A client is NATed when any fires; which ones
 * fired is kept with the binding because it tells an operator what kind of NAT it is.
 */
export type NatTest =
  | 'private-contact' // the Contact host is a private address (Kamailio flag 1)
  | 'private-via' // the top Via host is private (flag 16)
  | 'private-sdp' // the SDP c= address is private (flag 8)
  | 'via-differs' // the top Via host or port is not where the request came from (flags 2, 64)
  | 'contact-port-differs'; // the Contact port is not the source port (flag 32)

export interface HostPort {
  host: string;
  port: number | null;
}

export interface NatEvidence {
  /** Where the request actually came from. */
  source: { address: string; port: number };
  /** The top Via's sent-by, and its rport/received if present. */
  via: HostPort | null;
  contact: HostPort | null;
  sdpAddress?: string | null;
  /** TCP, TLS and WS(S) clients pick ephemeral source ports: a differing port means nothing there. */
  transport: 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';
}

const DEFAULT_PORT: Record<NatEvidence['transport'], number> = { udp: 5060, tcp: 5060, tls: 5061, ws: 80, wss: 443 };

export function detectNat(e: NatEvidence): NatTest[] {
  const fired: NatTest[] = [];
  const hostIp = (h: HostPort | null): string | null => (h && isIP(h.host) ? h.host : null);
  const contactIp = hostIp(e.contact);
  const viaIp = hostIp(e.via);
  if (contactIp && isPrivateAddress(contactIp)) fired.push('private-contact');
  if (viaIp && isPrivateAddress(viaIp)) fired.push('private-via');
  if (e.sdpAddress && e.sdpAddress !== '0.0.0.0' && isPrivateAddress(e.sdpAddress)) fired.push('private-sdp');
  const datagram = e.transport === 'udp';
  if (e.via) {
    const viaPort = e.via.port ?? DEFAULT_PORT[e.transport];
    const hostDiffers = viaIp !== null ? viaIp !== e.source.address : true; // a hostname in Via cannot be the source
    if (hostDiffers || (datagram && viaPort !== e.source.port)) fired.push('via-differs');
  }
  if (datagram && e.contact) {
    const contactPort = e.contact.port ?? DEFAULT_PORT[e.transport];
    if (contactPort !== e.source.port) fired.push('contact-port-differs');
  }
  return fired;
}
