/**
 * G.711 (ITU-T G.711) μ-law and A-law, sample by sample. Tables would be faster; 20 ms frames
 * of 160 samples do not need it.
 */
const BIAS = 0x84;
const CLIP = 32635;

export function linearToUlaw(sample: number): number {
  let s = Math.max(-32768, Math.min(32767, Math.round(sample)));
  const sign = s < 0 ? 0x80 : 0;
  if (s < 0) s = -s;
  s = Math.min(s, CLIP) + BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (s & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (s >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
}

export function ulawToLinear(byte: number): number {
  const u = ~byte & 0xff;
  const t = (((u & 0x0f) << 3) + BIAS) << ((u & 0x70) >> 4);
  return u & 0x80 ? BIAS - t : t - BIAS;
}

export function linearToAlaw(sample: number): number {
  let s = Math.max(-32768, Math.min(32767, Math.round(sample)));
  const sign = s >= 0 ? 0x80 : 0;
  if (s < 0) s = -s - 1;
  s >>= 3;
  let exponent = 0;
  while (s > 0x1f && exponent < 7) {
    s >>= 1;
    exponent++;
  }
  const mantissa = exponent === 0 ? s >> 1 : s & 0x0f;
  return (sign | (exponent << 4) | (mantissa & 0x0f)) ^ 0x55;
}

export function alawToLinear(byte: number): number {
  const a = byte ^ 0x55;
  const exponent = (a & 0x70) >> 4;
  let t = ((a & 0x0f) << 4) + 8;
  if (exponent > 0) t = (t + 0x100) << (exponent - 1);
  return a & 0x80 ? t : -t;
}

export type G711Law = 'PCMU' | 'PCMA';

export function encodeG711(law: G711Law, pcm: Int16Array): Buffer {
  const enc = law === 'PCMU' ? linearToUlaw : linearToAlaw;
  const out = Buffer.allocUnsafe(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = enc(pcm[i]!);
  return out;
}

export function decodeG711(law: G711Law, payload: Buffer): Int16Array {
  const dec = law === 'PCMU' ? ulawToLinear : alawToLinear;
  const out = new Int16Array(payload.length);
  for (let i = 0; i < payload.length; i++) out[i] = dec(payload[i]!);
  return out;
}

/** Root mean square of a frame: tells a tone from silence. */
export function rms(pcm: Int16Array): number {
  let sum = 0;
  for (const s of pcm) sum += s * s;
  return pcm.length ? Math.sqrt(sum / pcm.length) : 0;
}

/** `samples` of a sine at `hz`, continuing from sample index `from`, 8 kHz. */
export function tone(hz: number, samples: number, from = 0, amplitude = 8000, rate = 8000): Int16Array {
  const out = new Int16Array(samples);
  for (let i = 0; i < samples; i++) out[i] = Math.round(amplitude * Math.sin((2 * Math.PI * hz * (from + i)) / rate));
  return out;
}
