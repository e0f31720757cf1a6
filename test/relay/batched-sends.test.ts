/**
 * The fast path sends what one recvmmsg brought in from one source as one batch (UDP GSO or
 * sendmmsg, media.sendBatching). A burst that queues up on a relay port while the relay's
 * loop is busy must come out complete, in order and byte for byte, in every mode.
 */
import { setSendBatching, type SendBatching } from '../../src/media/media-socket';
import type { Relay } from '../../src/media/relay';
import { mediaPorts, newRelay, rtp, sdp, testPeers, waitFor } from '../helpers/peers';

const peer = testPeers();
let relay: Relay;
afterEach(async () => {
  setSendBatching('gso');
  await relay?.close();
});

/** Blocks this process's event loop, so that what was just sent queues up on the relay's sockets. */
function block(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe.each<SendBatching>(['gso', 'sendmmsg', 'off'])('batched sends (%s)', (mode) => {
  it('forwards a queued burst complete, in order and intact, whatever the packet sizes', async () => {
    setSendBatching(mode);
    relay = newRelay();
    const [a, b] = [await peer(), await peer('127.0.0.2')];
    await relay.offer({ callId: 'burst', fromTag: 'a', sdp: sdp(a.address, a.port), offerer: { signallingAddress: a.address } });
    const toA = mediaPorts((await relay.answer({ callId: 'burst', fromTag: 'a', toTag: 'b', sdp: sdp(b.address, b.port), answerer: { signallingAddress: b.address } })).sdp)[0]!;
    for (let i = 0; i < 3; i++) a.send(rtp(i, i * 160), { address: '127.0.0.1', port: toA });
    // Locking takes three packets; the third, which locks, is forwarded too.
    await waitFor(() => relay.stats('burst')![0]!.latched !== null && b.media().length === 1);
    b.clear();
    // Equal sizes with a shorter last one (one GSO send), then mixed sizes (GSO refuses: sendmmsg).
    const sizes = [...Array<number>(23).fill(160), 100, 160, 20, 160, 300, 160, 160, 40];
    const sent = sizes.map((payload, k) => {
      const p = rtp(3 + k, (3 + k) * 160, 0x1234, payload);
      p.fill(k, 12); // a payload of its own, to tell the packets apart byte for byte
      return p;
    });
    for (const p of sent.slice(0, 24)) a.send(p, { address: '127.0.0.1', port: toA });
    block(100);
    await waitFor(() => b.media().length >= 24);
    for (const p of sent.slice(24)) a.send(p, { address: '127.0.0.1', port: toA });
    block(100);
    await waitFor(() => b.media().length >= sent.length);
    expect(b.media().map((p) => p.toString('hex'))).toEqual(sent.map((p) => p.toString('hex')));
    const stats = relay.stats('burst')!;
    expect(stats.find((l) => l.tag === 'b')!.packetsOut).toBe(1 + sent.length);
  });
});
