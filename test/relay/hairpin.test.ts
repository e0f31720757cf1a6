/**
 * A hairpinned call: A's call goes to the PBX, which routes it back through keylatch to B.
 * The relay must anchor it once: B is handed the PBX-facing leg of A's call, media crosses the
 * relay once, and the second call allocates no ports.
 */
import type { Relay } from '../../src/media/relay';
import { RelayError } from '../../src/media/relay';
import { Peer, keyFromSdp, mediaPorts, newRelay, prove, rtp, sdp, testPeers, waitFor } from '../helpers/peers';

const peer = testPeers();
let relay: Relay;
afterEach(async () => {
  await relay?.close();
});

/** A offers; the PBX bounces the relayed offer back to us for B. Returns what each side needs. */
async function bounced(): Promise<{ a: Peer; b: Peer; towardPbx: string }> {
  relay = newRelay();
  const a = await peer();
  const b = await peer();
  const towardPbx = (await relay.offer({ callId: 'call-a', fromTag: 'ta', sdp: sdp(a.address, a.port), offerer: { signallingAddress: '127.0.0.1' } })).sdp;
  return { a, b, towardPbx };
}

describe('hairpin', () => {
  it('finds the leg a bounced offer names, and nothing for SDP from anywhere else', async () => {
    const { b, towardPbx } = await bounced();
    const ref = relay.legAddressedBy(towardPbx);
    expect(ref?.callId).toBe('call-a');
    const pbxLeg = relay.stats('call-a')!.find((l) => l.tag !== 'ta')!;
    expect(ref?.legId).toBe(pbxLeg.legId);
    expect(relay.legAddressedBy(sdp(b.address, b.port))).toBeNull();
    // One of our own addresses, but a port no leg holds (ports are drawn at random: not simply +2,
    // which is the other leg's one time in fifty).
    const held = new Set(relay.stats('call-a')!.flatMap((l) => l.streams.flatMap((s) => [s.rtp.port, s.rtcp.port])));
    const free = Array.from({ length: 200 }, (_, i) => mediaPorts(towardPbx)[0]! - 100 + i * 2).find((p) => p > 1024 && !held.has(p) && !held.has(p + 1))!;
    expect(relay.legAddressedBy(sdp('127.0.0.1', free))).toBeNull();
  });

  it('anchors once: B gets the PBX leg, audio flows both ways through one relay hop, no new ports', async () => {
    const { a, b, towardPbx } = await bounced();
    const inUse = relay.pool.inUse;
    const ref = relay.legAddressedBy(towardPbx)!;
    const towardB = relay.adopt(ref, towardPbx, { policy: 'guarded', secure: false, signallingAddress: '127.0.0.1' }).sdp;
    expect(mediaPorts(towardB)).toEqual(mediaPorts(towardPbx));
    const backToPbx = relay.describeAdopted(ref, sdp(b.address, b.port), '127.0.0.1').sdp;
    expect(mediaPorts(backToPbx)).toEqual(mediaPorts(towardPbx));
    // The PBX relays B's answer to A's call: an echo of the leg's own ports must not move it.
    const towardA = (await relay.answer({ callId: 'call-a', fromTag: 'ta', toTag: 'pbx', sdp: backToPbx, answerer: { signallingAddress: '127.0.0.9' } })).sdp;
    expect(relay.pool.inUse).toBe(inUse);
    expect(relay.callCount).toBe(1);

    const relayForA = { address: '127.0.0.1', port: mediaPorts(towardA)[0]! };
    const relayForB = { address: '127.0.0.1', port: mediaPorts(towardB)[0]! };
    for (let i = 0; i < 10; i++) {
      a.send(rtp(i, i * 160, 0xa), relayForA);
      b.send(rtp(i, i * 160, 0xb), relayForB);
    }
    await waitFor(() => a.media().length >= 7 && b.media().length >= 7);
    expect(b.media().every((m) => m.readUInt32BE(8) === 0xa)).toBe(true);
    expect(a.media().every((m) => m.readUInt32BE(8) === 0xb)).toBe(true);
    const pbxLeg = relay.stats('call-a')!.find((l) => l.legId === ref.legId)!;
    expect(pbxLeg.latched).toEqual(b.endpoint);
  });

  it('gives a key client the leg with a key of its own, never in the SDP back to the PBX', async () => {
    const { a, b, towardPbx } = await bounced();
    const ref = relay.legAddressedBy(towardPbx)!;
    const towardB = relay.adopt(ref, towardPbx, { policy: 'key', secure: true, signallingAddress: '127.0.0.1' }).sdp;
    const key = keyFromSdp(towardB);
    expect(key?.legId).toBe(ref.legId);
    const backToPbx = relay.describeAdopted(ref, sdp(b.address, b.port, { keylatch: true }), '127.0.0.1').sdp;
    expect(backToPbx).not.toMatch(/key=/);
    const towardA = (await relay.answer({ callId: 'call-a', fromTag: 'ta', toTag: 'pbx', sdp: backToPbx })).sdp;
    expect(keyFromSdp(towardA)).toBeNull();

    const relayForB = { address: '127.0.0.1', port: mediaPorts(towardB)[0]! };
    b.send(rtp(1, 160, 0xb), relayForB);
    await new Promise((r) => setTimeout(r, 100));
    expect(a.media()).toHaveLength(0); // not before B proves its key
    await prove(b, relayForB, key!.legId, key!.key);
    for (let i = 0; i < 5; i++) b.send(rtp(i + 2, i * 160, 0xb), relayForB);
    await waitFor(() => a.media().length >= 5);
    expect(relay.stats('call-a')!.find((l) => l.legId === ref.legId)!.authenticated).toBe(true);
  });

  it('refuses to hand over an answered leg, a key over an insecure path; disown gives the leg back', async () => {
    const { b, towardPbx } = await bounced();
    const ref = relay.legAddressedBy(towardPbx)!;
    expect(() => relay.adopt(ref, towardPbx, { policy: 'key', secure: false })).toThrow(RelayError);
    relay.adopt(ref, towardPbx, { policy: 'guarded', secure: false, signallingAddress: '127.0.0.1' });
    expect(() => relay.adopt(ref, towardPbx, { policy: 'guarded', secure: false })).toThrow(/already answered or adopted/);
    relay.disown(ref, { policy: 'guarded', secure: false, signallingAddress: '127.0.0.9' });
    // The PBX answers the call itself after all: an ordinary answer moves the leg again.
    await relay.answer({ callId: 'call-a', fromTag: 'ta', toTag: 'vm', sdp: sdp(b.address, b.port) });
    expect(() => relay.adopt(ref, towardPbx, { policy: 'guarded', secure: false })).toThrow(/already answered/);
  });
});
