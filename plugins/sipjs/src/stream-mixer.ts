/**
 * For a keylatch room in forwarding mode (docs/rooms.md): the relay sends us every other
 * participant's RTP unchanged, each under its own SSRC, and we mix them here instead of the
 * relay. A few frames are queued per speaker (network jitter); every 20 ms one frame of each
 * speaker that has one is summed, clipped to 16 bits, and handed on as one stream. Per-speaker
 * levels come for free.
 */

/** Frames kept per speaker: enough for ordinary jitter, not so many that a burst turns into delay. */
const MAX_QUEUE = 5;
/** A speaker silent this long is forgotten (left the room, or muted at the relay). */
const FORGET_AFTER_MS = 2000;

export interface SpeakerStats {
  ssrc: number;
  packets: number;
  /** Level of the speaker's last frame in dBov (-∞ … 0; -96 for digital silence). */
  levelDbov: number;
  lastAt: number;
}

interface Speaker extends SpeakerStats {
  frames: Int16Array[];
}

export class StreamMixer {
  private readonly speakers = new Map<number, Speaker>();
  dropped = 0;

  push(ssrc: number, pcm: Int16Array, now: number): void {
    let s = this.speakers.get(ssrc);
    if (!s) {
      s = { ssrc, packets: 0, levelDbov: -96, lastAt: now, frames: [] };
      this.speakers.set(ssrc, s);
    }
    s.packets++;
    s.lastAt = now;
    s.levelDbov = dbov(pcm);
    s.frames.push(pcm);
    if (s.frames.length > MAX_QUEUE) {
      s.frames.shift();
      this.dropped++;
    }
  }

  /** One frame: the sum of the next frame of every speaker that has one, or null when nobody has. */
  mix(now: number, samples: number): Int16Array | null {
    let sum: Int32Array | null = null;
    for (const [ssrc, s] of this.speakers) {
      if (now - s.lastAt > FORGET_AFTER_MS) {
        this.speakers.delete(ssrc);
        continue;
      }
      const frame = s.frames.shift();
      if (!frame) continue;
      sum ??= new Int32Array(samples);
      for (let i = 0; i < Math.min(samples, frame.length); i++) sum[i]! += frame[i]!;
    }
    if (!sum) return null;
    const out = new Int16Array(samples);
    for (let i = 0; i < samples; i++) out[i] = Math.max(-32768, Math.min(32767, sum[i]!));
    return out;
  }

  stats(): SpeakerStats[] {
    return [...this.speakers.values()].map(({ ssrc, packets, levelDbov, lastAt }) => ({ ssrc, packets, levelDbov, lastAt }));
  }
}

function dbov(pcm: Int16Array): number {
  let e = 0;
  for (const v of pcm) e += v * v;
  const rms = Math.sqrt(e / Math.max(1, pcm.length));
  return rms < 1 ? -96 : Math.round(20 * Math.log10(rms / 32768) * 10) / 10;
}
