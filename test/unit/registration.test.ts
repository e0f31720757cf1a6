import { BadRegister, grantedExpires, hostPortOf, mustRefreshUpstream, parseRegister, upstreamRegistration, bindingIdOf } from '../../src/sip/registration';
import { loadConfig } from '../../src/config/load';
import type { Binding } from '../../src/nat/binding';

const cfg = loadConfig({ env: {} }).sip.registration;

describe('parseRegister', () => {
  it('reads AOR, first Contact, instance and expiry', () => {
    const r = parseRegister({
      to: '"Alice" <sip:alice@example.com>;tag=x',
      contact: '<sip:alice@192.168.1.20:5062;transport=udp>;expires=300;+sip.instance="<urn:uuid:abc>", <sip:other@10.0.0.1>',
      expires: '3600',
    });
    expect(r).toEqual({
      aor: 'sip:alice@example.com', contact: '<sip:alice@192.168.1.20:5062;transport=udp>;expires=300;+sip.instance="<urn:uuid:abc>"',
      contactHost: '192.168.1.20', contactPort: 5062, instance: '<urn:uuid:abc>', expires: 300, keylatch: false,
    });
  });

  it('notices the +keylatch feature parameter on the Contact, not inside its URI', () => {
    expect(parseRegister({ to: 'sip:a@x', contact: '<sip:a@1.2.3.4;transport=tls>;+keylatch="v1"', expires: undefined }).keylatch).toBe(true);
    expect(parseRegister({ to: 'sip:a@x', contact: '<sip:a@1.2.3.4;+keylatch>', expires: undefined }).keylatch).toBe(false);
  });

  it('takes the Expires header when the Contact has no expires, and 3600 when neither', () => {
    expect(parseRegister({ to: 'sip:a@x', contact: '<sip:a@1.2.3.4>', expires: '120' }).expires).toBe(120);
    expect(parseRegister({ to: 'sip:a@x', contact: 'sip:a@1.2.3.4', expires: undefined }).expires).toBe(3600);
  });

  it('understands an unregister of everything', () => {
    expect(parseRegister({ to: 'sip:a@x', contact: '*', expires: '0' })).toMatchObject({ contact: '*', expires: 0 });
  });

  it.each([
    [{ to: '', contact: '<sip:a@1.2.3.4>', expires: undefined }, /without To/],
    [{ to: 'sip:a@x', contact: undefined, expires: undefined }, /without Contact/],
    [{ to: 'sip:a@x', contact: '*', expires: '60' }, /Expires: 0/],
    [{ to: 'sip:a@x', contact: '<sip:a@1.2.3.4>;expires=-5', expires: undefined }, /expires/],
    [{ to: 'sip:a@x', contact: '<mailto:a@b>', expires: undefined }, /not a SIP URI/],
    [{ to: 'garbage', contact: '<sip:a@1.2.3.4>', expires: undefined }, /not a SIP URI/],
  ])('refuses %j', (h, why) => {
    expect(() => parseRegister(h)).toThrow(BadRegister);
    expect(() => parseRegister(h)).toThrow(why);
  });

  it('reads IPv6 hosts', () => {
    expect(hostPortOf('sip:a@[2001:db8::1]:5070')).toEqual({ host: '2001:db8::1', port: 5070 });
  });
});

describe('registration policy', () => {
  const b = (over: Partial<Binding>) => ({ natted: true, transport: 'udp' as const, upstreamExpires: 0, ...over }) as Binding;

  it('grants NATed UDP clients a short expiry, others what they asked', () => {
    expect(grantedExpires(3600, b({}), cfg)).toBe(60);
    expect(grantedExpires(30, b({}), cfg)).toBe(30);
    expect(grantedExpires(3600, b({ transport: 'tls' }), cfg)).toBe(3600);
    expect(grantedExpires(3600, b({ natted: false }), cfg)).toBe(3600);
  });

  it('refreshes upstream only for a new binding or one close to lapsing at the PBX', () => {
    const now = 1_000_000;
    expect(mustRefreshUpstream(null, now, cfg)).toBe(true);
    expect(mustRefreshUpstream(b({ upstreamExpires: now + 3000_000 }), now, cfg)).toBe(false);
    expect(mustRefreshUpstream(b({ upstreamExpires: now + 100_000 }), now, cfg)).toBe(true);
  });

  it('registers an address of keylatch naming the binding, or the client Contact behind a Path', () => {
    const binding = { id: 'AbC123', contact: '<sip:bob@10.0.0.5:5060;transport=tcp>;expires=600;+keylatch' };
    const sip = (upstreamMode: 'contact' | 'path') => ({ advertisedAddress: '198.18.0.1:5060', registration: { ...cfg, upstreamMode } });
    expect(upstreamRegistration(binding, sip('contact'))).toEqual({ contact: '<sip:AbC123@198.18.0.1:5060>', path: null });
    expect(upstreamRegistration(binding, sip('path'))).toEqual({
      contact: '<sip:bob@10.0.0.5:5060;transport=tcp>;+keylatch',
      path: '<sip:AbC123@198.18.0.1:5060;lr>',
    });
  });

  it('finds the binding a PBX request names, by Route (Path mode) before Request-URI', () => {
    expect(bindingIdOf('sip:AbC123@198.18.0.1:5060', null)).toBe('AbC123');
    expect(bindingIdOf('sip:bob@10.0.0.5:5060', '<sip:XyZ789@198.18.0.1:5060;lr>, <sip:other@x;lr>')).toBe('XyZ789');
    expect(bindingIdOf('sip:198.18.0.1', null)).toBeNull();
  });
});
