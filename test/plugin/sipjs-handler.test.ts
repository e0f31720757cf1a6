/**
 * The SIP.js plugin's session description handler, driven as SIP.js drives it, with the real
 * relay in between doing what the SIP edge does with each SDP: two plugin clients on key legs,
 * and the typed failures. The full SIP.js + drachtio + NAT runs are in test/nat/sipjs-*.test.ts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rms, tone } from '../../src/codec/g711';
import { readWav, type KeylatchPluginError } from '../../plugins/sipjs/src';
import { sleep, waitFor } from '../helpers/peers';
import { heard, pluginHandlers, type Handler } from '../helpers/plugin-handlers';

const ctx = pluginHandlers();
const { handler } = ctx;

const failures = (h: Handler): KeylatchPluginError[] => {
  const seen: KeylatchPluginError[] = [];
  h.media.on('failed', (e) => seen.push(e));
  return seen;
};

/** What the SIP edge does for an INVITE from a to b: offer through the relay, answer back. */
async function call(a: Handler, b: Handler, opts: { policy?: 'key' | 'guarded'; secure?: boolean; modifyAnswer?: (sdp: string) => string } = {}) {
  const policy = opts.policy ?? 'key';
  const secure = opts.secure ?? true;
  const offer = await a.getDescription();
  const toB = await ctx.relay.offer({ callId: 'c1', fromTag: 'ta', sdp: offer.body, offerer: { policy, secure, signallingAddress: '127.0.0.1' }, answerer: { policy, secure, signallingAddress: '127.0.0.1' } });
  await b.setDescription(toB.sdp);
  const answer = await b.getDescription();
  const toA = await ctx.relay.answer({ callId: 'c1', fromTag: 'ta', toTag: 'tb', sdp: answer.body });
  const modifiers = opts.modifyAnswer ? [async (d: { type: string; sdp?: string }) => ({ ...d, sdp: opts.modifyAnswer!(d.sdp!) })] : undefined;
  await a.setDescription(toA.sdp, undefined, modifiers as never);
  return { toA: toA.sdp, toB: toB.sdp };
}

