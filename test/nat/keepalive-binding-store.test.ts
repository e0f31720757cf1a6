/**
 * The learned keepalive interval lives on the binding: both stores keep it, the Redis one
 * through its JSON and schema, and a re-registration from the same NAT keeps it too.
 */
import { learnedKeepalive, newBindingId, type Binding } from '../../src/nat/binding';
import { MemoryBindingStore, type BindingStore } from '../../src/nat/binding-store';
import { RedisBindingStore } from '../../src/nat/redis-binding-store';
import { redisUnavailable, startRedis } from '../helpers/redis';

const noRedis = redisUnavailable();
if (noRedis) console.warn(`!!! SKIPPED Redis keepalive-field tests: ${noRedis}`);

const binding = (over: Partial<Binding> = {}): Binding => ({
  id: newBindingId(), aor: 'sip:carol@example.com', contact: '<sip:carol@192.168.1.30:5060>', instance: null,
  source: { address: '203.0.113.9', port: 40200 }, transport: 'udp', localSocket: 'udp/198.18.0.1:5060',
  lastSeen: Date.now(), expires: Date.now() + 60000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: Date.now() + 3600000, keylatch: false, ...over,
});

let redis: Awaited<ReturnType<typeof startRedis>> | null = null;
beforeAll(async () => {
  if (!noRedis) redis = await startRedis();
});
afterAll(async () => redis?.stop());

const stores: Array<[string, () => BindingStore]> = [['memory', () => new MemoryBindingStore()]];
if (!noRedis) stores.push(['redis', () => new RedisBindingStore(redis!.url, { prefix: `ka${Date.now()}:` })]);

describe.each(stores)('%s store and the learned keepalive interval', (_name, make) => {
  let store: BindingStore;
  beforeEach(() => (store = make()));
  afterEach(() => store.close());

  it('round-trips keepaliveIntervalMs and keepaliveFailedMs, and a binding without them stays without', async () => {
    const learned = binding({ keepaliveIntervalMs: 6000, keepaliveFailedMs: 15000 });
    const plain = binding();
    await Promise.all([store.put(learned), store.put(plain)]);
    expect(await store.get(learned.id)).toEqual(learned);
    const back = (await store.get(plain.id))!;
    expect(back).toEqual(plain);
    expect('keepaliveIntervalMs' in back).toBe(false);
    expect((await store.all()).find((b) => b.id === learned.id)).toEqual(learned);
  });
});

describe('learnedKeepalive (what a re-REGISTER keeps)', () => {
  it('keeps what was learned while the device stays behind the same public address, and drops it once it moves', () => {
    const b = binding({ keepaliveIntervalMs: 6000, keepaliveFailedMs: 15000 });
    expect(learnedKeepalive(b, '203.0.113.9')).toEqual({ keepaliveIntervalMs: 6000, keepaliveFailedMs: 15000 });
    expect(learnedKeepalive(b, '203.0.113.10')).toEqual({});
    expect(learnedKeepalive(null, '203.0.113.9')).toEqual({});
    expect(learnedKeepalive(binding(), '203.0.113.9')).toEqual({});
  });
});
