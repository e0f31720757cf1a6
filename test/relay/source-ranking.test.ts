/**
 * Guarded latching when signalling names the wrong IP: the answer came through a proxy, so
 * received-from is a SIP hop and the SDP address is private (Kamailio's rtpengine module with
 * a PBX behind it). Candidates are ranked; a source nobody named locks only as the sole
 * plausible stream, and then strictly. Real UDP on loopback.
 */
import type { Endpoint } from '../../src/media/challenge';
import type { LegHints } from '../../src/media/call';
import { Rank, rankSource } from '../../src/media/latch/source-rank';
import type { Relay } from '../../src/media/relay';
import { Peer, mediaPorts, newRelay, rtp, sdp, sleep, testPeers, waitFor } from '../helpers/peers';

const peer = testPeers();
let relay: Relay | undefined;
afterEach(async () => {
  await relay?.close();
  relay = undefined;
});

const PROXY = '127.0.0.9'; // where the answer's signalling came from: not the phone
const LAN = '10.0.0.5'; // the callee's own idea of its address, behind its NAT

interface ProxiedCall {
  a: Peer;
  /** The callee as the relay sees it: an IP that neither received-from nor the SDP named. */
  b: Peer;
  toRelayFromA: Endpoint;
  toRelayFromB: Endpoint;
}

async function proxiedCall(callId = 'p1', hints: LegHints = {}, over: Parameters<typeof newRelay>[0] = {}): Promise<ProxiedCall> {
  relay ??= newRelay(over);
  const r = relay;
  const a = await peer('127.0.0.1');
  const b = await peer('127.0.0.2');
  const offer = await r.offer({ callId, fromTag: 'ta', sdp: sdp(a.address, a.port), offerer: { signallingAddress: '127.0.0.1' } });
  const answer = await r.answer({ callId, fromTag: 'ta', toTag: 'tb', sdp: sdp(LAN, 4000), answerer: { signallingAddress: PROXY, ...hints } });
  return {
    a, b,
    toRelayFromA: { address: '127.0.0.1', port: mediaPorts(answer.sdp)[0]! },
    toRelayFromB: { address: '127.0.0.1', port: mediaPorts(offer.sdp)[0]! },
  };
}

const legB = (callId = 'p1') => relay!.stats(callId)!.find((l) => l.tag === 'tb')!;

/** Paced like a phone (not a burst), so "continuing sequence" is what is tested, not timing. */
async function stream(from: Peer, to: Endpoint, n: number, ssrc: number, seq0 = 0, step = 1): Promise<void> {
  for (let i = 0; i < n; i++) from.send(rtp(seq0 + i * step, (seq0 + i * step) * 160, ssrc), to);
  await sleep(40);
}

