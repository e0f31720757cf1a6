/** The SIP toolchain end to end: a real drachtio-server, keylatch's drachtio-srf app, and sipp. */
import path from 'node:path';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';

const skip = skipSipSuite('SIP edge smoke test');

(skip ? describe.skip : describe)('SIP edge on drachtio-server', () => {
  const sipPort = 25060 + (process.pid % 500);

  // The fixture is the subject here: its edge must be what answers.
  sipEdgeFixture({ contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`], adminPort: 29022 + (process.pid % 500) });

  it.each(['u1', 't1'])('answers an OPTIONS keepalive over %s with 200', async (transport) => {
    const r = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-t', transport, '-m', '1', '-i', '127.0.0.1', '-p', '0', `127.0.0.1:${sipPort}`]);
    expect({ code: r.code, out: r.code === 0 ? '' : r.out.slice(-1500) }).toEqual({ code: 0, out: '' });
  });
});
