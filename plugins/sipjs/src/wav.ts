import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';

/** The one format a G.711 call carries without resampling: 8 kHz, mono, 16-bit PCM. */
export const WAV_RATE = 8000;

export class WavFormatError extends Error {
  override name = 'WavFormatError';
}

/** Reads the samples of an 8 kHz mono 16-bit PCM WAV; anything else is refused with what it was. */
export function readWav(path: string): Int16Array {
  const b = readFileSync(path);
  if (b.length < 12 || b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new WavFormatError(`${path}: not a RIFF/WAVE file`);
  let fmt: { format: number; channels: number; rate: number; bits: number } | null = null;
  for (let at = 12; at + 8 <= b.length; ) {
    const id = b.toString('ascii', at, at + 4);
    const size = b.readUInt32LE(at + 4);
    const body = b.subarray(at + 8, Math.min(b.length, at + 8 + size));
    if (id === 'fmt ' && body.length >= 16) {
      fmt = { format: body.readUInt16LE(0), channels: body.readUInt16LE(2), rate: body.readUInt32LE(4), bits: body.readUInt16LE(14) };
    } else if (id === 'data') {
      if (!fmt) throw new WavFormatError(`${path}: data before fmt`);
      if (fmt.format !== 1 || fmt.channels !== 1 || fmt.rate !== WAV_RATE || fmt.bits !== 16) {
        throw new WavFormatError(`${path}: need 8000 Hz mono 16-bit PCM, got format ${fmt.format}, ${fmt.channels} ch, ${fmt.rate} Hz, ${fmt.bits} bit`);
      }
      // A WAV still being written (ours, or a streaming recorder's) says 0 or 0xFFFFFFFF here: take what is on disk.
      const data = size === 0 || size === 0xffffffff ? b.subarray(at + 8) : body;
      const samples = new Int16Array(Math.floor(data.length / 2));
      for (let i = 0; i < samples.length; i++) samples[i] = data.readInt16LE(i * 2);
      return samples;
    }
    at += 8 + size + (size & 1);
  }
  throw new WavFormatError(`${path}: no data chunk`);
}

function header(dataBytes: number): Buffer {
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'ascii');
  h.writeUInt32LE(36 + dataBytes, 4);
  h.write('WAVEfmt ', 8, 'ascii');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(WAV_RATE, 24);
  h.writeUInt32LE(WAV_RATE * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36, 'ascii');
  h.writeUInt32LE(dataBytes, 40);
  return h;
}

/** Streams samples to disk as they arrive, and fixes the sizes in the header on close. */
export class WavWriter {
  private fd: number | null;
  private bytes = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'w');
    writeSync(this.fd, header(0));
  }

  write(samples: Int16Array): void {
    if (this.fd === null) return;
    const b = Buffer.alloc(samples.length * 2);
    for (let i = 0; i < samples.length; i++) b.writeInt16LE(samples[i]!, i * 2);
    writeSync(this.fd, b);
    this.bytes += b.length;
  }

  close(): void {
    if (this.fd === null) return;
    writeSync(this.fd, header(this.bytes), 0, 44, 0);
    closeSync(this.fd);
    this.fd = null;
  }
}
