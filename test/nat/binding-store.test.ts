/** The same contract for both stores; the Redis one against a real redis-server. */
import Redis from 'ioredis';
import type { Binding } from '../../src/nat/binding';
import { newBindingId, sameDevice } from '../../src/nat/binding';
import { MemoryBindingStore, type BindingStore } from '../../src/nat/binding-store';
import { RedisBindingStore } from '../../src/nat/redis-binding-store';
import { redisUnavailable, startRedis } from '../helpers/redis';

const noRedis = redisUnavailable();
if (noRedis) console.warn(`!!! SKIPPED Redis binding store tests: ${noRedis}`);

function binding(over: Partial<Binding> = {}): Binding {
  return {
    id: newBindingId(), aor: 'sip:alice@example.com', contact: '<sip:alice@192.168.1.20:5060;transport=udp>', instance: null,
    source: { address: '203.0.113.7', port: 40112 }, transport: 'udp', localSocket: 'udp/198.18.0.1:5060',
    lastSeen: Date.now(), expires: Date.now() + 60000, natted: true, natTests: ['private-contact', 'contact-port-differs'], secure: false, upstreamExpires: Date.now() + 3600000, keylatch: false, ...over,
  };
}

let redis: Awaited<ReturnType<typeof startRedis>> | null = null;
beforeAll(async () => {
  if (!noRedis) redis = await startRedis();
});
afterAll(async () => redis?.stop());

let prefixN = 0;
const stores: Array<[string, () => BindingStore]> = [['memory', () => new MemoryBindingStore()]];
if (!noRedis) stores.push(['redis', () => new RedisBindingStore(redis!.url, { prefix: `t${prefixN++}:` })]);

describe.each(stores)('%s binding store', (_name, make) => {
  let store: BindingStore;
  beforeEach(() => (store = make()));
  afterEach(() => store.close());

  it('stores, finds by id and AOR, replaces and removes', async () => {
    const a = binding();
    const b = binding({ contact: '<sip:alice@10.0.0.9>' });
    const bob = binding({ aor: 'sip:bob@example.com' });
    await Promise.all([store.put(a), store.put(b), store.put(bob)]);
    expect(await store.get(a.id)).toEqual(a);
    expect((await store.byAor(a.aor)).map((x) => x.id).sort()).toEqual([a.id, b.id].sort());
    await store.put({ ...a, source: { address: '203.0.113.7', port: 40999 } });
    expect((await store.get(a.id))!.source.port).toBe(40999);
    expect(await store.remove(a.id)).toBe(true);
    expect(await store.remove(a.id)).toBe(false);
    expect(await store.get(a.id)).toBeNull();
    expect((await store.byAor(a.aor)).map((x) => x.id)).toEqual([b.id]);
  });

  it('finds a binding put again under another AOR only under the new one', async () => {
    const a = binding();
    await store.put(a);
    await store.put({ ...a, aor: 'sip:carol@example.com' });
    expect(await store.byAor(a.aor)).toEqual([]);
    expect((await store.byAor('sip:carol@example.com')).map((x) => x.id)).toEqual([a.id]);
    await store.remove(a.id);
    expect(await store.byAor('sip:carol@example.com')).toEqual([]);
  });

  it('lists what has expired for the sweeper', async () => {
    const old = binding({ expires: Date.now() - 1000 }); // lapsed, but within Redis's grace period
    const fresh = binding({ expires: Date.now() + 90000 });
    await store.put(old);
    await store.put(fresh);
    expect((await store.expired(Date.now())).map((x) => x.id)).toEqual([old.id]);
    expect((await store.all()).length).toBe(2);
  });

  it('hands out copies: mutating a result changes nothing stored', async () => {
    const a = binding();
    await store.put(a);
    const got = (await store.get(a.id))!;
    got.source.port = 1;
    expect((await store.get(a.id))!.source.port).toBe(40112);
  });

  it('lists a page of bindings, soonest to expire first, with the total', async () => {
    const now = Date.now();
    const late = binding({ expires: now + 90000 });
    const soon = binding({ expires: now + 10000, aor: 'sip:bob@example.com' });
    const mid = binding({ expires: now + 50000, transport: 'tls', secure: true });
    await Promise.all([store.put(late), store.put(soon), store.put(mid)]);
    expect(await store.list({ limit: 10 })).toEqual({ total: 3, bindings: [soon, mid, late] });
    expect(await store.list({ limit: 2 })).toEqual({ total: 3, bindings: [soon, mid] });
    expect(await store.list({ limit: 0 })).toEqual({ total: 3, bindings: [] });
    await store.remove(soon.id);
    expect(await store.list({ limit: 1 })).toEqual({ total: 2, bindings: [mid] });
  });
});

