/**
 * Key-authenticated latching over real UDP on loopback, in the manner of rtpengine's
 * t/auto-daemon-tests: offer/answer, send from the right peer, the wrong port and the wrong
 * host, then assert forwarded or dropped.
 */
import type { Relay } from '../../src/media/relay';
import { ChallengeProver, HELLO_FLAG_DIRECT, decode, encodeHello, newLegKey, openRendezvous, type Endpoint, type PairGrant, type Rendezvous } from '../../src/media/challenge';
import { Peer, answerChallenges, keyFromSdp, mediaPorts, newRelay, prove, rtp, sdp, sleep, testPeers, waitFor } from '../helpers/peers';

interface KeyCall {
  relay: Relay;
  a: Peer;
  b: Peer;
  relayForA: Endpoint;
  relayForB: Endpoint;
  keyA: { legId: string; key: Buffer };
  keyB: { legId: string; key: Buffer };
}

const peer = testPeers();
let relay: Relay;
afterEach(async () => {
  await relay?.close();
});

async function keyCall(over: Parameters<typeof newRelay>[0] = {}): Promise<KeyCall> {
  relay = newRelay(over);
  const a = await peer();
  const b = await peer();
  const secureKey = { policy: 'key' as const, secure: true };
  const offer = await relay.offer({ callId: 'c1', fromTag: 'ta', sdp: sdp(a.address, a.port, { mux: true, keylatch: true }), offerer: secureKey, answerer: secureKey });
  const answer = await relay.answer({ callId: 'c1', fromTag: 'ta', toTag: 'tb', sdp: sdp(b.address, b.port, { mux: true, keylatch: true }) });
  const keyA = keyFromSdp(answer.sdp);
  const keyB = keyFromSdp(offer.sdp);
  if (!keyA || !keyB) throw new Error('relay put no key in SDP');
  return {
    relay, a, b, keyA, keyB,
    relayForA: { address: '127.0.0.1', port: mediaPorts(answer.sdp)[0]! },
    relayForB: { address: '127.0.0.1', port: mediaPorts(offer.sdp)[0]! },
  };
}

async function bothProved(): Promise<KeyCall> {
  const c = await keyCall();
  await prove(c.a, c.relayForA, c.keyA.legId, c.keyA.key);
  await prove(c.b, c.relayForB, c.keyB.legId, c.keyB.key);
  return c;
}

