/** A worker's slice of media.portMin..portMax: its own pool, disjoint from every other's. */
export interface PortShare {
  portMin: number;
  portMax: number;
}

/**
 * Splits a port range into `n` disjoint shares of whole RTP/RTCP pairs (even RTP port, odd
 * RTCP port above it), as equal as the pair count allows. A pair never straddles two shares,
 * so no two workers can ever try to bind the same port.
 */
export function splitPortRange(min: number, max: number, n: number): PortShare[] {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`worker count must be a positive integer, not ${n}`);
  const first = min + (min % 2);
  const pairs = Math.floor((max - first + 1) / 2);
  if (pairs < n) throw new RangeError(`port range ${min}-${max} holds ${pairs} RTP/RTCP pairs: too few for ${n} workers (media.workers)`);
  const shares: PortShare[] = [];
  for (let i = 0; i < n; i++) {
    const from = Math.floor((i * pairs) / n);
    const to = Math.floor(((i + 1) * pairs) / n);
    shares.push({ portMin: first + 2 * from, portMax: first + 2 * to - 1 });
  }
  return shares;
}
