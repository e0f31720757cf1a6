/**
 * Registrations through keylatch on a real drachtio-server: a sipp "softphone" with a private
 * Contact registers through keylatch to a sipp PBX stand-in that demands digest auth.
 */
import path from 'node:path';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';

const skip = skipSipSuite('SIP registration tests');

(skip ? describe.skip : describe)('REGISTER through keylatch', () => {
  const sipPort = 26060 + (process.pid % 500);
  const pbxPort = 27060 + (process.pid % 500);

  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`],
    adminPort: 28022 + (process.pid % 500),
    sip: { pbx: `sip:127.0.0.1:${pbxPort}`, advertisedAddress: `127.0.0.1:${sipPort}` },
  });

  it('passes the PBX digest challenge through, registers a keylatch Contact upstream, grants the NAT expiry, and answers the refresh itself', async () => {
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-registrar.xml'), '-i', '127.0.0.1', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 15000 });
    await new Promise((r) => setTimeout(r, 300));
    const phone = await runSipp(['-sf', path.join(SCENARIOS, 'client-register.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1', '-au', 'alice', '-ap', 'secret', `127.0.0.1:${sipPort}`], { timeoutMs: 10000 });
    const registrar = await pbx;
    expect({ phone: phone.code, out: phone.code === 0 ? '' : phone.out.slice(-2500) }).toEqual({ phone: 0, out: '' });
    expect({ pbx: registrar.code, out: registrar.code === 0 ? '' : registrar.out.slice(-2500) }).toEqual({ pbx: 0, out: '' });
    const [binding] = await f.edge.store.byAor('sip:alice@keylatch.test');
    expect(binding).toMatchObject({
      contact: expect.stringContaining('192.168.1.20'),
      source: { address: '127.0.0.1' },
      transport: 'udp',
      natted: true,
      secure: false,
    });
    expect(binding!.natTests).toContain('private-contact');
    expect(binding!.expires - Date.now()).toBeLessThanOrEqual(60_000);
    expect(binding!.upstreamExpires - Date.now()).toBeGreaterThan(3_000_000);
  }, 30000);

  it('answers a REGISTER it cannot parse with 400, and keeps serving', async () => {
    const bad = await runSipp(['-sf', path.join(SCENARIOS, 'bad-register.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1', `127.0.0.1:${sipPort}`]);
    expect({ code: bad.code, out: bad.code === 0 ? '' : bad.out.slice(-1500) }).toEqual({ code: 0, out: '' });
    const ok = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-m', '1', '-i', '127.0.0.1', '-p', '0', `127.0.0.1:${sipPort}`]);
    expect(ok.code).toBe(0);
  });
});
