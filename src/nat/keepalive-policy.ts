import type { SipConfig } from '../config/schema';
import type { Binding } from './binding';

/**
 * How long keylatch lets a NATed UDP flow idle between keepalives, learned per flow.
 *
 * A NAT forgets an idle UDP mapping after a timeout keylatch cannot see. What it can see: a
 * keepalive sent after an idle gap of G went unanswered, and the same client (same public IP,
 * same Contact) then spoke again from a new public port. Its NAT had dropped the mapping, so
 * the timeout is below G. From then on the flow idles at most shortenFactor x G (not below
 * floorSec). A client that merely went quiet, or answered late, teaches nothing: only a new
 * mapping proves the NAT forgot the old one, and a new Contact means the phone itself changed.
 *
 * What the requirement "reachable at every moment after the first loss was learned from" asks,
 * and what it costs. The loss at gap G says only that the NAT's timeout T is below G. The
 * shortened interval (shortenFactor x G) and every interval it grows to (up to ceilingFactor x G)
 * stay below T exactly when T >= ceilingFactor x G; no interval above the floor is safe for
 * every T < G, and growth above any bound risks the outage it exists to avoid. So:
 *  - a flow nothing was learned from never grows past intervalSec (15 s: safe for 20 s NATs,
 *    the shortest in common use), so most phones never lose a mapping at all;
 *  - with the defaults (0.4, 0.5) a flow that lost one at 15 s is safe from then on behind any
 *    NAT of 7.5 s or more; a faster NAT costs one more loss, learned from in turn (the ceiling
 *    only falls), until the floor, below which keylatch will not go and says so in the log;
 *  - growth (lengthenFactor after lengthenAfter answers in a row) exists for the loss that was
 *    not the NAT's timeout (a router reboot, a reply lost just before a move), which would
 *    otherwise pin the flow at its shortest for good. The gap that failed is never tried again.
 */
export interface KeepalivePolicy {
  initialMs: number;
  floorMs: number;
  shortenFactor: number;
  ceilingFactor: number;
  lengthenAfter: number;
  lengthenFactor: number;
}

export interface LearnedInterval {
  intervalMs: number;
  /** The shortest idle gap known to have outlived the NAT mapping, or null. */
  failedMs: number | null;
}

export function policyFrom(k: SipConfig['keepalive']): KeepalivePolicy {
  return {
    initialMs: k.intervalSec * 1000,
    floorMs: k.floorSec * 1000,
    shortenFactor: k.shortenFactor,
    ceilingFactor: k.ceilingFactor,
    lengthenAfter: k.lengthenAfter,
    lengthenFactor: k.lengthenFactor,
  };
}

export function learnedOf(b: Pick<Binding, 'keepaliveIntervalMs' | 'keepaliveFailedMs'>, p: KeepalivePolicy): LearnedInterval {
  return { intervalMs: b.keepaliveIntervalMs ?? p.initialMs, failedMs: b.keepaliveFailedMs ?? null };
}

/** After a keepalive sent following `failedGapMs` idle found the mapping gone. */
export function afterMappingLost(now: LearnedInterval, failedGapMs: number, p: KeepalivePolicy): LearnedInterval {
  const failedMs = Math.min(now.failedMs ?? Infinity, failedGapMs);
  // The floor bounds what keylatch pays, but never lifts the interval up to a gap that failed.
  const shortened = Math.max(failedMs * p.shortenFactor, Math.min(p.floorMs, failedMs));
  return { intervalMs: Math.round(Math.min(now.intervalMs, shortened)), failedMs: Math.round(failedMs) };
}

/** The longest a flow may idle: the configured interval, and below any gap that failed on it. */
export function ceilingOf(now: LearnedInterval, p: KeepalivePolicy): number {
  return now.failedMs === null ? p.initialMs : Math.min(p.initialMs, now.failedMs * p.ceilingFactor);
}

/** After `answeredInARow` answered keepalives at the current interval: a longer one, or null to stay. */
export function afterAnswered(now: LearnedInterval, answeredInARow: number, p: KeepalivePolicy): LearnedInterval | null {
  if (now.failedMs === null || answeredInARow < p.lengthenAfter) return null;
  const ceiling = ceilingOf(now, p);
  if (now.intervalMs >= ceiling) return null;
  return { intervalMs: Math.round(Math.min(ceiling, now.intervalMs * p.lengthenFactor)), failedMs: now.failedMs };
}
