/** The pure parts of the relay workers: port shares and call placement. */
import { Placement, homeWorker } from '../../src/media/cluster/placement';
import { splitPortRange } from '../../src/media/cluster/port-shares';
import { resolveWorkers } from '../../src/media/cluster/relay-cluster';

describe('splitPortRange', () => {
  it('splits into disjoint shares of whole even/odd pairs covering the range', () => {
    const shares = splitPortRange(30001, 30100, 3); // odd start: the first pair is 30002/30003
    expect(shares).toEqual([
      { portMin: 30002, portMax: 30033 },
      { portMin: 30034, portMax: 30065 },
      { portMin: 30066, portMax: 30099 }, // 49 pairs: 16, 16, 17
    ]);
    for (const s of shares) {
      expect(s.portMin % 2).toBe(0);
      expect(s.portMax % 2).toBe(1);
    }
    for (let i = 1; i < shares.length; i++) expect(shares[i]!.portMin).toBe(shares[i - 1]!.portMax + 1);
  });

  it('refuses more workers than pairs, naming the setting', () => {
    expect(() => splitPortRange(30000, 30005, 4)).toThrow(/3 RTP\/RTCP pairs: too few for 4 workers \(media.workers\)/);
    expect(() => splitPortRange(30000, 30005, 0)).toThrow(RangeError);
  });
});

describe('placement', () => {
  it('homes a call-id on the same worker every time, and spreads call-ids about evenly', () => {
    expect(homeWorker('abc@host', 4)).toBe(homeWorker('abc@host', 4));
    const counts = [0, 0];
    for (let i = 0; i < 2000; i++) counts[homeWorker(`${i}-call@pbx.example`, 2)]!++;
    expect(Math.min(...counts)).toBeGreaterThan(900);
  });

  it('keeps a call where it was placed, moves new calls off a dead worker, and forgets a dead worker\'s calls', () => {
    const p = new Placement(2);
    const up = new Set([0, 1]);
    const alive = (w: number) => up.has(w);
    const ids = Array.from({ length: 20 }, (_, i) => `c${i}`);
    for (const id of ids) expect(p.place(id, alive)).toBe(homeWorker(id, 2));
    const on0 = ids.filter((id) => p.of(id) === 0);
    expect(p.callsOn(0)).toBe(on0.length);
    up.delete(0);
    expect(p.forgetWorker(0)).toBe(on0.length);
    expect(p.callsOn(0)).toBe(0);
    expect(p.place('new-while-0-is-down', alive)).toBe(1);
    up.add(0);
    // Back up: a call placed on 1 meanwhile stays there even if its home is 0.
    expect(p.route('new-while-0-is-down', alive)).toBe(1);
    expect(p.place('nobody', () => false)).toBeNull();
    p.forget('new-while-0-is-down');
    expect(p.of('new-while-0-is-down')).toBeUndefined();
  });

  it('resolves "auto" to one worker per core', () => {
    expect(resolveWorkers('auto', 2)).toBe(2);
    expect(resolveWorkers('auto', 0)).toBe(1);
    expect(resolveWorkers(3, 2)).toBe(3);
  });
});

describe('WorkerRelay', () => {
  it('refuses to send to any port of the whole range on its own address, not only its own share', async () => {
    const { WorkerRelay } = await import('../../src/media/cluster/worker-relay');
    const { testMediaConfig } = await import('../helpers/peers');
    const media = testMediaConfig();
    const [mine, sibling] = splitPortRange(media.portMin, media.portMax, 2);
    const relay = new WorkerRelay({ ...media, ...mine! }, { portMin: media.portMin, portMax: media.portMax });
    try {
      expect(relay.denied('127.0.0.1', sibling!.portMin + 2)).toBe('relay-port');
      expect(relay.denied('127.0.0.2', sibling!.portMin + 2)).toBeNull(); // another host's port of that number
      expect(relay.denied('127.0.0.1', media.portMax + 1)).toBeNull();
    } finally {
      await relay.close();
    }
  });
});
