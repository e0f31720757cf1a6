/**
 * Direct media between two plugin clients on loopback, with the real relay as rendezvous: the
 * relay names each client's peer, they prove the pair key to each other, and media leaves the
 * relay. Real NATs, rebinding and attackers are in test/nat/direct-media.test.ts.
 */
import { toneShare } from '../../src/codec/goertzel';
import type { LegOptions } from '../../src/media/call';
import { sleep, waitFor } from '../helpers/peers';
import { heard, joined, pluginHandlers, type Handler } from '../helpers/plugin-handlers';

const ctx = pluginHandlers();
const { handler } = ctx;

/** The SIP edge's part, for an INVITE from a to b with both legs on the key policy. */
async function call(a: Handler, b: Handler, legs: Partial<LegOptions> = {}): Promise<void> {
  const opts: LegOptions = { policy: 'key', secure: true, signallingAddress: '127.0.0.1', ...legs };
  const toB = await ctx.relay.offer({ callId: 'c1', fromTag: 'ta', sdp: (await a.getDescription()).body, offerer: opts, answerer: opts });
  await b.setDescription(toB.sdp);
  const toA = await ctx.relay.answer({ callId: 'c1', fromTag: 'ta', toTag: 'tb', sdp: (await b.getDescription()).body });
  await a.setDescription(toA.sdp);
}

describe('direct media between two plugin clients', () => {
  it('moves media off the relay once both directions are proved, with each tone heard by the other', async () => {
    const a = handler();
    const b = handler();
    a.media.play({ toneHz: 1000 }, { loop: true });
    b.media.play({ toneHz: 600 }, { loop: true });
    const aHeard = heard(a);
    const bHeard = heard(b);
    const paths: string[] = [];
    a.media.on('path', (p) => paths.push(p));
    await call(a, b);
    await waitFor(() => a.media.stats().path.path === 'direct' && b.media.stats().path.path === 'direct', 3000);
    // The relay heard of it through the clients' keyed hellos.
    await waitFor(() => ctx.relay.directCallCount === 1, 2000);
    expect(ctx.relay.stats('c1')!.map((l) => l.mediaPath)).toEqual(['direct', 'direct']);

    const forwardedAtSwitch = ctx.relay.totals().packetsOut;
    const heardAtSwitch = [aHeard.length, bHeard.length];
    await sleep(1000);
    // About 50 frames a second each way, none of them through the relay.
    expect(aHeard.length - heardAtSwitch[0]!).toBeGreaterThan(35);
    expect(bHeard.length - heardAtSwitch[1]!).toBeGreaterThan(35);
    expect(ctx.relay.totals().packetsOut - forwardedAtSwitch).toBe(0);
    expect(toneShare(joined(aHeard.slice(-25)), 600)).toBeGreaterThan(0.5);
    expect(toneShare(joined(aHeard.slice(-25)), 1000)).toBeLessThan(0.1);
    expect(toneShare(joined(bHeard.slice(-25)), 1000)).toBeGreaterThan(0.5);

    const s = a.media.stats();
    const bPort = b.media.localMedia('sendrecv').rtpPort;
    expect(s.path).toMatchObject({ path: 'direct', switches: 1, peer: { address: '127.0.0.1', port: bPort } });
    expect(s.sources[`127.0.0.1:${bPort}`]).toBeGreaterThan(35);
    expect(s.path.firstDirectMs).not.toBeNull();
    expect(s.path.firstDirectMs!).toBeLessThan(1000);
    // No audible gap at the switch: the largest silence between two packets stays small.
    expect(s.received.maxGapMs).toBeLessThan(100);
    expect(paths).toEqual(['direct']);
    // The relay's ports stay until the call ends, and the relay path stays proved as the fallback.
    expect(ctx.relay.stats('c1')!.every((l) => l.authenticated)).toBe(true);
  });

  it('stays on the relay when signalling says no (direct=no for the call): no rendezvous at all', async () => {
    const a = handler();
    const b = handler();
    a.media.play({ toneHz: 1000 }, { loop: true });
    const bHeard = heard(b);
    await call(a, b, { direct: false });
    await waitFor(() => bHeard.length > 25, 3000);
    await sleep(300);
    expect(ctx.relay.rendezvousSent).toBe(0);
    expect(a.media.stats().path).toMatchObject({ path: 'relay', attempts: 0 });
    expect(ctx.relay.totals().packetsOut).toBeGreaterThan(25);
  });

  it('stays on the relay when the other client keeps media on the relay: probes go unanswered, audio flows', async () => {
    const a = handler();
    const b = handler({ direct: false });
    b.media.play({ toneHz: 600 }, { loop: true });
    const aHeard = heard(a);
    await call(a, b);
    await waitFor(() => aHeard.length > 40, 3000);
    const s = a.media.stats();
    expect(ctx.relay.rendezvousSent).toBeGreaterThan(0);
    expect(s.path.path).toBe('relay');
    expect(s.path.probesSent).toBeGreaterThan(0);
    expect(s.path.probesSent).toBeLessThanOrEqual(40);
    expect(toneShare(joined(aHeard.slice(-25)), 600)).toBeGreaterThan(0.5);
  });
});
