import { tone } from '../../../src/codec/g711';
import { readWav } from './wav';

export type PlaySource = { wav: string } | { toneHz: number } | { samples: Int16Array };

/**
 * Feeds 20 ms frames to `send` in real time, paced against the wall clock so that timer
 * lateness does not stretch the audio.
 */
export class FramePlayer {
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly frameSamples: number, private readonly frameMs: number, private readonly send: (frame: Int16Array) => void) {}

  /** Throws WavFormatError for a WAV that is not 8 kHz mono 16-bit, before anything plays. */
  start(source: PlaySource, opts: { loop?: boolean } = {}): void {
    this.stop();
    const samples = 'wav' in source ? readWav(source.wav) : 'samples' in source ? source.samples : null;
    const toneHz = 'toneHz' in source ? source.toneHz : 0;
    const startedAt = Date.now();
    let at = 0;
    let frames = 0;
    const tick = (): void => {
      if (samples && at >= samples.length) {
        if (!opts.loop) return this.stop();
        at = 0;
      }
      const frame = samples ? new Int16Array(this.frameSamples) : tone(toneHz, this.frameSamples, at);
      if (samples) frame.set(samples.subarray(at, at + this.frameSamples));
      at += this.frameSamples;
      this.send(frame);
      frames++;
      this.timer = setTimeout(tick, Math.max(0, startedAt + frames * this.frameMs - Date.now()));
    };
    tick();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
