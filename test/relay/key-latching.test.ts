/**
 * Key-authenticated latching over real UDP on loopback, in the manner of rtpengine's
 * t/auto-daemon-tests: offer/answer, send from the right peer, the wrong port and the wrong
 * host, then assert forwarded or dropped.
 */
import type { Relay } from '../../src/media/relay';
import { ChallengeProver, decode, encodeHello, type Endpoint } from '../../src/media/challenge';
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
    const wrongPort = await peer('127.0.0.1');
    const wrongHost = await peer('127.0.0.3');
    for (let i = 0; i < 10; i++) {
      wrongPort.send(rtp(i, i * 160, 0xa), c.relayForA);
      wrongHost.send(rtp(i, i * 160, 0xa), c.relayForA);
      c.b.send(rtp(i, i * 160, 0xb), c.relayForB);
    }
    await waitFor(() => c.a.media().length === 10);
    await sleep(50);
    expect(c.b.media()).toHaveLength(0);
    expect(wrongPort.media()).toHaveLength(0);
    expect(wrongHost.media()).toHaveLength(0);
    // They are challenged (that is how a rebinding client gets back in), but cannot answer.
    expect(wrongHost.stun().length).toBeGreaterThan(0);
    expect(wrongHost.stun().length).toBeLessThanOrEqual(3);
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
    stranger.send(encodeHello('no-such-leg'), c.relayForA);
    await sleep(50);
    expect(stranger.received).toHaveLength(0);
    expect(c.relay.drops['unknown-leg']).toBe(1);
  });

  it('never answers with more bytes than it was sent', async () => {
    const c = await keyCall();
    const probe = await peer('127.0.0.3');
    probe.send(rtp(1, 1, 1, 4), c.relayForA); // a 16-byte RTP packet
    const shortHello = encodeHello(c.keyA.legId).subarray(0, 40);
    shortHello.writeUInt16BE(20, 2); // re-frame: a valid hello without padding
    probe.send(shortHello, c.relayForA);
    probe.send(rtp(2, 2, 1, 160), c.relayForA);
    await sleep(100);
    const sizes = probe.received.map((r) => r.buf.length);
    expect(sizes.length).toBe(1);
    expect(sizes[0]).toBeLessThanOrEqual(172);
  });

  it('rate-limits challenges per source', async () => {
    const c = await keyCall();
    const sprayer = await peer('127.0.0.3');
    for (let i = 0; i < 200; i++) sprayer.send(encodeHello(c.keyA.legId), c.relayForA);
    await sleep(150);
    expect(sprayer.stun().length).toBeLessThanOrEqual(5);
    expect(c.relay.drops['rate-limited']).toBeGreaterThan(190);
  });

  it('hands over to a new source only after it proves the key (NAT rebinding)', async () => {
    const c = await bothProved();
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
});
