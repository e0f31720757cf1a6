import { tone, encodeG711, decodeG711 } from '../../src/codec/g711';
import { DTMF_TONES, dtmfKeyPeak, toneShare } from '../../src/codec/goertzel';

describe('toneShare', () => {
  const block = tone(440, 8000);
  it('finds a tone at its own frequency, through G.711', () => {
    expect(toneShare(decodeG711('PCMU', encodeG711('PCMU', block)), 440)).toBeGreaterThan(0.9);
  });
  it('does not find it at another frequency', () => {
    expect(toneShare(block, 1000)).toBeLessThan(0.01);
  });
  it('is zero for silence and low for noise', () => {
    expect(toneShare(new Int16Array(8000), 440)).toBe(0);
    const noise = Int16Array.from({ length: 8000 }, (_, i) => ((i * 7919) % 2000) - 1000);
    expect(toneShare(noise, 440)).toBeLessThan(0.2);
  });
  it('tells two tones mixed apart from either alone', () => {
    const high = tone(1000, 8000);
    const mixed = tone(440, 8000).map((v, i) => v / 2 + high[i]! / 2);
    expect(toneShare(mixed, 440)).toBeGreaterThan(0.35);
    expect(toneShare(mixed, 1000)).toBeGreaterThan(0.35);
  });
});

describe('dtmfKeyPeak', () => {
  /** Two phones' tones as a room's mix would hold them, with `key` sounded for 100 ms at the same level from 0.5 s on. */
  const mix = (key: string | null): Int16Array => {
    const a = tone(440, 8000, 0, 4000);
    const b = tone(2000, 8000, 0, 4000);
    const out = a.map((v, i) => v + b[i]!);
    if (key) {
      const [row, col] = DTMF_TONES[key]!;
      const low = tone(row, 800, 0, 4000);
      const high = tone(col, 800, 0, 4000);
      for (let i = 0; i < 800; i++) out[4000 + i] = out[4000 + i]! + low[i]! + high[i]!;
    }
    return decodeG711('PCMU', encodeG711('PCMU', out));
  };
  it('finds a key that sounds for 100 ms among two other tones, through G.711', () => {
    for (const key of ['1', '5', '#', 'D']) expect({ key, peak: dtmfKeyPeak(mix(key), key) > 0.15 }).toEqual({ key, peak: true });
  });
  it('finds no key in those tones alone, nor in silence', () => {
    for (const key of Object.keys(DTMF_TONES)) expect({ key, peak: dtmfKeyPeak(mix(null), key) < 0.02 }).toEqual({ key, peak: true });
    expect(dtmfKeyPeak(new Int16Array(8000), '5')).toBe(0);
  });
  it('does not take one tone of a key for the key', () => {
    const half = mix(null);
    const low = tone(770, 800, 0, 8000);
    for (let i = 0; i < 800; i++) half[4000 + i] = half[4000 + i]! + low[i]!;
    expect(dtmfKeyPeak(half, '5')).toBeLessThan(0.02);
  });
  it('knows the sixteen keys and refuses anything else', () => {
    expect(Object.keys(DTMF_TONES).sort().join('')).toBe('#*0123456789ABCD');
    expect(DTMF_TONES['0']).toEqual([941, 1336]);
    expect(() => dtmfKeyPeak(new Int16Array(400), 'x')).toThrow(RangeError);
  });
});