describe('source ranking', () => {
  it('ranks an asserted media-address over a public SDP address over the SIP source over the rest', () => {
    const leg = { mediaAddress: null, trust: 'both' as const, signallingAddress: '198.51.100.7', sdpAddresses: ['203.0.113.9', '192.168.1.5'], learnedIp: null };
    expect(rankSource(leg, '203.0.113.9')).toBe(Rank.described);
    expect(rankSource(leg, '192.168.1.5')).toBe(Rank.signalled);
    expect(rankSource(leg, '198.51.100.7')).toBe(Rank.signalled);
    expect(rankSource(leg, '198.51.100.66')).toBe(Rank.unnamed);
    expect(rankSource({ ...leg, mediaAddress: '198.51.100.66' }, '198.51.100.66')).toBe(Rank.asserted);
    // media-address overrides both: the SDP and the SIP source are no longer named.
    expect(rankSource({ ...leg, mediaAddress: '198.51.100.66' }, '203.0.113.9')).toBe(Rank.unnamed);
    expect(rankSource({ ...leg, trust: 'sip-source' }, '198.51.100.7')).toBe(Rank.asserted);
    expect(rankSource({ ...leg, trust: 'sip-source' }, '203.0.113.9')).toBe(Rank.unnamed);
    expect(rankSource({ ...leg, trust: 'sdp' }, '198.51.100.7')).toBe(Rank.unnamed);
    expect(rankSource({ ...leg, learnedIp: '198.51.100.66' }, '198.51.100.66')).toBe(Rank.signalled);
  });

  it('locks the callee behind a proxy as the sole plausible stream, after twice the packets', async () => {
    const c = await proxiedCall();
    await stream(c.b, c.toRelayFromB, 5, 0xb);
    expect(legB().latched).toBeNull();
    await stream(c.b, c.toRelayFromB, 4, 0xb, 5);
    expect(legB().latched).toEqual(c.b.endpoint);
    for (let i = 0; i < 5; i++) c.a.send(rtp(i, i * 160, 0xa), c.toRelayFromA);
    await waitFor(() => c.b.media().length >= 3);
    expect(c.b.media().every((m) => m.readUInt32BE(8) === 0xa)).toBe(true);
    expect(c.a.media().length).toBe(4); // the one that locked, and those after
  });

  it('does not take a stream whose sequence jumps (a replay or a sprayer counting per round) for a phone', async () => {
    const c = await proxiedCall();
    await stream(c.b, c.toRelayFromB, 20, 0xb, 0, 50);
    expect(legB().latched).toBeNull();
    expect(relay!.drops['unexpected-source-ip']).toBe(20);
  });

  it('locks nothing when two plausible unnamed streams compete, and trusts neither for the rest of the call', async () => {
    const c = await proxiedCall();
    const rival = await peer('127.0.0.3');
    for (let i = 0; i < 8; i++) {
      c.b.send(rtp(i, i * 160, 0xb), c.toRelayFromB);
      rival.send(rtp(100 + i, i * 160, 0x666), c.toRelayFromB);
    }
    await sleep(40);
    await stream(c.b, c.toRelayFromB, 10, 0xb, 8);
    expect(legB().latched).toBeNull();
    expect(relay!.drops['ambiguous-source']).toBeGreaterThan(0);
    expect(c.a.received).toHaveLength(0);
    expect(rival.received).toHaveLength(0);
  });

  it('unlatches a leg it learned unnamed when a second plausible stream turns up in the window', async () => {
    const c = await proxiedCall();
    await stream(c.b, c.toRelayFromB, 6, 0xb);
    expect(legB().latched).toEqual(c.b.endpoint);
    const rival = await peer('127.0.0.3');
    await stream(rival, c.toRelayFromB, 6, 0x666);
    expect(legB().latched).toBeNull();
    expect(relay!.drops['ambiguous-source']).toBe(1);
    // Toward the leg nothing goes out any more: neither candidate gets the other side's audio.
    for (let i = 0; i < 5; i++) c.a.send(rtp(i, i * 160, 0xa), c.toRelayFromA);
    await sleep(60);
    expect(rival.received).toHaveLength(0);
  });

  it('ignores a source that walks the port range, so the phone still locks while it sprays', async () => {
    relay = newRelay();
    const other = await proxiedCall('p2');
    const c = await proxiedCall('p1');
    const sprayer = await peer('127.0.0.3');
    const ports = [c.toRelayFromA, c.toRelayFromB, other.toRelayFromA, other.toRelayFromB];
    for (let round = 0; round < 10; round++) {
      for (const to of ports) sprayer.send(rtp(round, round * 160, 0xbad), to);
      c.b.send(rtp(round, round * 160, 0xb), c.toRelayFromB);
      await sleep(5);
    }
    await sleep(40);
    expect(legB('p1').latched).toEqual(c.b.endpoint);
    expect(legB('p2').latched).toBeNull();
    expect(relay!.drops['spraying-source']).toBeGreaterThan(20);
    expect(sprayer.received).toHaveLength(0);
  });

  it('once learned, locks strictly: a later window opens only to the learned IP, which may rebind', async () => {
    const c = await proxiedCall();
    await stream(c.b, c.toRelayFromB, 6, 0xb);
    expect(legB().latched).toEqual(c.b.endpoint);
    await sleep(600); // the callee goes quiet (on hold), then signalling opens a new window
    relay!.update({ callId: 'p1', tag: 'tb' });
    const stranger = await peer('127.0.0.3');
    await stream(stranger, c.toRelayFromB, 12, 0x666);
    expect(legB().latched).toEqual(c.b.endpoint);
    const rebound = await peer('127.0.0.2'); // the callee's NAT gave it a new port
    await stream(rebound, c.toRelayFromB, 1, 0xb, 6);
    expect(legB().latched).toEqual(rebound.endpoint);
  });

  it('lets a source that signalling names later take an unnamed lock over inside the window', async () => {
    const c = await proxiedCall();
    const early = await peer('127.0.0.3'); // got there first, unnamed
    await stream(early, c.toRelayFromB, 6, 0x666);
    expect(legB().latched).toEqual(early.endpoint);
    relay!.update({ callId: 'p1', tag: 'tb', signallingAddress: '127.0.0.2' });
    await stream(c.b, c.toRelayFromB, 3, 0xb);
    expect(legB().latched).toEqual(c.b.endpoint);
  });

  it('with the ng caller\'s media-address, locks only that IP, never the sole stream', async () => {
    const c = await proxiedCall('p1', { mediaAddress: '127.0.0.4' });
    await stream(c.b, c.toRelayFromB, 12, 0xb);
    expect(legB().latched).toBeNull();
    const named = await peer('127.0.0.4');
    await stream(named, c.toRelayFromB, 3, 0xb);
    expect(legB().latched).toEqual(named.endpoint);
  });

  it('with strict-source, accepts only named IPs; with SIP-source-address, the SIP source is the phone', async () => {
    const strict = await proxiedCall('p1', { strictSource: true });
    await stream(strict.b, strict.toRelayFromB, 12, 0xb);
    expect(legB('p1').latched).toBeNull();
    const direct = await proxiedCall('p2', { signallingAddress: '127.0.0.2', trust: 'sip-source' });
    await stream(direct.b, direct.toRelayFromB, 3, 0xb);
    expect(legB('p2').latched).toEqual(direct.b.endpoint);
  });

  it('with sole-stream learning off, the proxied callee never latches (what the issue saw)', async () => {
    const c = await proxiedCall('p1', {}, { guarded: { soleStreamLearning: false } });
    await stream(c.b, c.toRelayFromB, 20, 0xb);
    expect(legB().latched).toBeNull();
    expect(relay!.drops['unexpected-source-ip']).toBe(20);
  });
});
