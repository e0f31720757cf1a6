/**
 * Hostile input against the io_uring receive path (native/fastpath.c, "io_uring"): a flood from
 * a source that never latched, large enough to empty the buffer ring every socket shares. The
 * multishot receives that then end (-ENOBUFS) must be armed again, nothing may crash or lose a
 * buffer, the latched call must keep flowing both ways, and the flooder must get nothing back.
 */
import { ioStats, setIoMode } from '../../src/media/media-socket';
import type { Relay } from '../../src/media/relay';
import { Peer, answerChallenges, keyFromSdp, mediaPorts, newRelay, prove, rtp, sdp, sleep, testPeers, waitFor } from '../helpers/peers';

const peer = testPeers();
let relay: Relay;
afterEach(async () => {
  await relay?.close();
});

const KEY = { policy: 'key' as const, secure: true };
/** The ring has 2,048 buffers and a socket's receive buffer holds a few hundred small datagrams:
    the flood fills 2 + 2 x IDLE_CALLS sockets at once, several times over what the ring holds. */
const IDLE_CALLS = 10;
const PER_PORT = 400;
const ROUNDS = 5;

async function keyCall(callId: string, a: Peer, b: Peer) {
  const offer = (await relay.offer({ callId, fromTag: 'a', sdp: sdp(a.address, a.port, { mux: true }), offerer: KEY, answerer: KEY })).sdp;
  const ans = (await relay.answer({ callId, fromTag: 'a', toTag: 'b', sdp: sdp(b.address, b.port, { mux: true }) })).sdp;
  return {
    toA: { address: '127.0.0.1', port: mediaPorts(ans)[0]! },
    toB: { address: '127.0.0.1', port: mediaPorts(offer)[0]! },
    keyA: keyFromSdp(ans)!,
    keyB: keyFromSdp(offer)!,
  };
}

describe('a flood that empties the io_uring buffer ring', () => {
  it('re-arms the receives it ended, keeps latched media flowing and answers the flooder nothing', async () => {
    expect(setIoMode('uring')).toBe('uring');
    relay = newRelay();
    const [a, b, flooder] = await Promise.all([peer('127.0.0.1'), peer('127.0.0.2'), peer('127.0.0.3')]);
    const call = await keyCall('latched', a, b);
    await prove(a, call.toA, call.keyA.legId, call.keyA.key);
    await prove(b, call.toB, call.keyB.legId, call.keyB.key);
    answerChallenges(a, call.keyA.legId, call.keyA.key);
    answerChallenges(b, call.keyB.legId, call.keyB.key);
    a.send(rtp(0, 0, 0xa), call.toA);
    b.send(rtp(0, 0, 0xb), call.toB);
    await waitFor(() => b.media().length === 1 && a.media().length === 1);

    const targets = [call.toA.port, call.toB.port];
    for (let i = 0; i < IDLE_CALLS; i++) {
      const idle = await keyCall(`idle-${i}`, await peer('127.0.0.1'), await peer('127.0.0.2'));
      targets.push(idle.toA.port, idle.toB.port);
    }
    const before = ioStats();
    expect(before.epollSockets).toBe(0);

    const junk = rtp(1, 160, 0xbad, 20);
    let seq = 1;
    for (let round = 0; round < ROUNDS; round++) {
      // One synchronous burst: the relay's drain runs only after all of it sits in the sockets.
      for (let i = 0; i < PER_PORT; i++) for (const port of targets) flooder.send(junk, { address: '127.0.0.1', port });
      await sleep(20);
      // The real call talks between the bursts.
      a.send(rtp(seq, seq * 160, 0xa), call.toA);
      b.send(rtp(seq, seq * 160, 0xb), call.toB);
      seq++;
      await sleep(20);
    }
    const after = ioStats();
    // The flood did empty the ring, and every receive it ended was armed again: no socket left the ring.
    expect(after.noBuffers).toBeGreaterThan(before.noBuffers);
    expect(after.rearms).toBeGreaterThan(before.rearms);
    expect(after.uringSockets).toBe(before.uringSockets);
    expect(after.epollSockets).toBe(0);
    expect(after.cqOverflow ?? 0).toBe(0);

    // Latched media flows both ways afterwards, every packet of it.
    const got = { a: a.media().length, b: b.media().length };
    for (let i = 0; i < 10; i++) {
      a.send(rtp(seq, seq * 160, 0xa), call.toA);
      b.send(rtp(seq, seq * 160, 0xb), call.toB);
      seq++;
      await sleep(5);
    }
    await waitFor(() => b.media().length === got.b + 10 && a.media().length === got.a + 10);
    await sleep(100);
    expect(flooder.received).toHaveLength(0);
    // The flood reached the latch logic (and was dropped there), rather than vanishing on the way.
    const dropped = Object.values(relay.drops).reduce((x, y) => x + y, 0);
    expect(dropped).toBeGreaterThan(PER_PORT);
  });
});
