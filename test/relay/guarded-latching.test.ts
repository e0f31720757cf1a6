/** Guarded latching for softphones that prove no key, over real UDP on loopback. */
import type { Relay } from '../../src/media/relay';
import type { Endpoint } from '../../src/media/challenge';
import { Peer, mediaPorts, newRelay, rtcpPorts, rtcpSr, rtp, sdp, sleep, testPeers, waitFor } from '../helpers/peers';

const peer = testPeers();
let relay: Relay;
afterEach(async () => {
  await relay?.close();
});

interface GuardedCall {
  a: Peer;
  b: Peer;
  aRtcp: Peer;
  bRtcp: Peer;
  relayForA: Endpoint;
  relayForB: Endpoint;
  relayRtcpForA: Endpoint;
}

async function guardedCall(over: Parameters<typeof newRelay>[0] = {}, mux = true): Promise<GuardedCall> {
  relay = newRelay(over);
  const a = await peer('127.0.0.1');
  const b = await peer('127.0.0.2');
  const aRtcp = await peer('127.0.0.1');
  const bRtcp = await peer('127.0.0.2');
  const offer = await relay.offer({
    callId: 'g1', fromTag: 'ta', sdp: sdp(a.address, a.port, { mux, rtcpPort: aRtcp.port }),
    offerer: { signallingAddress: '127.0.0.1' },
  });
  const answer = await relay.answer({
    callId: 'g1', fromTag: 'ta', toTag: 'tb', sdp: sdp(b.address, b.port, { mux, rtcpPort: bRtcp.port }),
    answerer: { signallingAddress: '127.0.0.2' },
  });
  return {
    a, b, aRtcp, bRtcp,
    relayForA: { address: '127.0.0.1', port: mediaPorts(answer.sdp)[0]! },
    relayForB: { address: '127.0.0.1', port: mediaPorts(offer.sdp)[0]! },
    relayRtcpForA: { address: '127.0.0.1', port: rtcpPorts(answer.sdp)[0]! },
  };
}

const legA = () => relay.stats('g1')!.find((l) => l.tag === 'ta')!;

async function burst(from: Peer, to: Endpoint, n: number, ssrc = 0xa, seq0 = 0): Promise<void> {
  for (let i = 0; i < n; i++) from.send(rtp(seq0 + i, (seq0 + i) * 160, ssrc), to);
  await sleep(30);
}

