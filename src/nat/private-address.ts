import { BlockList, isIPv4, isIPv6 } from 'node:net';

const ranges = new BlockList();
ranges.addSubnet('10.0.0.0', 8, 'ipv4'); // RFC 1918
ranges.addSubnet('172.16.0.0', 12, 'ipv4');
ranges.addSubnet('192.168.0.0', 16, 'ipv4');
ranges.addSubnet('100.64.0.0', 10, 'ipv4'); // RFC 6598 carrier-grade NAT
ranges.addSubnet('127.0.0.0', 8, 'ipv4');
ranges.addSubnet('169.254.0.0', 16, 'ipv4'); // link-local
ranges.addAddress('::1', 'ipv6');
ranges.addSubnet('fe80::', 10, 'ipv6');
ranges.addSubnet('fc00::', 7, 'ipv6'); // unique local, the IPv6 counterpart of RFC 1918

/** Addresses a host behind a NAT would use but nobody outside can reach. Not an IP: false. */
export function isPrivateAddress(address: string): boolean {
  if (isIPv4(address)) return ranges.check(address, 'ipv4');
  if (isIPv6(address)) return ranges.check(address, 'ipv6');
  return false;
}
