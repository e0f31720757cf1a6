import { encodeHello, newLegKey } from '../../src/media/challenge';
import type { Relay } from '../../src/media/relay';
import { Peer, answerChallenges, keyFromSdp, mediaPorts, newRelay, prove, rtp, sdp, sleep, waitFor } from '../helpers/peers';

let relay: Relay;
const peers: Peer[] = [];
afterEach(async () => {
  peers.splice(0).forEach((p) => p.close());
  await relay?.close();
});

function stunWith(mutate: (b: Buffer) => Buffer): Buffer {
  return mutate(Buffer.from(encodeHello(newLegKey(), 'legid')));
}

const garbage: Array<[string, Buffer, 'malformed' | 'stun-invalid']> = [
  ['an empty datagram', Buffer.alloc(0), 'malformed'],
  ['one byte', Buffer.from([0x80]), 'malformed'],
  ['text', Buffer.from('INVITE sip:x SIP/2.0\r\n'), 'malformed'],
  ['RTP with version 1', (() => { const b = rtp(1, 1); b[0] = 0x40; return b; })(), 'malformed'],
  ['RTP truncated inside its header', rtp(1, 1).subarray(0, 9), 'malformed'],
  ['RTCP whose length overruns', (() => { const b = Buffer.alloc(8); b[0] = 0x80; b[1] = 200; b.writeUInt16BE(50, 2); return b; })(), 'malformed'],
  ['STUN truncated', stunWith((b) => b.subarray(0, 30)), 'stun-invalid'],
  ['STUN with a lying length', stunWith((b) => { b.writeUInt16BE(8, 2); return b; }), 'stun-invalid'],
  ['STUN with an overrunning attribute', stunWith((b) => { b.writeUInt16BE(0xfff0, 22); return b; }), 'stun-invalid'],
  ['STUN with an unknown required attribute', stunWith((b) => { b.writeUInt16BE(0x0006, 20); return b; }), 'stun-invalid'],
];

describe('bad input on media ports', () => {
  it('drops and counts every kind of garbage, and keeps serving the call', async () => {
    relay = newRelay();
    const [a, b, hostile] = await Promise.all([Peer.open(), Peer.open('127.0.0.2'), Peer.open('127.0.0.3')]);
    peers.push(a, b, hostile);
    const key = { policy: 'key' as const, secure: true };
    const offer = (await relay.offer({ callId: 'k', fromTag: 'a', sdp: sdp(a.address, a.port, { mux: true }), offerer: key, answerer: key })).sdp;
    const ans = (await relay.answer({ callId: 'k', fromTag: 'a', toTag: 'b', sdp: sdp(b.address, b.port, { mux: true }) })).sdp;
    const toA = { address: '127.0.0.1', port: mediaPorts(ans)[0]! };
    const toB = { address: '127.0.0.1', port: mediaPorts(offer)[0]! };
    const ka = keyFromSdp(ans)!;
    const kb = keyFromSdp(offer)!;
    await prove(a, toA, ka.legId, ka.key);
    await prove(b, toB, kb.legId, kb.key);
    answerChallenges(a, ka.legId, ka.key);

    for (const [, buf] of garbage) {
      hostile.send(buf, toA);
      a.send(buf, toA); // from the latched source too: garbage must not pass either way
    }
    await sleep(100);
    const expectMalformed = garbage.filter((g) => g[2] === 'malformed').length * 2;
    const expectStun = garbage.filter((g) => g[2] === 'stun-invalid').length * 2;
    expect(relay.drops.malformed).toBe(expectMalformed);
    expect(relay.drops['stun-invalid']).toBe(expectStun);
    expect(b.media()).toHaveLength(0);
    expect(hostile.received).toHaveLength(0);

    for (let i = 0; i < 5; i++) a.send(rtp(i, i * 160), toA);
    await waitFor(() => b.media().length === 5);
    expect(relay.stats('k')!.every((l) => l.authenticated)).toBe(true);
  });
});
