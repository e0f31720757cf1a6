import { PortPool, PortPoolExhausted } from '../../src/media/port-pool';

describe('PortPool', () => {
  it('hands out even RTP ports with room for RTCP, each once', () => {
    const pool = new PortPool(30001, 30020);
    const got = new Set<number>();
    while (pool.inUse < pool.capacity) got.add(pool.take());
    expect(got.size).toBe(9);
    for (const p of got) {
      expect(p % 2).toBe(0);
      expect(p).toBeGreaterThanOrEqual(30001);
      expect(p + 1).toBeLessThanOrEqual(30020);
    }
  });

  it('throws PortPoolExhausted when full, and recovers a given-back port', () => {
    const pool = new PortPool(40000, 40003);
    const a = pool.take();
    pool.take();
    expect(() => pool.take()).toThrow(PortPoolExhausted);
    pool.give(a);
    expect(pool.take()).toBe(a);
  });

  it('is not sequential, so the next port cannot be guessed', () => {
    const pool = new PortPool(20000, 29999);
    const seq = Array.from({ length: 20 }, () => pool.take());
    const ascending = seq.every((p, i) => i === 0 || p === seq[i - 1]! + 2);
    expect(ascending).toBe(false);
  });

  it('ignores giving back a port it never handed out', () => {
    const pool = new PortPool(40000, 40003);
    pool.give(40000);
    pool.give(12345);
    expect(pool.capacity).toBe(2);
  });

  it('knows exactly which RTP and RTCP ports it holds, not the whole range', () => {
    const pool = new PortPool(40000, 40099);
    const p = pool.take();
    expect(pool.holds(p)).toBe(true);
    expect(pool.holds(p + 1)).toBe(true);
    expect(pool.holds(p === 40000 ? 40002 : 40000)).toBe(false);
    pool.give(p);
    expect(pool.holds(p)).toBe(false);
  });

  it('retires a port held elsewhere', () => {
    const pool = new PortPool(40000, 40003);
    const p = pool.take();
    pool.retire(p);
    expect(pool.capacity).toBe(1);
  });
});