describe('SIP.js plugin handler through the relay', () => {
  it('proves the key on both legs before media, then carries G.711 both ways (through the relay when direct media is off)', async () => {
    // Two plugin clients would move their media to the direct path (test/plugin/direct-media.test.ts); this is the relay's path.
    const a = handler({ direct: false });
    const b = handler({ direct: false });
    const aHeard = heard(a);
    const bHeard = heard(b);
    a.media.play({ toneHz: 1000 }, { loop: true });
    b.media.play({ toneHz: 440 }, { loop: true });
    const { toA } = await call(a, b);
    expect(toA).toMatch(/a=keylatch:v1 leg=\S+ key=\S+/);
    await waitFor(() => a.media.state === 'authenticated' && b.media.state === 'authenticated', 3000);
    await waitFor(() => aHeard.length > 20 && bHeard.length > 20, 3000);
    expect(rms(aHeard.at(-1)!)).toBeGreaterThan(1000);
    expect(rms(bHeard.at(-1)!)).toBeGreaterThan(1000);

    const stats = a.media.stats();
    const legs = ctx.relay.stats('c1')!;
    const legA = legs.find((l) => l.tag === 'ta')!;
    expect(legA.authenticated).toBe(true);
    expect(stats.state).toBe('authenticated');
    expect(stats.codec).toBe('PCMU');
    expect(stats.legId).toBe(legA.legId);
    // The mapping the relay vouched for is our own socket on loopback, and it is what the relay latched.
    expect(stats.mapping.rtp).toEqual(legA.latched);
    expect(Object.keys(stats.sources)).toEqual([`${stats.relay.rtp!.address}:${stats.relay.rtp!.port}`]);
    expect(stats.firstMediaMs).not.toBeNull();
    expect(stats.received.lost).toBe(0);
  });

  it('sends nothing before the proof: frames are dropped while proving', async () => {
    const a = handler();
    const b = handler();
    await call(a, b);
    expect(a.media.state).toBe('proving');
    expect(a.media.sendFrame(tone(1000, 160))).toBe(false);
    await waitFor(() => a.media.state === 'authenticated', 3000);
    expect(a.media.sendFrame(tone(1000, 160))).toBe(true);
    expect(a.media.stats().sent).toMatchObject({ packets: 1, dropped: 1 });
  });

  it('carries RFC 4733 DTMF and reports each digit once', async () => {
    const a = handler();
    const b = handler();
    const digits: string[] = [];
    b.media.on('dtmf', (d) => digits.push(d));
    await call(a, b);
    await waitFor(() => a.media.state === 'authenticated' && b.media.state === 'authenticated', 3000);
    expect(a.sendDtmf('12#', { duration: 60 })).toBe(true);
    await waitFor(() => digits.length === 3, 3000);
    await sleep(100);
    expect(digits).toEqual(['1', '2', '#']);
  });

  it('proves on the RTCP port too when rtcp-mux is declined', async () => {
    const a = handler({ rtcpMux: false });
    const b = handler({ rtcpMux: false });
    await call(a, b);
    await waitFor(() => a.media.state === 'authenticated', 3000);
    const s = a.media.stats();
    expect(s.mapping.rtcp).not.toBeNull();
    expect(s.relay.rtcp!.port).not.toBe(s.relay.rtp!.port);
  });

  it('holds with sendonly and keeps the latch', async () => {
    const a = handler();
    const b = handler();
    await call(a, b);
    await waitFor(() => a.media.state === 'authenticated' && b.media.state === 'authenticated', 3000);
    const reoffer = await a.getDescription({ hold: true });
    expect(reoffer.body).toMatch(/a=sendonly/);
    const toB = await ctx.relay.offer({ callId: 'c1', fromTag: 'ta', sdp: reoffer.body, offerer: { signallingAddress: '127.0.0.1' } });
    await b.setDescription(toB.sdp);
    const answer = await b.getDescription();
    expect(answer.body).toMatch(/a=recvonly/);
    await a.setDescription((await ctx.relay.answer({ callId: 'c1', fromTag: 'ta', toTag: 'tb', sdp: answer.body })).sdp);
    expect(b.media.sendFrame(tone(440, 160))).toBe(false);
    expect(a.media.sendFrame(tone(440, 160))).toBe(true);
    expect(a.media.state).toBe('authenticated');
  });

  it('takes an old-style hold (c=0.0.0.0) without losing the proved path', async () => {
    const a = handler();
    const b = handler();
    await call(a, b);
    await waitFor(() => a.media.state === 'authenticated', 3000);
    const relayBefore = a.media.stats().relay.rtp;
    const held = (await b.getDescription()).body.replace(/^c=IN IP4 .*$/gm, 'c=IN IP4 0.0.0.0').replace(/^o=- (\d+) (\d+)/m, 'o=- $1 99');
    await a.setDescription(held);
    await a.getDescription();
    expect(a.media.state).toBe('authenticated');
    expect(a.media.stats().relay.rtp).toEqual(relayBefore);
    expect(a.media.sendFrame(tone(440, 160))).toBe(false);
  });

  it('records what it hears to a WAV file that reads back as the tone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kl-plugin-'));
    try {
      const a = handler();
      const b = handler();
      const path = join(dir, 'heard.wav');
      b.media.record(path);
      a.media.play({ toneHz: 800 }, { loop: true });
      const bHeard = heard(b);
      await call(a, b);
      await waitFor(() => bHeard.length >= 25, 4000);
      b.media.stopRecording();
      const samples = readWav(path);
      expect(samples.length).toBeGreaterThanOrEqual(25 * 160);
      expect(rms(samples.subarray(-160 * 10))).toBeGreaterThan(1000);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SIP.js plugin handler: refusals are typed and reported', () => {
  it('a wrong key draws no reply at all (the relay is silent to what it cannot authenticate): reported, never latched', async () => {
    const a = handler({ proveTimeoutMs: 600 });
    const errors = failures(a);
    const flip = (sdp: string) => sdp.replace(/key=(\S)/, (_m, c: string) => `key=${c === 'A' ? 'B' : 'A'}`);
    await call(a, handler(), { modifyAnswer: flip });
    await waitFor(() => errors.length === 1, 3000);
    expect(errors[0]!.code).toBe('relay-unreachable');
    expect(errors[0]!.message).toMatch(/key is not the one it issued/);
    expect(ctx.relay.drops['hello-rejected']).toBeGreaterThan(0);
    expect(a.media.state).toBe('failed');
    expect(ctx.relay.stats('c1')!.find((l) => l.tag === 'ta')!.authenticated).toBe(false);
  });

  it('refuses a key that arrived over insecure signalling', async () => {
    const a = handler({ secureSignalling: false, transportName: 'WS' });
    const errors = failures(a);
    await expect(call(a, handler())).rejects.toMatchObject({ code: 'key-over-insecure-transport' });
    expect(errors.map((e) => e.code)).toEqual(['key-over-insecure-transport']);
    expect(a.media.state).toBe('idle');
  });

  it('reports a missing key when one is required', async () => {
    const a = handler({ requireKey: true, secureSignalling: false, transportName: 'WS' });
    const errors = failures(a);
    await expect(call(a, handler(), { policy: 'guarded', secure: false })).rejects.toMatchObject({ code: 'key-missing' });
    expect(errors).toHaveLength(1);
  });

  it('reports an unreachable relay', async () => {
    const a = handler({ proveTimeoutMs: 500 });
    const errors = failures(a);
    const dead = (sdp: string) => sdp.replace(/^m=audio \d+/m, 'm=audio 9').replace(/^a=rtcp:\d+/m, 'a=rtcp:9');
    await call(a, handler(), { modifyAnswer: dead });
    await waitFor(() => errors.length === 1, 3000);
    expect(errors[0]!.code).toBe('relay-unreachable');
  });

  it('rejects SDP it cannot use with a typed error, and keeps its state', async () => {
    const a = handler();
    await a.getDescription();
    await expect(a.setDescription('v=0\r\nnonsense')).rejects.toMatchObject({ code: 'bad-remote-sdp' });
    await expect(a.setDescription('v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n')).rejects.toMatchObject({ code: 'no-common-codec' });
    expect(a.media.state).toBe('idle');
  });
});
