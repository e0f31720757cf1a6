import type { SipConfig } from '../config/schema';
import { hostPortOf } from './registration';

const defaultPort = (uri: string): number => (/^sips:|;transport=tls/i.test(uri) ? 5061 : 5060);

/** host[:port] of a SIP URI, and the rest around it, so that only the host part is replaced. */
const URI_HOST = /^(sips?:(?:[^@;>?]*@)?)(\[[0-9a-fA-F:.]+\]|[^:;>?]+)(:\d+)?(.*)$/i;

/**
 * The names under which phones address keylatch itself. The usual softphone setup has no
 * outbound proxy: the account is alice@<keylatch>, so every REGISTER's Request-URI is
 * sip:<keylatch> and an INVITE's sip:bob@<keylatch>. Sent on unchanged, drachtio-server would
 * refuse to send a request to itself; keylatch sends it to the PBX instead, naming the PBX.
 *
 * An address is compared with its port (a PBX on the same IP listens on another port); a name
 * from sip.domains matches on any port.
 */
export class LocalNames {
  private readonly endpoints = new Set<string>();
  /** host:port of drachtio-server's own listeners (not the advertised address). */
  private readonly listeners = new Set<string>();
  private readonly domains: Set<string>;
  private readonly pbxHost: string;

  constructor(private readonly sip: Pick<SipConfig, 'advertisedAddress' | 'domains' | 'pbx' | 'pbxDomain'>) {
    this.domains = new Set(sip.domains.map((d) => d.toLowerCase()));
    if (sip.advertisedAddress) this.endpoints.add(sip.advertisedAddress.toLowerCase());
    const pbx = sip.pbx ? hostPortOf(sip.pbx) : null;
    this.pbxHost = sip.pbxDomain ?? (pbx ? (pbx.port ? `${pbx.host}:${pbx.port}` : pbx.host) : '');
  }

  /** drachtio-server's listeners as it reports them on connect: "udp/1.2.3.4:5060,wss/1.2.3.4:8443". */
  addListeners(hostport: string): void {
    for (const entry of hostport.split(',')) {
      const hp = entry.split('/')[1];
      if (hp) {
        this.endpoints.add(hp.toLowerCase());
        this.listeners.add(hp.toLowerCase());
      }
    }
  }

  /**
   * Whether a flow that arrived on `socket` (a binding's localSocket, drachtio's "ip:port") is
   * this edge's: several edges share one binding store, and only the edge whose drachtio-server
   * holds a flow can send down it. A socket with no port (an old or a test binding) counts as ours.
   */
  holdsFlow(socket: string): boolean {
    if (!/:\d+$/.test(socket)) return true;
    return this.listeners.has(socket.toLowerCase());
  }

  /** Whether the URI's host (and port) is keylatch itself. */
  names(uri: string): boolean {
    const m = URI_HOST.exec(uri.trim());
    if (!m) return false;
    const host = m[2]!.toLowerCase();
    if (this.domains.has(host)) return true;
    const port = m[3] ? Number(m[3].slice(1)) : defaultPort(uri);
    return this.endpoints.has(`${host}:${port}`);
  }

  /** The Request-URI to send on to the PBX: one that names keylatch names the PBX instead. */
  towardPbx(uri: string): string {
    if (!this.pbxHost || !this.names(uri)) return uri;
    const m = URI_HOST.exec(uri.trim())!;
    return `${m[1]}${this.pbxHost}${m[4]}`;
  }
}
