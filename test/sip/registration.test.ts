/**
 * Registrations through keylatch on a real drachtio-server: a sipp "softphone" with a private
 * Contact registers through keylatch to a sipp PBX stand-in that demands digest auth.
 */
import dgram from 'node:dgram';
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

  it('sends a refresh from another IP to the PBX to be challenged, and leaves the binding where it was', async () => {
    const [before] = await f.edge.store.byAor('sip:alice@keylatch.test');
    expect(before).toBeDefined();
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-registrar.xml'), '-i', '127.0.0.1', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 3000 });
    await new Promise((r) => setTimeout(r, 300));
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.3', r));
    const answer = new Promise<string>((r) => sock.once('message', (m) => r(m.toString())));
    sock.send(['REGISTER sip:keylatch.test SIP/2.0', `Via: SIP/2.0/UDP 127.0.0.3:${sock.address().port};branch=z9hG4bKforged${Date.now()};rport`,
      'From: <sip:alice@keylatch.test>;tag=forged', 'To: <sip:alice@keylatch.test>', `Call-ID: forged-${Date.now()}`, 'CSeq: 1 REGISTER',
      `Contact: ${before!.contact}`, 'Expires: 3600', 'Max-Forwards: 70', 'Content-Length: 0', '', ''].join('\r\n'), sipPort, '127.0.0.1');
    try {
      expect((await answer).split('\r\n')[0]).toBe('SIP/2.0 401 Unauthorized');
      const [after] = await f.edge.store.byAor('sip:alice@keylatch.test');
      expect(after!.source).toEqual(before!.source);
    } finally {
      sock.close();
      await pbx;
    }
  }, 15000);

  it('answers a REGISTER it cannot parse with 400, and keeps serving', async () => {
    const bad = await runSipp(['-sf', path.join(SCENARIOS, 'bad-register.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1', `127.0.0.1:${sipPort}`]);
    expect({ code: bad.code, out: bad.code === 0 ? '' : bad.out.slice(-1500) }).toEqual({ code: 0, out: '' });
    const ok = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-m', '1', '-i', '127.0.0.1', '-p', '0', `127.0.0.1:${sipPort}`]);
    expect(ok.code).toBe(0);
  });
});
