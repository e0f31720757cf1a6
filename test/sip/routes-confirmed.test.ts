/**
 * The edge is connected only once drachtio-server has its routes. drachtio-srf reports
 * 'connect' as soon as it has written its `route` requests; until the server has read them it
 * answers new requests itself (503, "No connected clients found to handle incoming register
 * request"). The edge pings after its routes and waits for the answer: here a fake
 * drachtio-server answers that ping late, or never.
 */
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { FakeDrachtio } from '../helpers/fake-drachtio';
import { testMediaConfig } from '../helpers/peers';

const sip = { ...loadConfig({ env: {} }).sip, pbx: 'sip:127.0.0.2:5070', advertisedAddress: '127.0.0.1:5060' };
const verb = (frame: string): string => frame.split('|')[1] ?? '';

describe('the edge waits for drachtio-server to confirm its routes', () => {
  let relay: Relay;
  beforeAll(() => {
    relay = new Relay(testMediaConfig());
  });
  afterAll(async () => {
    await relay.close();
  });

  it('is connected only after the answer to a ping sent after every route', async () => {
    const fake = await FakeDrachtio.start(undefined, { pongAfterMs: 400 });
    let edge: SipEdge | null = null;
    try {
      const t0 = Date.now();
      edge = await startSipEdge({ drachtio: fake.admin, relay, sip });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
      const verbs = fake.connections[0]!.frames.map(verb);
      const lastRoute = verbs.lastIndexOf('route');
      expect(lastRoute).toBeGreaterThan(0);
      expect(verbs.indexOf('ping')).toBeGreaterThan(lastRoute);
    } finally {
      await edge?.close();
      await fake.stop();
    }
  });

  it('refuses to start, and stops reconnecting, when the server never confirms', async () => {
    const fake = await FakeDrachtio.start(undefined, { pongAfterMs: null });
    try {
      await expect(startSipEdge({ drachtio: fake.admin, relay, sip })).rejects.toThrow(/did not confirm keylatch's routes within 5000 ms/);
      // srf reconnects a lost connection within a second or two; this one must stay closed.
      await new Promise((r) => setTimeout(r, 2500));
      expect(fake.connections).toHaveLength(1);
      expect(fake.connections[0]!.socket.destroyed || fake.connections[0]!.socket.readableEnded).toBe(true);
    } finally {
      await fake.stop();
    }
  }, 15_000);
});
