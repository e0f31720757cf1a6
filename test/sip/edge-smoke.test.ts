/** The SIP toolchain end to end: a real drachtio-server, keylatch's drachtio-srf app, and sipp. */
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { testMediaConfig } from '../helpers/peers';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';

const noSipp = sippUnavailable();
if (noSipp) console.warn(`!!! SKIPPED SIP edge smoke test: ${noSipp}`);
const skip = skipUnlessDrachtio('SIP edge smoke test') || noSipp !== null;

(skip ? describe.skip : describe)('SIP edge on drachtio-server', () => {
  const sipPort = 25060 + (process.pid % 500);
  let drachtio: RunningDrachtio;
  let edge: SipEdge;

  beforeAll(async () => {
    drachtio = await startDrachtio({ contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`], adminPort: 29022 + (process.pid % 500) });
    edge = await startSipEdge({ drachtio: drachtio.admin, relay: new Relay(testMediaConfig()), sip: loadConfig({ env: {} }).sip });
  });
  afterAll(async () => {
    await edge?.close();
    await drachtio?.stop();
  });

  it.each(['u1', 't1'])('answers an OPTIONS keepalive over %s with 200', async (transport) => {
    const r = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-t', transport, '-m', '1', '-i', '127.0.0.1', '-p', '0', `127.0.0.1:${sipPort}`]);
    expect({ code: r.code, out: r.code === 0 ? '' : r.out.slice(-1500) }).toEqual({ code: 0, out: '' });
  });
});
