import {
  ChallengeProver,
  ChallengeVerifier,
  HELLO_SIZE,
  MAX_SEALED_SIZE,
  ProtocolError,
  computeMac,
  decode,
  HELLO_FLAG_DIRECT,
  ReplayWindow,
  encodeHello,
  encodeRendezvous,
  encodeSealed,
  nextCounter,
  openRendezvous,
  type Hello,
  type Rendezvous,
  looksLikeStun,
  newLegId,
  newLegKey,
  type Endpoint,
  type Sealed,
} from '../../src/media/challenge';

const client: Endpoint = { address: '203.0.113.7', port: 40002 };
const K = newLegKey();
const other: Endpoint = { address: '203.0.113.66', port: 40002 };

function setup(now = () => 1000) {
  const legId = newLegId();
  const key = newLegKey();
  const verifier = new ChallengeVerifier({ legId, key, nonceTtlMs: 3000, now });
  const prover = new ChallengeProver(legId, key);
  return { legId, key, verifier, prover };
}

function prove(prover: ChallengeProver, challenge: Buffer, from: Endpoint = { address: '198.18.0.1', port: 30000 }): Sealed {
  const ev = prover.onMessage(decode(challenge), from);
  if (ev.type !== 'proof-sent') throw new Error(`prover did not answer: ${JSON.stringify(ev)}`);
  return decode(ev.reply) as Sealed;
}

describe('framing', () => {
  it('is STUN per RFC 7983: first byte 0..3 and the magic cookie', () => {
    const hello = encodeHello(K, newLegId());
    expect(hello[0]).toBeLessThan(4);
    expect(hello.readUInt32BE(4)).toBe(0x2112a442);
    expect(looksLikeStun(hello)).toBe(true);
    expect(hello.length).toBe(HELLO_SIZE);
    expect(hello.readUInt16BE(2)).toBe(HELLO_SIZE - 20);
  });

  it('round-trips every message kind, IPv4 and IPv6', () => {
    const key = newLegKey();
    const legId = 'A'.repeat(64);
    for (const observed of [client, { address: '2001:db8::1:2', port: 7 }, { address: '::ffff:198.18.0.9', port: 9 }]) {
      for (const kind of ['challenge', 'proof', 'success'] as const) {
        const nonce = Buffer.alloc(16, 7);
        const buf = encodeSealed(key, kind, { legId, nonce, observed });
        expect(buf.length).toBeLessThanOrEqual(MAX_SEALED_SIZE);
        const msg = decode(buf) as Sealed;
        expect(msg).toMatchObject({ kind, legId, observed });
        expect(msg.mac.equals(computeMac(key, kind, legId, nonce, observed))).toBe(true);
      }
    }
    expect(decode(encodeHello(key, legId, { counter: 7n, flags: 1 }))).toMatchObject({ kind: 'hello', legId, counter: 7n, flags: 1 });
  });

  it('keeps every reply no larger than the smallest hello', () => {
    expect(MAX_SEALED_SIZE).toBeLessThanOrEqual(HELLO_SIZE);
  });

  it.each([
    ['empty', Buffer.alloc(0)],
    ['truncated header', encodeHello(K, 'abc').subarray(0, 19)],
    ['length field too long', (() => { const b = encodeHello(K, 'abc'); b.writeUInt16BE(b.readUInt16BE(2) + 4, 2); return b; })()],
    ['length not a multiple of 4', (() => { const b = encodeHello(K, 'abc'); b.writeUInt16BE(b.readUInt16BE(2) - 1, 2); return b.subarray(0, b.length - 1); })()],
    ['bad cookie', (() => { const b = encodeHello(K, 'abc'); b.writeUInt32BE(1, 4); return b; })()],
    ['attribute overrunning', (() => { const b = encodeHello(K, 'abc'); b.writeUInt16BE(4000, 22); return b; })()],
    ['unknown comprehension-required attribute', (() => { const b = encodeHello(K, 'abc'); b.writeUInt16BE(0x0001, 20); return b; })()],
    ['a STUN binding request', (() => { const b = Buffer.alloc(20); b.writeUInt16BE(1, 0); b.writeUInt32BE(0x2112a442, 4); return b; })()],
    ['leg id with forbidden bytes', (() => { const b = encodeHello(K, 'abc'); b[24] = 0x20; return b; })()],
  ])('rejects %s with ProtocolError', (_name, buf) => {
    expect(() => decode(buf)).toThrow(ProtocolError);
  });

  it('rejects sealed messages missing nonce or with a short MAC', () => {
    const buf = encodeSealed(newLegKey(), 'proof', { legId: 'x', nonce: Buffer.alloc(16), observed: client });
    const noNonce = Buffer.from(buf);
    noNonce.writeUInt16BE(0xc0ff, 28); // rename the NONCE attribute
    expect(() => decode(noNonce)).toThrow(/NONCE/);
  });
});