(noRedis ? describe.skip : describe)('redis binding store across instances', () => {
  it('shares bindings between keylatch instances and keeps them across a restart', async () => {
    const first = new RedisBindingStore(redis!.url, { prefix: 'shared:' });
    const second = new RedisBindingStore(redis!.url, { prefix: 'shared:' });
    const a = binding({ expires: Date.now() + 60000 });
    await first.put(a);
    expect(await second.get(a.id)).toEqual(a);
    await first.close();
    const restarted = new RedisBindingStore(redis!.url, { prefix: 'shared:' });
    expect(await restarted.byAor(a.aor)).toEqual([a]);
    await Promise.all([second.close(), restarted.close()]);
  });

  it('skips a corrupt record instead of failing, and leaves the rest readable', async () => {
    const store = new RedisBindingStore(redis!.url, { prefix: 'corrupt:' });
    const good = binding();
    const bad = binding();
    await store.put(good);
    await store.put(bad);
    const raw = new Redis(redis!.url);
    await raw.set(`corrupt:b:${bad.id}`, '{"id": 5, "not": "a binding"');
    expect((await store.byAor(good.aor)).map((x) => x.id)).toEqual([good.id]);
    expect(await store.get(bad.id)).toBeNull();
    raw.disconnect();
    await store.close();
  });

  it('lets Redis drop a binding a grace period after it expires', async () => {
    const store = new RedisBindingStore(redis!.url, { prefix: 'ttl:', graceMs: 100 });
    const a = binding({ expires: Date.now() + 100 });
    await store.put(a);
    await new Promise((r) => setTimeout(r, 400));
    expect(await store.get(a.id)).toBeNull();
    await store.close();
  });

  it('does not list or count a binding Redis has already dropped', async () => {
    const store = new RedisBindingStore(redis!.url, { prefix: 'ttl-list:', graceMs: 100 });
    const gone = binding({ expires: Date.now() + 100 });
    const kept = binding({ expires: Date.now() + 60000 });
    await store.put(gone);
    await store.put(kept);
    await new Promise((r) => setTimeout(r, 400));
    expect(await store.list({ limit: 10 })).toEqual({ total: 1, bindings: [kept] });
    await store.close();
  });

  it('finds an AOR\'s bindings in one round trip, and forgets ids whose record Redis dropped', async () => {
    const store = new RedisBindingStore(redis!.url, { prefix: 'aor-rtt:', graceMs: 100 });
    const gone = binding({ expires: Date.now() + 100 });
    const kept = binding({ contact: '<sip:alice@10.0.0.9>', expires: Date.now() + 60000 });
    await store.put(gone);
    await store.put(kept);
    await store.byAor(kept.aor); // loads the script into Redis
    await new Promise((r) => setTimeout(r, 400));
    const client = (store as unknown as { redis: Redis }).redis;
    const sent: string[] = [];
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((cmd: { name: string }) => (sent.push(cmd.name), send(cmd as never))) as typeof client.sendCommand;
    expect(await store.byAor(kept.aor)).toEqual([kept]);
    expect(sent).toEqual(['evalsha']);
    const raw = new Redis(redis!.url);
    expect(await raw.smembers(`aor-rtt:aor:${kept.aor}`)).toEqual([kept.id]);
    raw.disconnect();
    await store.close();
  });
});

describe('sameDevice', () => {
  it('matches by +sip.instance when both have one, else by Contact', () => {
    const a = binding({ instance: '<urn:uuid:1>' });
    expect(sameDevice(a, { ...a, contact: '<sip:other@10.0.0.1>' })).toBe(true);
    expect(sameDevice(a, { ...a, instance: '<urn:uuid:2>' })).toBe(false);
    expect(sameDevice({ ...a, instance: null }, { ...a, instance: null })).toBe(true);
    expect(sameDevice(a, { ...a, aor: 'sip:bob@example.com' })).toBe(false);
  });
});
