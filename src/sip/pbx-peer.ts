import { isIP } from 'node:net';
import type { SipTransport } from '../nat/binding';
import { hostPortOf } from './registration';
import { transportOf, type SipRequest } from './srf';

/**
 * The PBX as a SIP peer: who it is when a request arrives. By address alone, a phone on the
 * PBX's host (the single-host lab, a softphone on the PBX machine) would be taken for the PBX,
 * and its calls routed back to itself. Over UDP the PBX sends from the port it listens on
 * (RFC 3261 18.1.1), so address and port must both match. Over TCP and TLS it opens
 * connections from any port, so the transport stands in for the port there.
 */
export class PbxPeer {
  readonly host: string;
  readonly port: number;
  readonly transport: SipTransport;

  private readonly peers: Set<string>;

  /** peerEdges: host:port of the other edges (sip.peerEdges), whose requests for a binding count as the PBX's. */
  constructor(pbxUri: string, peerEdges: string[] = []) {
    this.peers = new Set(peerEdges.map((p) => p.replace(/:\d+$/, '').replace(/^\[|\]$/g, '')));
    const { host, port } = hostPortOf(pbxUri);
    const param = /;transport=(\w+)/i.exec(pbxUri)?.[1]?.toLowerCase();
    this.transport = /^sips:/i.test(pbxUri) ? 'tls' : ((param as SipTransport | undefined) ?? 'udp');
    this.host = host;
    this.port = port ?? (this.transport === 'tls' ? 5061 : 5060);
    if (isIP(host) === 0) throw new Error(`sip.pbx must name the PBX by IP address to recognise its requests: ${pbxUri}`);
  }

  /**
   * Whether a request is the PBX's. Besides sent(): everything on the PBX-facing
   * drachtio-server, and, from the PBX's host, a request naming one of our bindings (a PBX may
   * send from a second profile or a separate UAC; no phone knows a binding id but its own).
   * The same from another edge (sip.peerEdges): it passes on the PBX's request for a flow we hold.
   */
  owns(req: SipRequest, arrivedOnPbxSide: boolean, namesBinding: boolean): boolean {
    return arrivedOnPbxSide || this.sent(req) || (namesBinding && (req.source_address === this.host || this.peers.has(req.source_address)));
  }

  /** The PBX-facing drachtio-server is for the PBX alone: anyone else there is refused. */
  strangerOnPbxSide(req: SipRequest, arrivedOnPbxSide: boolean): boolean {
    return arrivedOnPbxSide && req.source_address !== this.host;
  }

  sent(req: SipRequest): boolean {
    if (req.source_address !== this.host) return false;
    const transport = transportOf(req);
    if (transport === 'udp') return Number(req.source_port) === this.port;
    return transport === 'tcp' || transport === 'tls';
  }
}
