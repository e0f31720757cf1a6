import { AddressPolicy } from '../../src/media/address-policy';

const policy = (allowLoopback = false) =>
  new AddressPolicy({ allowLoopback, isRelayEndpoint: (a, p) => a === '198.18.0.1' && (p === 30010 || p === 30011) });

describe('AddressPolicy', () => {
  it.each([
    ['127.0.0.1', 5000, 'loopback'],
    ['127.8.9.10', 5000, 'loopback'],
    ['::1', 5000, 'loopback'],
    ['::ffff:127.0.0.1', 5000, 'loopback'],
    ['0.0.0.0', 5000, 'unspecified'],
    ['::', 5000, 'unspecified'],
    ['224.0.0.1', 5000, 'multicast'],
    ['239.255.255.250', 1900, 'multicast'],
    ['ff02::1', 5000, 'multicast'],
    ['255.255.255.255', 5000, 'broadcast'],
    ['198.18.0.1', 30010, 'relay-port'],
    ['203.0.113.5', 0, 'port'],
    ['example.com', 5000, 'not-an-ip'],
  ])('refuses %s:%d (%s)', (address, port, reason) => {
    expect(policy().check(address, port)).toBe(reason);
  });

  it.each([
    ['203.0.113.5', 5000],
    ['192.168.1.20', 4000],
    ['198.18.0.1', 5060],
    ['2001:db8::5', 5000],
  ])('allows %s:%d', (address, port) => {
    expect(policy().check(address, port)).toBeNull();
  });

  it('allows loopback only when told to, and still never multicast', () => {
    expect(policy(true).check('127.0.0.1', 5000)).toBeNull();
    expect(policy(true).check('224.0.0.1', 5000)).toBe('multicast');
  });
});
