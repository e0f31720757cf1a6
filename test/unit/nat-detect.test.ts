import { detectNat, type NatEvidence } from '../../src/nat/detect';
import { isPrivateAddress } from '../../src/nat/private-address';

const publicPhone: NatEvidence = {
  source: { address: '203.0.113.7', port: 5060 },
  via: { host: '203.0.113.7', port: 5060 },
  contact: { host: '203.0.113.7', port: 5060 },
  sdpAddress: '203.0.113.7',
  transport: 'udp',
};

describe('isPrivateAddress', () => {
  it.each(['10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '100.127.255.254', '127.0.0.1', '169.254.10.10', '::1', 'fe80::1', 'fd00::5'])(
    'counts %s as private', (a) => expect(isPrivateAddress(a)).toBe(true));
  it.each(['203.0.113.7', '172.32.0.1', '100.128.0.1', '8.8.4.4', '2001:db8::1', 'pbx.example.com'])(
    'counts %s as public (or not an address)', (a) => expect(isPrivateAddress(a)).toBe(false));
});

describe('detectNat', () => {
  it('finds nothing for a phone on a public address', () => {
    expect(detectNat(publicPhone)).toEqual([]);
  });

  it('records every test that fired for a phone behind a home router', () => {
    expect(detectNat({
      ...publicPhone,
      via: { host: '192.168.1.20', port: 5060 },
      contact: { host: '192.168.1.20', port: 5060 },
      sdpAddress: '192.168.1.20',
      source: { address: '203.0.113.7', port: 40112 },
    })).toEqual(['private-contact', 'private-via', 'private-sdp', 'via-differs', 'contact-port-differs']);
  });

  it('catches a public-looking Via or Contact that is not where the packet came from', () => {
    expect(detectNat({ ...publicPhone, source: { address: '198.18.5.5', port: 5060 } })).toEqual(['via-differs']);
    expect(detectNat({ ...publicPhone, source: { address: '203.0.113.7', port: 6000 }, via: { host: '203.0.113.7', port: 6000 } })).toEqual(['contact-port-differs']);
  });

  it('uses the transport default port when Via or Contact omits it', () => {
    expect(detectNat({ ...publicPhone, via: { host: '203.0.113.7', port: null }, contact: { host: '203.0.113.7', port: null } })).toEqual([]);
  });

  it('ignores ephemeral source ports on connection transports', () => {
    expect(detectNat({ ...publicPhone, transport: 'tls', source: { address: '203.0.113.7', port: 51234 }, via: { host: '203.0.113.7', port: 5061 } })).toEqual([]);
  });

  it('treats a hostname in Via as differing from the source, but not as private', () => {
    expect(detectNat({ ...publicPhone, via: { host: 'phone.invalid', port: 5060 } })).toEqual(['via-differs']);
  });

  it('counts carrier-grade NAT (RFC 6598) as private', () => {
    expect(detectNat({ ...publicPhone, contact: { host: '100.70.1.2', port: 5060 } })).toContain('private-contact');
  });
});