describe('key policy', () => {
  it('gives each leg its own key, only in the SDP toward that leg', async () => {
    const c = await keyCall();
    expect(c.keyA.legId).not.toBe(c.keyB.legId);
    expect(c.keyA.key.equals(c.keyB.key)).toBe(false);
  });

  it('forwards nothing to or from a leg until it has proved its key', async () => {
    const c = await keyCall();
    for (let i = 0; i < 5; i++) c.a.send(rtp(i, i * 160), c.relayForA);
    for (let i = 0; i < 5; i++) c.b.send(rtp(i, i * 160, 0x99), c.relayForB);
    await sleep(100);
    expect(c.a.media()).toHaveLength(0);
    expect(c.b.media()).toHaveLength(0);
    expect(c.relay.stats('c1')!.every((l) => !l.authenticated)).toBe(true);
  });

  it('latches proved sources and forwards both ways, from the port it receives on', async () => {
    const c = await bothProved();
    for (let i = 0; i < 10; i++) c.a.send(rtp(i, i * 160, 0xa), c.relayForA);
    for (let i = 0; i < 10; i++) c.b.send(rtp(i, i * 160, 0xb), c.relayForB);
    await waitFor(() => c.a.media().length === 10 && c.b.media().length === 10);
    expect(c.b.received.filter((r) => r.from.port === c.relayForB.port).length).toBeGreaterThanOrEqual(10);
    expect(c.b.media()[0]!.readUInt32BE(8)).toBe(0xa);
    const stats = c.relay.stats('c1')!;
    expect(stats.every((l) => l.authenticated)).toBe(true);
    expect(stats.find((l) => l.tag === 'ta')!.latched).toEqual(c.a.endpoint);
  });

  it('tells the client the mapping it observed', async () => {
    const c = await keyCall();
    const mapping = await prove(c.a, c.relayForA, c.keyA.legId, c.keyA.key);
    expect(mapping).toEqual(c.a.endpoint);
  });

  it('drops media from the wrong port and the wrong host, and sends them no media', async () => {
    const c = await bothProved();
    c.a.send(rtp(0, 0, 0xa), c.relayForA); // the leg's current SSRC is now known
    await waitFor(() => c.b.media().length === 1);
    const wrongPort = await peer('127.0.0.1');
    const wrongHost = await peer('127.0.0.3');
    const blind = await peer('127.0.0.4');
    for (let i = 1; i <= 10; i++) {
      wrongPort.send(rtp(i, i * 160, 0xa), c.relayForA);
      wrongHost.send(rtp(i, i * 160, 0xa), c.relayForA);
      blind.send(rtp(i, i * 160, 0xbad), c.relayForA);
      c.b.send(rtp(i, i * 160, 0xb), c.relayForB);
    }
    await waitFor(() => c.a.media().length === 10);
    await sleep(50);
    expect(c.b.media()).toHaveLength(1);
    expect(wrongPort.media()).toHaveLength(0);
    expect(wrongHost.media()).toHaveLength(0);
    // Media with the leg's SSRC from a new source is challenged (that is how a rebinding client
    // gets back in), but cannot answer; media with any other SSRC draws nothing at all.
    expect(wrongHost.stun().length).toBeGreaterThan(0);
    expect(wrongHost.stun().length).toBeLessThanOrEqual(5);
    expect(blind.received).toHaveLength(0);
  });

  it('a blind sprayer gets no reply at all: not to media, not to hellos without the key, not to garbage', async () => {
    const c = await bothProved();
    const sprayer = await peer('127.0.0.3');
    for (let i = 0; i < 50; i++) {
      for (const to of [c.relayForA, c.relayForB]) {
        sprayer.send(rtp(i, i * 160, 0xbad, 160), to);
        sprayer.send(Buffer.from([0x80, 200, 0, 1, 0, 0, 0x0b, 0xad]), to);
        sprayer.send(encodeHello(newLegKey(), c.keyA.legId), to);
        sprayer.send(encodeHello(newLegKey(), 'made-up-leg'), to);
        sprayer.send(Buffer.from('\x00\x01garbage'), to);
      }
    }
    await sleep(150);
    expect(sprayer.received).toHaveLength(0);
    expect(c.relay.drops['hello-rejected']).toBe(50);
  });

  it('a captured hello replayed from elsewhere draws nothing', async () => {
    const c = await keyCall();
    const attacker = await peer('127.0.0.3');
    const hello = new ChallengeProver(c.keyA.legId, c.keyA.key).hello();
    c.a.send(hello, c.relayForA);
    await waitFor(() => c.a.stun().length === 1);
    attacker.send(hello, c.relayForA);
    attacker.send(hello, c.relayForB);
    await sleep(50);
    expect(attacker.received).toHaveLength(0);
    expect(c.relay.drops['hello-rejected']).toBe(1); // on A's port, replayed; on B's port, the wrong leg
    expect(c.relay.drops['unknown-leg']).toBe(1);
  });

  it('refuses a proof replayed from another host', async () => {
    const c = await keyCall();
    const attacker = await peer('127.0.0.3');
    const proofs: Buffer[] = [];
    const prover = new ChallengeProver(c.keyA.legId, c.keyA.key);
    c.a.socket.on('message', (buf, r) => {
      const ev = prover.onMessage(decode(buf), { address: r.address, port: r.port });
      if (ev.type === 'proof-sent') proofs.push(ev.reply);
    });
    c.a.send(prover.hello(), c.relayForA);
    await waitFor(() => proofs.length === 1);
    attacker.send(proofs[0]!, c.relayForA);
    await sleep(50);
    expect(attacker.stun()).toHaveLength(0);
    c.a.send(proofs[0]!, c.relayForA); // the nonce is spent: the real client cannot reuse it either
    await sleep(50);
    expect(c.relay.stats('c1')!.find((l) => l.tag === 'ta')!.authenticated).toBe(false);
    expect(c.relay.drops['proof-rejected']).toBe(2);
  });

  it('refuses a proof for an expired nonce', async () => {
    const c = await keyCall({ key: { nonceTtlMs: 100 } });
    const prover = new ChallengeProver(c.keyA.legId, c.keyA.key);
    const proofs: Buffer[] = [];
    c.a.socket.on('message', (buf, r) => {
      const ev = prover.onMessage(decode(buf), { address: r.address, port: r.port });
      if (ev.type === 'proof-sent') proofs.push(ev.reply);
    });
    c.a.send(prover.hello(), c.relayForA);
    await waitFor(() => proofs.length === 1);
    await sleep(200);
    c.a.send(proofs[0]!, c.relayForA);
    await sleep(50);
    expect(c.relay.stats('c1')!.find((l) => l.tag === 'ta')!.latched).toBeNull();
    expect(c.relay.drops['proof-rejected']).toBe(1);
  });

  it('drops a hello for an unknown leg without a reply', async () => {
    const c = await keyCall();
    const stranger = await peer('127.0.0.3');
    stranger.send(encodeHello(c.keyA.key, 'no-such-leg'), c.relayForA);
    await sleep(50);
    expect(stranger.received).toHaveLength(0);
    expect(c.relay.drops['unknown-leg']).toBe(1);
  });

  it('never answers with more bytes than it was sent', async () => {
    const c = await keyCall();
    const probe = await peer('127.0.0.3');
    probe.send(rtp(1, 1, 1, 4), c.relayForA); // a 16-byte RTP packet
    // Re-framed without its padding: a valid hello, smaller than the challenge that would answer it.
    const full = encodeHello(c.keyA.key, c.keyA.legId);
    const unpadded = 20 + (4 + 16) + (4 + 8) + (4 + 4) + (4 + 32);
    const shortHello = Buffer.from(full.subarray(0, unpadded));
    shortHello.writeUInt16BE(unpadded - 20, 2);
    probe.send(shortHello, c.relayForA);
    probe.send(rtp(2, 2, 1, 160), c.relayForA);
    await sleep(100);
    const sizes = probe.received.map((r) => r.buf.length);
    expect(decode(shortHello).kind).toBe('hello');
    expect(sizes.length).toBe(0); // the 16-byte RTP and the short hello draw nothing; the 172-byte RTP has no known SSRC
    probe.send(encodeHello(c.keyA.key, c.keyA.legId), c.relayForA);
    await waitFor(() => probe.received.length === 1);
    expect(probe.received[0]!.buf.length).toBeLessThanOrEqual(172);
  });

  it('challenges small media with the leg SSRC only if the challenge is no larger', async () => {
    const c = await bothProved();
    c.a.send(rtp(0, 0, 0xa), c.relayForA);
    await waitFor(() => c.b.media().length === 1);
    const probe = await peer('127.0.0.3');
    probe.send(rtp(1, 1, 0xa, 4), c.relayForA); // 16 bytes, the leg's SSRC
    await sleep(50);
    expect(probe.received).toHaveLength(0);
    probe.send(rtp(2, 2, 0xa, 160), c.relayForA);
    await waitFor(() => probe.received.length === 1);
    const sizes = probe.received.map((r) => r.buf.length);
    expect(sizes[0]).toBeLessThanOrEqual(172);
  });

  it('rate-limits challenges per source', async () => {
    const c = await keyCall();
    const sprayer = await peer('127.0.0.3');
    // Someone who holds the key (or replays nothing: fresh counters) still gets at most 5 a second.
    for (let i = 0; i < 200; i++) sprayer.send(encodeHello(c.keyA.key, c.keyA.legId), c.relayForA);
    await sleep(150);
    expect(sprayer.stun().length).toBeLessThanOrEqual(5);
    expect(c.relay.drops['rate-limited']).toBeGreaterThan(190);
  });

  it('hands over to a new source only after it proves the key (NAT rebinding)', async () => {
    const c = await bothProved();
    c.a.send(rtp(99, 99 * 160, 0xa), c.relayForA); // the stream was flowing before the NAT rebound
    await waitFor(() => c.b.media().length === 1);
    c.b.clear();
    const rebound = await peer('127.0.0.1');
    const stop = answerChallenges(rebound, c.keyA.legId, c.keyA.key);
    const t0 = Date.now();
    let seq = 100;
    while (c.b.media().length === 0 && Date.now() - t0 < 1000) {
      rebound.send(rtp(seq, seq * 160, 0xa), c.relayForA);
      seq++;
      await sleep(20);
    }
    stop();
    const gap = Date.now() - t0;
    expect(c.b.media().length).toBeGreaterThan(0);
    expect(gap).toBeLessThan(1000);
    expect(c.relay.stats('c1')!.find((l) => l.tag === 'ta')!.latched).toEqual(rebound.endpoint);
    // Media toward A now goes to the new source, not the old one.
    c.b.send(rtp(1, 160, 0xb), c.relayForB);
    await waitFor(() => rebound.media().length === 1);
    expect(c.a.media()).toHaveLength(0);
  });

  it('re-challenges the latched source and drops it when it stops proving (consent)', async () => {
    const c = await keyCall({ key: { rechallengeIntervalMs: 100, consentTimeoutMs: 350 } });
    await prove(c.a, c.relayForA, c.keyA.legId, c.keyA.key);
    const stop = answerChallenges(c.a, c.keyA.legId, c.keyA.key);
    await sleep(500);
    expect(c.a.stun().length).toBeGreaterThanOrEqual(3); // re-challenges and successes
    expect(c.relay.stats('c1')!.find((l) => l.tag === 'ta')!.latched).toEqual(c.a.endpoint);
    stop();
    await waitFor(() => c.relay.stats('c1')!.find((l) => l.tag === 'ta')!.latched === null, 1500);
  });

  it('refuses the key policy over insecure signalling, keeping no state', async () => {
    relay = newRelay();
    await expect(
      relay.offer({ callId: 'c2', fromTag: 'x', sdp: sdp('127.0.0.1', 4000), answerer: { policy: 'key', secure: false } }),
    ).rejects.toThrow(/secure/);
    expect(relay.callCount).toBe(0);
    expect(relay.pool.inUse).toBe(0);
  });

  it('tells each client where the other is, with a pair key both open with their own leg keys', async () => {
    const c = await bothProved();
    const grants = (p: typeof c.a, key: Buffer): PairGrant[] =>
      p.stun().map((b) => decode(b)).filter((m): m is Rendezvous => m.kind === 'rendezvous').map((m) => openRendezvous(key, m)!).filter(Boolean);
    await waitFor(() => grants(c.a, c.keyA.key).length > 0 && grants(c.b, c.keyB.key).length > 0);
    const [ga, gb] = [grants(c.a, c.keyA.key).at(-1)!, grants(c.b, c.keyB.key).at(-1)!];
    expect(ga.peer).toEqual(c.b.endpoint);
    expect(gb.peer).toEqual(c.a.endpoint);
    expect(ga.pairKey.equals(gb.pairKey)).toBe(true);
    expect(ga.pairId).toBe(gb.pairId);
    expect([ga.side, gb.side]).toEqual(['a', 'b']);
    expect(c.relay.rendezvousSent).toBeGreaterThanOrEqual(2);
  });

  it('hears which path a client says its media takes, and keeps a call alive that only proves', async () => {
    const c = await keyCall({ key: { rechallengeIntervalMs: 100, consentTimeoutMs: 1000 }, timeouts: { mediaSec: 0.4, holdSec: 3600 } });
    const timeouts: unknown[] = [];
    c.relay.on('media-timeout', (t) => timeouts.push(t));
    await prove(c.a, c.relayForA, c.keyA.legId, c.keyA.key);
    await prove(c.b, c.relayForB, c.keyB.legId, c.keyB.key);
    const stops = [answerChallenges(c.a, c.keyA.legId, c.keyA.key), answerChallenges(c.b, c.keyB.legId, c.keyB.key)];
    c.a.send(new ChallengeProver(c.keyA.legId, c.keyA.key).hello(HELLO_FLAG_DIRECT), c.relayForA);
    await waitFor(() => c.relay.stats('c1')!.find((l) => l.tag === 'ta')!.mediaPath === 'direct');
    expect(c.relay.directCallCount).toBe(0);
    c.b.send(new ChallengeProver(c.keyB.legId, c.keyB.key).hello(HELLO_FLAG_DIRECT), c.relayForB);
    await waitFor(() => c.relay.directCallCount === 1);
    await sleep(800); // twice mediaSec with no media through the relay at all
    expect(timeouts).toHaveLength(0);
    stops.forEach((s) => s());
  });

  it('tells nobody anything when direct media is off', async () => {
    const c = await keyCall({ direct: { enabled: false } });
    await prove(c.a, c.relayForA, c.keyA.legId, c.keyA.key);
    await prove(c.b, c.relayForB, c.keyB.legId, c.keyB.key);
    await sleep(100);
    expect([...c.a.stun(), ...c.b.stun()].map((b) => decode(b).kind)).not.toContain('rendezvous');
    expect(c.relay.rendezvousSent).toBe(0);
  });
});
