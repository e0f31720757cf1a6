import { transportOf, type SipRequest } from '../../src/sip/srf';

const req = (protocol: string, receivedOn: string | undefined, hostport: string | undefined) =>
  ({ protocol, receivedOn, server: hostport ? { address: '198.18.0.1', hostport } : undefined }) as unknown as SipRequest;

const listeners = 'wss/198.18.0.1:8443,tcp/198.18.0.1:5060,udp/198.18.0.1:5060,tls/198.18.0.1:5061';

describe('transportOf', () => {
  it('takes the transport of the listener the request arrived on, whatever drachtio reports', () => {
    expect(transportOf(req('tcp', '198.18.0.1:8443', listeners))).toBe('wss');
    expect(transportOf(req('tls', '198.18.0.1:5061', listeners))).toBe('tls');
  });

  it('tells UDP from TCP on a shared port by what drachtio reports', () => {
    expect(transportOf(req('udp', '198.18.0.1:5060', listeners))).toBe('udp');
    expect(transportOf(req('tcp', '198.18.0.1:5060', listeners))).toBe('tcp');
  });

  it('never upgrades a request on a plain listener to a secure transport', () => {
    expect(['tcp', 'udp']).toContain(transportOf(req('wss', '198.18.0.1:5060', listeners)));
    expect(transportOf(req('tls', '198.18.0.1:5060', 'tcp/198.18.0.1:5060'))).toBe('tcp');
  });

  it('falls back to what drachtio reports when it gives no listener table', () => {
    expect(transportOf(req('tcp', undefined, undefined))).toBe('tcp');
    expect(transportOf(req('bogus', undefined, undefined))).toBe('udp');
  });
});