describe('guarded policy', () => {
  it('locks after three consecutive packets of one SSRC from the signalling IP', async () => {
    const c = await guardedCall();
    await burst(c.a, c.relayForA, 2);
    expect(legA().latched).toBeNull();
    await burst(c.a, c.relayForA, 8, 0xa, 2);
    expect(legA().latched).toEqual(c.a.endpoint);
    expect(c.b.media()).toHaveLength(8); // the packets that locked it and those after
  });

  it('never locks onto an IP that signalling did not name when sole-stream learning is off', async () => {
    const c = await guardedCall({ guarded: { soleStreamLearning: false } });
    const other = await peer('127.0.0.3');
    await burst(other, c.relayForA, 30);
    expect(legA().latched).toBeNull();
    expect(relay.drops['unexpected-source-ip']).toBe(30);
  });

  it('when not strict, makes a source from an unexpected IP show twice the persistence', async () => {
    const c = await guardedCall({ guarded: { strictSourceIp: false } });
    const other = await peer('127.0.0.3');
    await burst(other, c.relayForA, 5);
    expect(legA().latched).toBeNull();
    await burst(other, c.relayForA, 1, 0xa, 5);
    expect(legA().latched).toEqual(other.endpoint);
  });

  it('prefers the signalling IP over an earlier sprayer', async () => {
    const c = await guardedCall();
    const sprayer = await peer('127.0.0.3');
    await burst(sprayer, c.relayForA, 4, 0x666);
    await burst(c.a, c.relayForA, 3);
    expect(legA().latched).toEqual(c.a.endpoint);
    expect(c.b.media().every((m) => m.readUInt32BE(8) === 0xa)).toBe(true);
  });

  it('learns nothing outside the window after signalling (RTP Bleed)', async () => {
    const c = await guardedCall({ guarded: { learnWindowMs: 150 } });
    await sleep(200);
    const sprayer = await peer('127.0.0.3');
    await burst(sprayer, c.relayForA, 20);
    await burst(c.a, c.relayForA, 20);
    expect(legA().latched).toBeNull();
    expect(c.b.media()).toHaveLength(0);
    expect(sprayer.received).toHaveLength(0);
    expect(relay.drops['outside-learning-window']).toBe(40);
  });

  it('once locked, gives the wrong port and the wrong host nothing and forwards nothing of theirs', async () => {
    const c = await guardedCall();
    await burst(c.a, c.relayForA, 3);
    const wrongPort = await peer('127.0.0.1');
    const wrongHost = await peer('127.0.0.3');
    await burst(wrongPort, c.relayForA, 20, 0x777);
    await burst(wrongHost, c.relayForA, 20, 0x777);
    for (let i = 0; i < 8; i++) c.b.send(rtp(i, i * 160, 0xb), c.relayForB);
    await waitFor(() => c.a.media().length === 6); // B's own first two teach the relay B's source
    await sleep(30);
    expect(c.a.media()).toHaveLength(6);
    expect(c.b.media().every((m) => m.readUInt32BE(8) === 0xa)).toBe(true);
    expect(wrongPort.received).toHaveLength(0);
    expect(wrongHost.received).toHaveLength(0);
  });

  it('follows a rebinding: signalling IP, same SSRC, continuing sequence', async () => {
    const c = await guardedCall({ guarded: { learnWindowMs: 100 } });
    await burst(c.a, c.relayForA, 3);
    await sleep(150);
    const rebound = await peer('127.0.0.1');
    await burst(rebound, c.relayForA, 1, 0xa, 3);
    expect(legA().latched).toEqual(rebound.endpoint);
    expect(c.b.media()).toHaveLength(2);
  });

  it('refuses a "rebinding" with a foreign SSRC or a jump in sequence', async () => {
    const c = await guardedCall({ guarded: { learnWindowMs: 100 } });
    await burst(c.a, c.relayForA, 3);
    await sleep(150);
    const fake = await peer('127.0.0.1');
    await burst(fake, c.relayForA, 5, 0xbad, 3);
    await burst(fake, c.relayForA, 5, 0xa, 5000);
    expect(legA().latched).toEqual(c.a.endpoint);
  });

  it('re-learns after new signalling once the old source has gone quiet', async () => {
    const c = await guardedCall({ guarded: { learnWindowMs: 100 } });
    await burst(c.a, c.relayForA, 3);
    await sleep(600);
    const moved = await peer('127.0.0.1');
    await burst(moved, c.relayForA, 3, 0x55);
    expect(legA().latched).toEqual(c.a.endpoint);
    relay.update({ callId: 'g1', tag: 'ta', signallingAddress: '127.0.0.1' });
    await burst(moved, c.relayForA, 3, 0x55);
    expect(legA().latched).toEqual(moved.endpoint);
  });

  it('guards the separate RTCP port the same way', async () => {
    const c = await guardedCall({}, false);
    const sprayer = await peer('127.0.0.3');
    for (let i = 0; i < 3; i++) sprayer.send(rtcpSr(0x666), c.relayRtcpForA);
    for (let i = 0; i < 3; i++) c.aRtcp.send(rtcpSr(0xa), c.relayRtcpForA);
    await waitFor(() => c.bRtcp.received.length === 1);
    await sleep(30);
    const rtcpPort = legA().streams[0]!.rtcp;
    expect(rtcpPort.latched).toEqual(c.aRtcp.endpoint);
    expect(c.bRtcp.received.every((r) => r.buf.readUInt32BE(4) === 0xa)).toBe(true);
  });
});
