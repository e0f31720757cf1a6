import type { Endpoint } from '../challenge';

/**
 * A source seen on this many streams within SPREAD_MS is spraying, not a phone. Two is enough:
 * every call has two legs, so a sprayer meets at least two streams, while a phone's media
 * socket talks to its own stream alone (and a phone moving to its next call has long been
 * latched, out of sight of this count, on the last one).
 */
const SPRAY_STREAMS = 2;
const SPREAD_MS = 2000;
const MAX_SOURCES = 8192;

/**
 * Relay-wide memory of which streams each unlatched source endpoint has sent to. A phone's
 * media socket talks to one relay stream; an RTP Bleed sprayer walks the port range, so its
 * endpoint turns up on many. Guarded latching never lets a spraying source win on the
 * strength of being the only stream on a port. Bounded: under a flood of spoofed sources the
 * oldest are forgotten, which only weakens this extra check, never the latch rules.
 */
export class SourceSpread {
  private readonly sources = new Map<string, { streams: number[]; at: number }>();

  /** Records that `from` sent to `stream` (its RTP port); true if `from` is spraying. */
  note(from: Endpoint, stream: number, now: number): boolean {
    const key = `${from.address}|${from.port}`;
    const seen = this.sources.get(key);
    if (!seen || now - seen.at > SPREAD_MS) {
      this.remember(key, { streams: [stream], at: now });
      return false;
    }
    if (!seen.streams.includes(stream) && seen.streams.length < SPRAY_STREAMS) seen.streams.push(stream);
    seen.at = now;
    return seen.streams.length >= SPRAY_STREAMS;
  }

  private remember(key: string, entry: { streams: number[]; at: number }): void {
    this.sources.delete(key);
    if (this.sources.size >= MAX_SOURCES) this.sources.delete(this.sources.keys().next().value!);
    this.sources.set(key, entry);
  }
}
