/**
 * Did a recording hear a given tone? Scanning the voice band with the Goertzel filter
 * (src/codec/goertzel.ts) for the strongest frequency gives the tone a recording carries, and
 * the share of its energy there says whether it is a clean tone or noise that peaks somewhere.
 */
import { goertzelPower, toneShare } from '../../src/codec/goertzel';

export interface ToneFinding {
  /** The strongest frequency in the scanned band, Hz. */
  peakHz: number;
  /** The share of the block's mean-square energy at peakHz, 0..1 (a clean sine gives ~1). */
  purity: number;
  /** RMS of the block, in 16-bit sample units. */
  rms: number;
}

/**
 * The dominant frequency of a block: a coarse scan of 300..3400 Hz in 20 Hz steps over 50 ms
 * (whose Goertzel bins are about that wide, so no tone falls between steps), then a 1 Hz scan
 * around the best step over the whole block. The block is the middle `seconds` of the
 * recording, so the start and end of the call (ringing, the answer, the hangup) do not count.
 */
export function dominantTone(samples: Int16Array, rate = 8000, seconds = 2): ToneFinding {
  const len = Math.min(samples.length, Math.floor(rate * seconds));
  const start = Math.floor((samples.length - len) / 2);
  const block = samples.subarray(start, start + len);
  let energy = 0;
  for (const s of block) energy += s * s;
  const rms = len ? Math.sqrt(energy / len) : 0;
  const best = (part: Int16Array, from: number, to: number, step: number): number => {
    let bestHz = from;
    let bestPower = -1;
    for (let hz = from; hz <= to; hz += step) {
      const p = goertzelPower(part, hz, rate);
      if (p > bestPower) [bestHz, bestPower] = [hz, p];
    }
    return bestHz;
  };
  const coarse = best(block.subarray(0, Math.floor(rate / 20)), 300, 3400, 20);
  const peakHz = best(block, coarse - 20, coarse + 20, 1);
  return { peakHz, purity: toneShare(block, peakHz, rate), rms };
}

/** A recording "heard" `expectHz` when its dominant tone is within `toleranceHz` and clean. */
export function heardTone(f: ToneFinding, expectHz: number, toleranceHz = 10, minPurity = 0.5, minRms = 100): boolean {
  return Math.abs(f.peakHz - expectHz) <= toleranceHz && f.purity >= minPurity && f.rms >= minRms;
}
