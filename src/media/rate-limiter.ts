/**
 * A token bucket per source IP, bounded in memory: when the table is full it starts over,
 * which at worst grants a spraying attacker one more burst, never unbounded growth.
 */
export class PerSourceRateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly perSecond: number, private readonly burst = Math.max(1, Math.ceil(perSecond / 2)), private readonly maxSources = 256) {}

  allow(ip: string, now: number): boolean {
    let b = this.buckets.get(ip);
    if (!b) {
      if (this.buckets.size >= this.maxSources) this.buckets.clear();
      b = { tokens: this.burst, at: now };
      this.buckets.set(ip, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) * this.perSecond) / 1000);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}
