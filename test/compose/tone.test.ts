/** The test call's tone check (examples/testcall/tone.ts) on synthetic recordings. */
import { tone } from '../../src/codec/g711';
import { dominantTone, heardTone } from '../../examples/testcall/tone';

const noise = (n: number, amplitude: number, seed = 1): Int16Array => {
  let x = seed;
  return Int16Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return Math.round(((x / 0x7fffffff) * 2 - 1) * amplitude);
  });
};

describe('test call tone check', () => {
  it.each([600, 1000, 1007, 437, 3100])('finds a %d Hz tone within 1 Hz, clean', (hz) => {
    const f = dominantTone(tone(hz, 8000 * 3));
    expect(Math.abs(f.peakHz - hz)).toBeLessThanOrEqual(1);
    expect(f.purity).toBeGreaterThan(0.9);
    expect(heardTone(f, hz)).toBe(true);
  });

  it('a tone is not taken for another one', () => {
    expect(heardTone(dominantTone(tone(600, 8000 * 3)), 1000)).toBe(false);
  });

  it('noise and silence are not a tone', () => {
    expect(heardTone(dominantTone(noise(8000 * 3, 8000)), 1000)).toBe(false);
    const silent = dominantTone(new Int16Array(8000 * 3));
    expect(silent.rms).toBe(0);
    expect(heardTone(silent, 1000)).toBe(false);
  });

  it('a tone under noise still counts when it carries most of the energy, not when it drowns', () => {
    const mix = (t: Int16Array, n: Int16Array): Int16Array => t.map((v, i) => v + n[i]!);
    expect(heardTone(dominantTone(mix(tone(1000, 24000), noise(24000, 2000))), 1000)).toBe(true);
    expect(heardTone(dominantTone(mix(tone(1000, 24000, 0, 1000), noise(24000, 12000))), 1000)).toBe(false);
  });
});