describe('ChallengeVerifier and ChallengeProver', () => {
  it('latches a source that proves the key and tells it its mapping', () => {
    const { verifier, prover } = setup();
    const proof = prove(prover, verifier.challenge(client));
    const verdict = verifier.verify(proof, client);
    expect(verdict.ok).toBe(true);
    if (!verdict.ok) return;
    const ev = prover.onMessage(decode(verdict.success), { address: '198.18.0.1', port: 30000 });
    expect(ev).toEqual({ type: 'latched', mapping: client, mappingChanged: false });
    expect(prover.externalMapping).toEqual(client);
  });

  it('uses a fresh 128-bit nonce every time', () => {
    const { verifier } = setup();
    const nonces = new Set(Array.from({ length: 50 }, () => (decode(verifier.challenge(client)) as Sealed).nonce.toString('hex')));
    expect(nonces.size).toBe(50);
  });

  it('refuses a replayed proof: a nonce is single-use', () => {
    const { verifier, prover } = setup();
    const proof = prove(prover, verifier.challenge(client));
    expect(verifier.verify(proof, client).ok).toBe(true);
    expect(verifier.verify(proof, client)).toEqual({ ok: false, reason: 'unknown-nonce' });
  });

  it('refuses an expired nonce', () => {
    let t = 1000;
    const { verifier, prover } = setup(() => t);
    const proof = prove(prover, verifier.challenge(client));
    t += 3001;
    expect(verifier.verify(proof, client)).toEqual({ ok: false, reason: 'expired-nonce' });
  });

  it('refuses a proof sent from a source other than the one challenged', () => {
    const { verifier, prover } = setup();
    const proof = prove(prover, verifier.challenge(client));
    expect(verifier.verify(proof, other)).toEqual({ ok: false, reason: 'wrong-source' });
  });

  it('refuses a proof made with another key', () => {
    const { legId, verifier } = setup();
    const challenge = decode(verifier.challenge(client)) as Sealed;
    const forged = decode(encodeSealed(newLegKey(), 'proof', { legId, nonce: challenge.nonce, observed: client })) as Sealed;
    expect(verifier.verify(forged, client)).toEqual({ ok: false, reason: 'bad-mac' });
  });

  it('refuses a challenge MAC presented as a proof (labels differ)', () => {
    const { verifier } = setup();
    const challenge = decode(verifier.challenge(client)) as Sealed;
    expect(verifier.verify({ ...challenge, kind: 'proof' }, client)).toEqual({ ok: false, reason: 'bad-mac' });
  });

  it('bounds outstanding nonces, evicting the oldest', () => {
    const legId = newLegId();
    const key = newLegKey();
    const verifier = new ChallengeVerifier({ legId, key, nonceTtlMs: 3000, maxOutstanding: 4 });
    const prover = new ChallengeProver(legId, key);
    const first = prove(prover, verifier.challenge(client));
    for (let i = 0; i < 4; i++) verifier.challenge(client);
    expect(verifier.verify(first, client)).toEqual({ ok: false, reason: 'unknown-nonce' });
  });

  it('the prover answers no challenge without a valid MAC, so it is no signing oracle', () => {
    const { legId, prover } = setup();
    const forged = encodeSealed(newLegKey(), 'challenge', { legId, nonce: Buffer.alloc(16, 1), observed: other });
    expect(prover.onMessage(decode(forged), other)).toEqual({ type: 'ignored', reason: 'challenge MAC invalid' });
  });

  it('the prover believes no success for a nonce it never proved', () => {
    const { legId, key, prover } = setup();
    const success = encodeSealed(key, 'success', { legId, nonce: Buffer.alloc(16, 3), observed: other });
    expect(prover.onMessage(decode(success), other).type).toBe('ignored');
    expect(prover.externalMapping).toBeNull();
  });

  it('reports a changed mapping on a later success', () => {
    const { verifier, prover } = setup();
    const first = verifier.verify(prove(prover, verifier.challenge(client)), client);
    if (!first.ok) throw new Error('first proof failed');
    prover.onMessage(decode(first.success), client);
    const second = verifier.verify(prove(prover, verifier.challenge(other)), other);
    if (!second.ok) throw new Error('second proof failed');
    expect(prover.onMessage(decode(second.success), other)).toEqual({ type: 'latched', mapping: other, mappingChanged: true });
  });

  it('works peer to peer: two clients sharing a key verify each other', () => {
    const legId = newLegId();
    const key = newLegKey();
    const a = { verifier: new ChallengeVerifier({ legId, key, nonceTtlMs: 3000 }), prover: new ChallengeProver(legId, key) };
    const b = { verifier: new ChallengeVerifier({ legId, key, nonceTtlMs: 3000 }), prover: new ChallengeProver(legId, key) };
    const aAddr = { address: '198.18.1.1', port: 5000 };
    const bAddr = { address: '198.18.2.2', port: 6000 };
    expect(b.verifier.verify(prove(a.prover, b.verifier.challenge(aAddr)), aAddr).ok).toBe(true);
    expect(a.verifier.verify(prove(b.prover, a.verifier.challenge(bAddr)), bAddr).ok).toBe(true);
  });
});

