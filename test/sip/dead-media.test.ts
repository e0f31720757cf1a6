/**
 * Dead media ends the call: a call set up through keylatch whose phone never sends RTP. Once
 * the relay reports the stream dead, keylatch must BYE both legs (sipp on each side waits for
 * it) and free every port.
 */
import path from 'node:path';
import { waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';

const skip = skipSipSuite('SIP dead-media tests');

(skip ? describe.skip : describe)('dead media', () => {
  const sipPort = 50060 + (process.pid % 500);
  const pbxPort = 51060 + (process.pid % 500);
  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp`],
    adminPort: 52022 + (process.pid % 500),
    sip: { pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${sipPort}` },
    media: { timeouts: { mediaSec: 1 } },
  });

  it('hangs up both legs with BYE when the relay reports the media dead, and frees the ports', async () => {
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-answer.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-key', 'mport', '7100'], { timeoutMs: 15000 });
    await new Promise((r) => setTimeout(r, 300));
    const phone = runSipp(['-sf', path.join(SCENARIOS, 'client-call-dead-media.xml'), '-i', '127.0.0.1', '-p', '0', '-m', '1', '-key', 'mport', '7102', `127.0.0.1:${sipPort}`], { timeoutMs: 15000 });
    await waitFor(() => f.relay.callCount === 1, 5000);
    const [p, x] = await Promise.all([phone, pbx]);
    expect({ phone: p.code, out: p.code === 0 ? '' : p.out.slice(-2000) }).toEqual({ phone: 0, out: '' });
    expect({ pbx: x.code, out: x.code === 0 ? '' : x.out.slice(-2000) }).toEqual({ pbx: 0, out: '' });
    await waitFor(() => f.relay.callCount === 0 && f.relay.pool.inUse === 0 && f.edge.calls.size === 0, 2000);
  }, 30000);
});
