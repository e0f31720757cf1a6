import { loadConfig } from '../../src/config/load';
import { configSchema } from '../../src/config/schema';
import { afterAnswered, afterMappingLost, ceilingOf, learnedOf, policyFrom } from '../../src/nat/keepalive-policy';

const defaults = loadConfig({ env: {} }).sip.keepalive;
const p = policyFrom(defaults);

describe('keepalive policy', () => {
  it('starts a flow nothing was learned from at intervalSec, which the defaults keep below a 20 s NAT', () => {
    expect(learnedOf({}, p)).toEqual({ intervalMs: defaults.intervalSec * 1000, failedMs: null });
    expect(defaults.intervalSec).toBeLessThanOrEqual(15);
    expect(learnedOf({ keepaliveIntervalMs: 7000, keepaliveFailedMs: 14000 }, p)).toEqual({ intervalMs: 7000, failedMs: 14000 });
  });

  it('shortens to shortenFactor x the gap that outlived the mapping, and remembers that gap', () => {
    expect(afterMappingLost({ intervalMs: 25000, failedMs: null }, 25000, p)).toEqual({ intervalMs: 10000, failedMs: 25000 });
    // A late keepalive (loaded box): the gap that really failed is what counts.
    expect(afterMappingLost({ intervalMs: 15000, failedMs: null }, 17000, p)).toEqual({ intervalMs: 6800, failedMs: 17000 });
  });

  it('never goes below the floor, and the floor never lifts it to a gap that failed', () => {
    expect(afterMappingLost({ intervalMs: 6000, failedMs: 15000 }, 6000, p)).toEqual({ intervalMs: 5000, failedMs: 6000 });
    expect(afterMappingLost({ intervalMs: 5000, failedMs: 6000 }, 5000, p)).toEqual({ intervalMs: 5000, failedMs: 5000 });
    // An interval configured below the floor (tests do that) is not raised to it.
    expect(afterMappingLost({ intervalMs: 2000, failedMs: null }, 2000, p).intervalMs).toBe(2000);
  });

  it('only ever lowers what it learned: a second, longer failure changes nothing', () => {
    const once = afterMappingLost({ intervalMs: 15000, failedMs: null }, 15000, p);
    expect(afterMappingLost(once, 16000, p)).toEqual(once);
  });

  it('lengthens a learned interval only after lengthenAfter answers, by lengthenFactor, up to ceilingFactor x the failed gap', () => {
    let now = afterMappingLost({ intervalMs: 25000, failedMs: null }, 25000, p);
    expect(afterAnswered(now, p.lengthenAfter - 1, p)).toBeNull();
    const seen = [now.intervalMs];
    for (let next = afterAnswered(now, p.lengthenAfter, p); next; next = afterAnswered(now, p.lengthenAfter, p)) {
      expect(next.intervalMs).toBeGreaterThan(now.intervalMs);
      expect(next.intervalMs).toBeLessThanOrEqual(Math.round(now.intervalMs * p.lengthenFactor));
      now = next;
      seen.push(now.intervalMs);
    }
    expect(seen).toEqual([10000, 11000, 12100, 12500]);
    expect(ceilingOf(now, p)).toBe(12500);
    expect(now.failedMs).toBe(25000);
  });

  it('never lengthens past intervalSec, nor a flow that never failed', () => {
    expect(afterAnswered({ intervalMs: 15000, failedMs: null }, 1000, p)).toBeNull();
    // Lost after a 40 s gap (a stalled scheduler): 0.5 x 40 s is 20 s, but intervalSec caps it at 15 s.
    const stalled = afterMappingLost({ intervalMs: 15000, failedMs: null }, 40000, p);
    expect(stalled).toEqual({ intervalMs: 15000, failedMs: 40000 });
    expect(ceilingOf(stalled, p)).toBe(p.initialMs);
    expect(afterAnswered(stalled, 100, p)).toBeNull();
  });

  it('validates the keys: factors in (0, 1), the ceiling not below the shortening', () => {
    const base = loadConfig({ env: {} });
    const withKeepalive = (k: object) => configSchema.safeParse({ ...base, sip: { ...base.sip, keepalive: { ...base.sip.keepalive, ...k } } }).success;
    expect(withKeepalive({})).toBe(true);
    expect(withKeepalive({ shortenFactor: 1 })).toBe(false);
    expect(withKeepalive({ ceilingFactor: 0.3 })).toBe(false);
    expect(withKeepalive({ lengthenFactor: 1 })).toBe(false);
    expect(withKeepalive({ floorSec: 0 })).toBe(false);
  });
});
