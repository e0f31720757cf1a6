/**
 * Tone detection by the Goertzel algorithm: the power of one frequency in a block of samples,
 * without a whole FFT. Test phones, the plugin's recordings and the compose test call use it to
 * tell whose tone a recording holds, which loudness alone cannot.
 */
export function goertzelPower(samples: ArrayLike<number>, hz: number, rate = 8000): number {
  const coeff = 2 * Math.cos((2 * Math.PI * hz) / rate);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < samples.length; i++) {
    const s0 = samples[i]! + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  return (s1 * s1 + s2 * s2 - coeff * s1 * s2) / Math.max(1, samples.length);
}

/**
 * The share of a signal's energy that lies at `hz` (0..1): about 1 for a clean tone at that
 * frequency, near 0 for another tone or noise. G.711 and a jitter buffer leave a clean tone well
 * above 0.5.
 */
export function toneShare(samples: ArrayLike<number>, hz: number, rate = 8000): number {
  let energy = 0;
  for (let i = 0; i < samples.length; i++) energy += samples[i]! * samples[i]!;
  const mean = energy / Math.max(1, samples.length);
  // A pure tone of amplitude A has mean energy A²/2 and Goertzel power N·A²/4 per sample.
  return mean === 0 ? 0 : Math.min(1, (2 * goertzelPower(samples, hz, rate)) / (samples.length * mean));
}

/**
 * toneShare averaged over blocks (50 ms by default): what a listener hears, insensitive to the
 * phase jumps a jitter buffer leaves where it waits for late audio or drops excess (a single
 * Goertzel over seconds of audio adds those pieces with the wrong phase). Silent blocks count
 * as nothing of any tone.
 */
export function blockToneShare(samples: ArrayLike<number>, hz: number, rate = 8000, block = 400): number {
  let sum = 0;
  let n = 0;
  for (let at = 0; at + block <= samples.length; at += block) {
    sum += toneShare(Array.prototype.slice.call(samples, at, at + block) as number[], hz, rate);
    n++;
  }
  return n ? sum / n : 0;
}

/** The row and column tones (Hz) of each DTMF key: a key sounds both at once. */
export const DTMF_TONES: Readonly<Record<string, readonly [number, number]>> = Object.freeze(
  Object.fromEntries(['123A', '456B', '789C', '*0#D'].flatMap((row, r) => [...row].map((key, c) => [key, [[697, 770, 852, 941][r]!, [1209, 1336, 1477, 1633][c]!] as const]))),
);

/**
 * How loudly a DTMF key sounds anywhere in a recording: per block (50 ms by default) the lesser
 * of its two tones' shares (toneShare), the loudest block's. A key held for even one block gives
 * each of its tones a good share of that block; a voice, a test tone or the splatter of a jitter
 * buffer's jump rarely puts both of one key's frequencies in the same block.
 */
export function dtmfKeyPeak(samples: ArrayLike<number>, key: string, rate = 8000, block = 400): number {
  const tones = DTMF_TONES[key.toUpperCase()];
  if (!tones) throw new RangeError(`not a DTMF key: ${key}`);
  let peak = 0;
  for (let at = 0; at + block <= samples.length; at += block) {
    const part = Array.prototype.slice.call(samples, at, at + block) as number[];
    peak = Math.max(peak, Math.min(toneShare(part, tones[0], rate), toneShare(part, tones[1], rate)));
  }
  return peak;
}
