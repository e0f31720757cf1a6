/** Keepalives down NATed UDP flows, on a real drachtio-server, with sipp as phone and PBX. */
import path from 'node:path';
import { newBindingId, type Binding } from '../../src/nat/binding';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';

const skip = skipSipSuite('SIP keepalive tests');

(skip ? describe.skip : describe)('keepalives', () => {
  const sipPort = 20060 + (process.pid % 500);
  const pbxPort = 19060 + (process.pid % 500);

  const binding = (port: number): Binding => ({
    id: newBindingId(), aor: 'sip:carol@keylatch.test', contact: `<sip:carol@127.0.0.9:${port}>`, instance: null,
    source: { address: '127.0.0.1', port }, transport: 'udp', localSocket: 'udp', lastSeen: Date.now(),
    expires: Date.now() + 60_000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: Date.now() + 3_600_000, keylatch: false,
  });

  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`],
    adminPort: 18022 + (process.pid % 500),
    sip: { pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${sipPort}`, keepalive: { intervalSec: 3600, timeoutMs: 400, maxFailures: 2 } },
  });

  it("sends OPTIONS to the phone's Contact down its learned flow, and keeps a binding that answers", async () => {
    const port = 17060 + (process.pid % 500);
    const b = binding(port);
    await f.edge.store.put(b);
    const phone = runSipp(['-sf', path.join(SCENARIOS, 'phone-options.xml'), '-i', '127.0.0.1', '-p', String(port), '-m', '1'], { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    await f.edge.keepalive.round();
    const p = await phone;
    expect({ code: p.code, out: p.code === 0 ? '' : p.out.slice(-1500) }).toEqual({ code: 0, out: '' });
    await f.edge.keepalive.round(); // nobody answers now: one failure, below maxFailures
    expect(await f.edge.store.get(b.id)).not.toBeNull();
    await f.edge.store.remove(b.id);
  });

  it('drops a binding whose flow stays silent and tells the PBX the contact is gone', async () => {
    const b = binding(16060 + (process.pid % 500)); // nothing listens there
    await f.edge.store.put(b);
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-unregister.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    await f.edge.keepalive.round();
    expect(await f.edge.store.get(b.id)).not.toBeNull();
    await f.edge.keepalive.round();
    expect(await f.edge.store.get(b.id)).toBeNull();
    const x = await pbx;
    expect({ code: x.code, out: x.code === 0 ? '' : x.out.slice(-1500) }).toEqual({ code: 0, out: '' });
  });
});
