import { tone, encodeG711, decodeG711 } from '../../src/codec/g711';
import { toneShare } from '../../src/codec/goertzel';

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
