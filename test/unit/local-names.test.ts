import { LocalNames } from '../../src/sip/local-names';
import { PbxPeer } from '../../src/sip/pbx-peer';
import type { SipRequest } from '../../src/sip/srf';

describe('LocalNames: Request-URIs that name keylatch itself', () => {
  const names = new LocalNames({ advertisedAddress: '203.0.113.10:5070', domains: ['SBC.example.com'], pbx: 'sip:192.0.2.10:5080', pbxDomain: null });
  names.addListeners('udp/203.0.113.10:5060,tcp/203.0.113.10:5060,wss/203.0.113.10:8443,tls/203.0.113.10:5061');

  it.each([
    ['sip:203.0.113.10', true],
    ['sip:203.0.113.10:5060', true],
    ['sip:bob@203.0.113.10;transport=tcp', true],
    ['sips:bob@203.0.113.10', true], // 5061 for sips
    ['sip:bob@203.0.113.10:5070', true], // the advertised address
    ['sip:bob@sbc.example.com:5099', true], // a configured name, on any port
    ['sip:bob@203.0.113.10:5080', false], // another service on our IP (a PBX on one host)
    ['sip:bob@192.0.2.10:5080', false],
    ['sip:bob@pbx.example.com', false],
    ['not a uri', false],
  ])('%s names keylatch: %s', (uri, expected) => {
    expect(names.names(uri)).toBe(expected);
  });

  it('rewrites only the host part toward the PBX, keeping user and parameters', () => {
    expect(names.towardPbx('sip:203.0.113.10')).toBe('sip:192.0.2.10:5080');
    expect(names.towardPbx('sip:bob@203.0.113.10:5060;transport=tcp')).toBe('sip:bob@192.0.2.10:5080;transport=tcp');
    expect(names.towardPbx('sip:bob@pbx.example.com')).toBe('sip:bob@pbx.example.com');
  });

  it('uses sip.pbxDomain when set, so a PBX that checks its domain sees its own name', () => {
    const n = new LocalNames({ advertisedAddress: null, domains: ['sbc.example.com'], pbx: 'sip:192.0.2.10', pbxDomain: 'pbx.example.com' });
    expect(n.towardPbx('sip:alice@sbc.example.com')).toBe('sip:alice@pbx.example.com');
  });
});

describe('LocalNames: which flows are this edge\'s', () => {
  it('holds a flow that arrived on one of its drachtio listeners, not one on another edge\'s', () => {
    const names = new LocalNames({ advertisedAddress: '203.0.113.10:5070', domains: [], pbx: 'sip:192.0.2.10:5080', pbxDomain: null });
    names.addListeners('udp/203.0.113.10:5060,tcp/203.0.113.10:5060');
    expect(names.holdsFlow('203.0.113.10:5060')).toBe(true);
    expect(names.holdsFlow('203.0.113.11:5060')).toBe(false); // another edge's drachtio-server
    expect(names.holdsFlow('203.0.113.10:5070')).toBe(false); // advertised, but no flow arrives there
    expect(names.holdsFlow('udp')).toBe(true); // no socket recorded: a single edge's old binding
  });
});

describe('PbxPeer: the PBX is its address and port, not its address alone', () => {
  const req = (address: string, port: number, protocol: string): SipRequest =>
    ({ source_address: address, source_port: String(port), protocol, receivedOn: '127.0.0.1:5060', server: { hostport: 'udp/127.0.0.1:5060,tcp/127.0.0.1:5060' } }) as unknown as SipRequest;

  it('over UDP only the PBX port is the PBX: a phone on the PBX host is a phone', () => {
    const pbx = new PbxPeer('sip:127.0.0.1:5080');
    expect(pbx.sent(req('127.0.0.1', 5080, 'udp'))).toBe(true);
    expect(pbx.sent(req('127.0.0.1', 5090, 'udp'))).toBe(false);
    expect(pbx.sent(req('127.0.0.2', 5080, 'udp'))).toBe(false);
  });

  it('over TCP the PBX connects from any port', () => {
    const pbx = new PbxPeer('sip:127.0.0.1:5080;transport=tcp');
    expect(pbx.sent(req('127.0.0.1', 41234, 'tcp'))).toBe(true);
  });

  it('takes a peer edge\'s request for a binding as the PBX\'s, and nothing else from it', () => {
    const pbx = new PbxPeer('sip:127.0.0.1:5080', ['127.0.0.7:5060']);
    expect(pbx.owns(req('127.0.0.7', 5060, 'udp'), false, true)).toBe(true);
    expect(pbx.owns(req('127.0.0.7', 5060, 'udp'), false, false)).toBe(false); // a peer's request naming no binding
    expect(pbx.owns(req('127.0.0.8', 5060, 'udp'), false, true)).toBe(false);
  });

  it('refuses a PBX named by host name: its requests could not be recognised', () => {
    expect(() => new PbxPeer('sip:pbx.example.com')).toThrow(/by IP address/);
  });
});
