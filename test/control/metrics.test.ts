import http from 'node:http';
import { loadConfig } from '../../src/config/load';
import { startRelayService, type RelayService } from '../../src/relay-service';
import { Peer, mediaPorts, rtp, sdp, testMediaConfig, waitFor } from '../helpers/peers';

function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

let service: RelayService;
afterEach(() => service?.close());

describe('metrics', () => {
  it('exposes relay totals, drops by reason and per-leg stats to Prometheus', async () => {
    const base = loadConfig({ env: {} });
    service = await startRelayService({ ...base, media: testMediaConfig({ workers: 1 }), metrics: { listen: '127.0.0.1:0' }, control: { ng: null, ngKeySecret: null } }, (await import('../../src/log')).silentLogger);
    const relay = service.relay!;
    const [a, b] = await Promise.all([Peer.open(), Peer.open('127.0.0.2')]);
    try {
      await relay.offer({ callId: 'm1', fromTag: 'ta', sdp: sdp(a.address, a.port), offerer: { signallingAddress: '127.0.0.1' } });
      const ans = (await relay.answer({ callId: 'm1', fromTag: 'ta', toTag: 'tb', sdp: sdp(b.address, b.port) })).sdp;
      for (let i = 0; i < 5; i++) a.send(rtp(i, i * 160), { address: '127.0.0.1', port: mediaPorts(ans)[0]! });
      a.send(Buffer.from('garbage'), { address: '127.0.0.1', port: mediaPorts(ans)[0]! });
      await waitFor(() => b.media().length === 3);
      await waitFor(() => relay.drops.malformed === 1);
      const { status, body } = await get(service.metrics!.port, '/metrics');
      expect(status).toBe(200);
      expect(body).toMatch(/^keylatch_relay_packets_received_total 6$/m);
      expect(body).toMatch(/^keylatch_relay_packets_forwarded_total 3$/m);
      expect(body).toMatch(/^keylatch_relay_dropped_total\{reason="malformed"\} 1$/m);
      expect(body).toMatch(/^keylatch_relay_calls 1$/m);
      expect(body).toMatch(/^keylatch_leg_packets_received\{call_id="m1",tag="ta",policy="guarded"\} 6$/m);
      expect((await get(service.metrics!.port, '/other')).status).toBe(404);
    } finally {
      a.close();
      b.close();
    }
  });
});