describe('revision 2: keyed hellos', () => {
  it('answers a hello only under the right key, and each counter once', () => {
    const { legId, key, verifier, prover } = setup();
    const hello = decode(prover.hello(HELLO_FLAG_DIRECT)) as Hello;
    expect(verifier.checkHello(hello)).toEqual({ ok: true, flags: HELLO_FLAG_DIRECT });
    expect(verifier.checkHello(hello)).toEqual({ ok: false, reason: 'replayed' });
    expect(verifier.checkHello(decode(encodeHello(newLegKey(), legId)) as Hello)).toEqual({ ok: false, reason: 'bad-mac' });
    const tamperedFlags = { ...(decode(encodeHello(key, legId)) as Hello), flags: 7 };
    expect(verifier.checkHello(tamperedFlags)).toEqual({ ok: false, reason: 'bad-mac' });
    expect(verifier.checkHello(decode(encodeHello(key, 'other-leg')) as Hello)).toEqual({ ok: false, reason: 'wrong-leg' });
  });

  it('forged hellos do not use up the replay window', () => {
    const { legId, key, verifier } = setup();
    const good = decode(encodeHello(key, legId)) as Hello;
    for (let i = 0; i < 100; i++) verifier.checkHello(decode(encodeHello(newLegKey(), legId, { counter: good.counter + BigInt(i + 1) })) as Hello);
    expect(verifier.checkHello(good).ok).toBe(true);
  });

  it('the replay window takes counters slightly out of order and refuses ones older than it remembers', () => {
    const w = new ReplayWindow(4);
    expect([5n, 3n, 4n, 6n].map((c) => w.accept(c))).toEqual([true, true, true, true]);
    expect(w.accept(4n)).toBe(false);
    expect(w.accept(7n)).toBe(true); // evicts 3
    expect(w.accept(2n)).toBe(false);
    expect(w.accept(3n)).toBe(false); // forgotten, but older than all it remembers
  });

  it('counters keep rising even when the clock does not', () => {
    const a = nextCounter(1000);
    const b = nextCounter(1000);
    const c = nextCounter(999);
    expect(b > a && c > b).toBe(true);
  });
});

describe('revision 2: rendezvous', () => {
  const peer: Endpoint = { address: '198.18.0.12', port: 4000 };
  const grantFor = (pairKey = newLegKey()) => ({ pairId: newLegId(), side: 'b' as const, pairKey, peer });

  it('carries the peer mapping and a pair key that only the leg key opens', () => {
    const { legId, key, prover } = setup();
    const grant = grantFor();
    const buf = encodeRendezvous(key, legId, grant);
    expect(buf.includes(grant.pairKey)).toBe(false); // never in clear
    const msg = decode(buf) as Rendezvous;
    expect(openRendezvous(key, msg)).toEqual(grant);
    expect(openRendezvous(newLegKey(), msg)).toBeNull();
    expect(prover.onMessage(msg, client)).toEqual({ type: 'rendezvous', grant });
  });

  it('is refused when tampered with, replayed or older than the last one', () => {
    const { legId, key, prover } = setup();
    const first = decode(encodeRendezvous(key, legId, grantFor())) as Rendezvous;
    const second = decode(encodeRendezvous(key, legId, grantFor())) as Rendezvous;
    const movedPeer = { ...first, peer: { address: '198.18.0.66', port: 4000 } };
    expect(prover.onMessage(movedPeer, client).type).toBe('ignored');
    const flippedKey = { ...first, wrappedKey: Buffer.from(first.wrappedKey).fill(0, 12, 20) };
    expect(openRendezvous(key, flippedKey)).toBeNull();
    expect(prover.onMessage(second, client).type).toBe('rendezvous');
    expect(prover.onMessage(first, client)).toEqual({ type: 'ignored', reason: 'stale rendezvous' });
    expect(prover.onMessage(second, client)).toEqual({ type: 'ignored', reason: 'stale rendezvous' });
  });

  it('round-trips IPv6 peers', () => {
    const { legId, key } = setup();
    const grant = { ...grantFor(), peer: { address: '2001:db8::7', port: 9 }, side: 'a' as const };
    expect(openRendezvous(key, decode(encodeRendezvous(key, legId, grant)) as Rendezvous)).toEqual(grant);
  });
});
