import { BlockList, isIPv4, isIPv6 } from 'node:net';

export type DenyReason = 'not-an-ip' | 'unspecified' | 'loopback' | 'multicast' | 'broadcast' | 'relay-port' | 'port';

/**
 * Where the relay may send. It is the single gate every destination passes, whether it came
 * from SDP or from a latched source, so that keylatch can never be aimed at itself, at the
 * host's own services, or at a multicast/broadcast fan-out (an amplifier).
 */
export class AddressPolicy {
  private readonly always = new BlockList();
  private readonly loopback = new BlockList();

  constructor(private readonly opts: { allowLoopback: boolean; isRelayEndpoint: (address: string, port: number) => boolean }) {
    this.always.addSubnet('0.0.0.0', 8, 'ipv4'); // "this network", includes unspecified
    this.always.addSubnet('224.0.0.0', 4, 'ipv4'); // multicast
    this.always.addSubnet('240.0.0.0', 4, 'ipv4'); // reserved, includes limited broadcast
    this.always.addAddress('::', 'ipv6');
    this.always.addSubnet('ff00::', 8, 'ipv6');
    this.always.addSubnet('::ffff:0.0.0.0', 104, 'ipv6');
    this.always.addSubnet('::ffff:224.0.0.0', 100, 'ipv6');
    this.always.addSubnet('::ffff:240.0.0.0', 100, 'ipv6');
    this.loopback.addSubnet('127.0.0.0', 8, 'ipv4');
    this.loopback.addAddress('::1', 'ipv6');
    this.loopback.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');
  }

  /** null when sending there is allowed. */
  check(address: string, port: number): DenyReason | null {
    const family = isIPv4(address) ? 'ipv4' : isIPv6(address) ? 'ipv6' : null;
    if (!family) return 'not-an-ip';
    if (!Number.isInteger(port) || port < 1 || port > 65535) return 'port';
    if (this.always.check(address, family)) {
      if (address === '255.255.255.255' || address === '::ffff:255.255.255.255') return 'broadcast';
      if (address.startsWith('0.') || address === '::' || address.startsWith('::ffff:0.')) return 'unspecified';
      return 'multicast';
    }
    if (!this.opts.allowLoopback && this.loopback.check(address, family)) return 'loopback';
    if (this.opts.isRelayEndpoint(address, port)) return 'relay-port';
    return null;
  }
}
