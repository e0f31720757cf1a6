import { alawToLinear, decodeG711, encodeG711, linearToAlaw, linearToUlaw, rms, tone, ulawToLinear } from '../../src/codec/g711';

describe('G.711', () => {
  it('encodes the reference points of μ-law and A-law', () => {
    expect(linearToUlaw(0)).toBe(0xff);
    expect(linearToUlaw(-1)).toBe(0x7f);
    expect(linearToUlaw(32767)).toBe(0x80);
    expect(linearToUlaw(-32768)).toBe(0x00);
    expect(linearToAlaw(0)).toBe(0xd5);
    expect(linearToAlaw(-1)).toBe(0x55);
    expect(linearToAlaw(32767)).toBe(0xaa);
  });

  it('round-trips every code word exactly, and any sample within the law step', () => {
    for (let b = 0; b < 256; b++) {
      expect(linearToUlaw(ulawToLinear(b))).toBe(b === 0x7f ? 0xff : b); // μ-law has two zeros
      expect(linearToAlaw(alawToLinear(b))).toBe(b);
    }
    for (let s = -32000; s <= 32000; s += 37) {
      const step = Math.max(16, Math.abs(s) / 16);
      expect(Math.abs(ulawToLinear(linearToUlaw(s)) - s)).toBeLessThanOrEqual(step);
      expect(Math.abs(alawToLinear(linearToAlaw(s)) - s)).toBeLessThanOrEqual(step);
    }
  });

  it('keeps a tone a tone and silence silent', () => {
    const t = tone(1000, 160);
    for (const law of ['PCMU', 'PCMA'] as const) {
      expect(rms(decodeG711(law, encodeG711(law, t)))).toBeGreaterThan(5000);
      expect(rms(decodeG711(law, encodeG711(law, new Int16Array(160))))).toBeLessThan(10);
    }
  });
});
