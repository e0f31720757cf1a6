/**
 * What several edge processes split between them (src/edge-processes.ts): port slices that
 * never overlap, one keepalive owner per flow, listener ports per process, and the settings
 * they cannot run with.
 */
import type Srf from 'drachtio-srf';
import { ConfigError, loadConfig } from '../../src/config/load';
import { SIBLING_SECRET_ENV, combinedSummary, configForShare, ownsFlow, portSlice, shareFromEnv, siblingSecretOf, siblingSlices } from '../../src/edge-processes';
import { silentLogger } from '../../src/log';
import { newBindingId, type Binding } from '../../src/nat/binding';
import { MemoryBindingStore } from '../../src/nat/binding-store';
import { KeepaliveScheduler } from '../../src/nat/keepalive';

describe('edge process shares', () => {
  it.each([[2, 40000, 49999], [3, 30001, 30999], [5, 20000, 20020], [64, 10000, 65000]])('%i processes split %i-%i into disjoint even-aligned slices that cover it', (count, min, max) => {
    const slices = Array.from({ length: count }, (_, index) => portSlice(min, max, { index, count }));
    for (const [i, s] of slices.entries()) {
      expect(s.portMin % 2).toBe(0);
      expect(s.portMax - s.portMin).toBeGreaterThanOrEqual(1); // at least one RTP/RTCP pair
      if (i > 0) expect(s.portMin).toBe(slices[i - 1]!.portMax + 1);
    }
    expect(slices[0]!.portMin).toBe(min + (min % 2));
    expect(slices.at(-1)!.portMax).toBe(max);
  });

  it('names to each process the slices of all the others, and none of its own', () => {
    const all = [0, 1, 2].map((index) => portSlice(30000, 30999, { index, count: 3 }));
    expect(siblingSlices(30000, 30999, { index: 1, count: 3 })).toEqual([all[0], all[2]]);
    expect(siblingSlices(30000, 30999, { index: 0, count: 1 })).toEqual([]);
  });

  it('gives a process of several the supervisor\'s secret, and refuses to start one without it (an empty one included)', () => {
    expect(siblingSecretOf({ index: 0, count: 1 }, {})).toBeNull();
    expect(siblingSecretOf({ index: 1, count: 2 }, { [SIBLING_SECRET_ENV]: 's3cret' })).toBe('s3cret');
    expect(() => siblingSecretOf({ index: 1, count: 2 }, {})).toThrow(/edge process 1 has no KEYLATCH_EDGE_SIBLING_SECRET/);
    expect(() => siblingSecretOf({ index: 1, count: 2 }, { [SIBLING_SECRET_ENV]: '' })).toThrow(/has no/);
  });

  it('gives every binding exactly one keepalive owner, spread over the processes', () => {
    const count = 3;
    const owners = new Array<number>(count).fill(0);
    for (let i = 0; i < 3000; i++) {
      const id = newBindingId();
      const mine = [0, 1, 2].filter((index) => ownsFlow(id, { index, count }));
      expect(mine).toHaveLength(1);
      owners[mine[0]!]!++;
    }
    for (const n of owners) expect(n).toBeGreaterThan(800);
  });

  it('sends one keepalive per flow from two schedulers sharing a store', async () => {
    const sip = loadConfig({ env: {} }).sip;
    const store = new MemoryBindingStore();
    const now = Date.now();
    for (let i = 0; i < 50; i++) {
      const b: Binding = {
        id: newBindingId(), aor: `sip:u${i}@keylatch.test`, contact: `<sip:u${i}@10.0.0.1:5060>`, instance: null, source: { address: '203.0.113.5', port: 4000 + i },
        transport: 'udp', localSocket: 'udp/198.18.0.1:5060', lastSeen: now, expires: now + 60_000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: now + 3_600_000, keylatch: false,
      };
      await store.put(b);
    }
    const pinged: string[] = [];
    const schedulers = [0, 1].map((index) => new KeepaliveScheduler({
      srf: {} as Srf, store, sip, log: silentLogger, holdsFlow: (b) => ownsFlow(b.id, { index, count: 2 }),
      ping: async (b) => void pinged.push(b.id),
    }));
    await Promise.all(schedulers.map((s) => s.round()));
    expect(pinged).toHaveLength(50);
    expect(new Set(pinged).size).toBe(50);
  });

  it('moves the listeners of process i to port + i and leaves process 0 on the configured ones', () => {
    const config = loadConfig({ env: {}, overrides: { metrics: { listen: '127.0.0.1:9100' }, admin: { listen: '[::1]:9200' } } });
    expect(configForShare(config, { index: 0, count: 3 }).metrics.listen).toBe('127.0.0.1:9100');
    expect(configForShare(config, { index: 2, count: 3 }).metrics.listen).toBe('127.0.0.1:9102');
    expect(configForShare(config, { index: 2, count: 3 }).admin.listen).toBe('[::1]:9202');
    expect(configForShare(config, { index: 0, count: 1 })).toBe(config);
  });

  it('sums the processes up in one banner: shared lines once, per-process lines with every value', () => {
    const summary = combinedSummary([
      { 'SIP listeners': 'udp/1.2.3.4:5060', 'media relay': '1.2.3.4 ports 30000-34999', admin: 'http://127.0.0.1:9200/status' },
      { 'SIP listeners': 'udp/1.2.3.4:5060', 'media relay': '1.2.3.4 ports 35000-39999', admin: 'http://127.0.0.1:9201/status' },
    ], [101, 102]);
    expect(summary).toEqual({
      'edge processes': '2 (pids 101, 102) on one drachtio-server',
      'SIP listeners': 'udp/1.2.3.4:5060',
      'media relay': '1.2.3.4 ports 30000-34999; 1.2.3.4 ports 35000-39999',
      admin: 'http://127.0.0.1:9200/status; http://127.0.0.1:9201/status',
    });
  });

  it('reads its share from the supervisor and ignores one that cannot be', () => {
    expect(shareFromEnv({ KEYLATCH_EDGE_PROCESS: '1/4' })).toEqual({ index: 1, count: 4 });
    expect(shareFromEnv({ KEYLATCH_EDGE_PROCESS: '4/4' })).toBeNull();
    expect(shareFromEnv({})).toBeNull();
  });

  it('refuses several processes without a shared binding store or with too few ports; takes them with rooms', () => {
    const problems = (env: NodeJS.ProcessEnv): string => {
      try {
        loadConfig({ env });
        return '';
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
    };
    expect(problems({ KEYLATCH_SIP__PROCESSES: '2' })).toMatch(/sip\.bindingStore: several edge processes need a shared binding store/);
    const redis = { KEYLATCH_SIP__PROCESSES: '2', KEYLATCH_SIP__BINDING_STORE: 'redis://127.0.0.1:6379' };
    expect(problems(redis)).toBe('');
    expect(problems({ ...redis, KEYLATCH_ROOMS__ENABLED: 'true' })).toBe('');
    expect(problems({ ...redis, KEYLATCH_MEDIA__PORT_MIN: '30000', KEYLATCH_MEDIA__PORT_MAX: '30006' })).toMatch(/too small/);
    expect(problems({ KEYLATCH_SIP__PROCESSES: '0' })).toMatch(/sip\.processes/);
  });
});
