import Redis from 'ioredis';
import { z } from 'zod';
import { silentLogger, type Logger } from '../log';
import type { Binding } from './binding';
import { byExpiry, type BindingStore } from './binding-store';

const bindingSchema = z.object({
  id: z.string(),
  aor: z.string(),
  contact: z.string(),
  instance: z.string().nullable(),
  source: z.object({ address: z.string(), port: z.number() }),
  transport: z.enum(['udp', 'tcp', 'tls', 'ws', 'wss']),
  localSocket: z.string(),
  lastSeen: z.number(),
  expires: z.number(),
  natted: z.boolean(),
  natTests: z.array(z.enum(['private-contact', 'private-via', 'private-sdp', 'via-differs', 'contact-port-differs'])),
  secure: z.boolean(),
  upstreamExpires: z.number(),
  keylatch: z.boolean().default(false),
  keepaliveIntervalMs: z.number().positive().optional(),
  keepaliveFailedMs: z.number().positive().optional(),
});

/**
 * An AOR's bindings in one round trip: the id set, the records, and the set's stale ids (whose
 * record Redis already expired) removed, where SMEMBERS then MGET then SREM took two or three.
 * The record keys are built inside the script, so it suits a single Redis (or a cluster with
 * every keylatch key in one hash slot), as the rest of this store does.
 */
const BY_AOR_SCRIPT = `
local ids = redis.call('SMEMBERS', KEYS[1])
if #ids == 0 then return {} end
local keys = {}
for i, id in ipairs(ids) do keys[i] = ARGV[1] .. id end
local values = redis.call('MGET', unpack(keys))
local found, gone = {}, {}
for i, v in ipairs(values) do
  if v then found[#found + 1] = v else gone[#gone + 1] = ids[i] end
end
if #gone > 0 then redis.call('SREM', KEYS[1], unpack(gone)) end
return found
`;

type RedisWithByAor = Redis & { keylatchByAor(aorKey: string, recordPrefix: string): Promise<unknown> };

/**
 * Bindings in Redis, shared by every keylatch instance that points at it:
 *   <prefix>b:<id>      the binding as JSON, expiring a grace period after the binding does
 *   <prefix>aor:<aor>   set of binding ids of that AOR
 *   <prefix>exp         sorted set of binding ids by expiry, for the sweeper
 * Redis's own expiry cleans up after instances that are gone.
 */
export class RedisBindingStore implements BindingStore {
  private readonly redis: Redis;

  constructor(
    url: string,
    private readonly opts: { prefix?: string; graceMs?: number; logger?: Logger } = {},
  ) {
    this.redis = new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 2 });
    this.redis.defineCommand('keylatchByAor', { numberOfKeys: 1, lua: BY_AOR_SCRIPT });
    this.redis.on('error', (err) => (opts.logger ?? silentLogger).warn({ err: err.message }, 'redis error'));
  }

  private get prefix(): string {
    return this.opts.prefix ?? 'keylatch:';
  }

  private key(kind: 'b' | 'aor', id: string): string {
    return `${this.prefix}${kind}:${id}`;
  }

  async put(b: Binding): Promise<void> {
    const keepUntil = b.expires + (this.opts.graceMs ?? 300_000);
    await this.redis
      .multi()
      .set(this.key('b', b.id), JSON.stringify(b), 'PXAT', keepUntil)
      .sadd(this.key('aor', b.aor), b.id)
      .pexpireat(this.key('aor', b.aor), keepUntil)
      .zadd(`${this.prefix}exp`, b.expires, b.id)
      .exec();
  }

  async get(id: string): Promise<Binding | null> {
    return this.decode(id, await this.redis.get(this.key('b', id)));
  }

  /** One round trip (BY_AOR_SCRIPT): every REGISTER and every request from a phone asks this. */
  async byAor(aor: string): Promise<Binding[]> {
    const raw = (await (this.redis as RedisWithByAor).keylatchByAor(this.key('aor', aor), `${this.prefix}b:`)) as string[];
    return raw.map((v) => this.decode('(by aor)', v)).filter((b): b is Binding => b !== null && b.aor === aor);
  }

  async remove(id: string): Promise<boolean> {
    const b = await this.get(id);
    const multi = this.redis.multi().del(this.key('b', id)).zrem(`${this.prefix}exp`, id);
    if (b) multi.srem(this.key('aor', b.aor), id);
    const results = await multi.exec();
    return Number(results?.[0]?.[1] ?? 0) > 0;
  }

  async expired(now: number): Promise<Binding[]> {
    const ids = await this.redis.zrangebyscore(`${this.prefix}exp`, '-inf', now);
    const found = await this.load(ids);
    const gone = ids.filter((id) => !found.some((b) => b.id === id));
    if (gone.length) await this.redis.zrem(`${this.prefix}exp`, ...gone);
    return found.filter((b) => b.expires <= now);
  }

  async all(): Promise<Binding[]> {
    return this.load(await this.redis.zrange(`${this.prefix}exp`, 0, -1));
  }

  async list(opts: { limit: number }): Promise<{ total: number; bindings: Binding[] }> {
    if (opts.limit <= 0) return { total: await this.redis.zcard(`${this.prefix}exp`), bindings: [] };
    const [ids, total] = await Promise.all([this.redis.zrange(`${this.prefix}exp`, 0, opts.limit - 1), this.redis.zcard(`${this.prefix}exp`)]);
    const found = await this.load(ids);
    // Ids whose record Redis already expired are stale index entries: dropped, and not counted.
    const gone = ids.filter((id) => !found.some((b) => b.id === id));
    if (gone.length) await this.redis.zrem(`${this.prefix}exp`, ...gone);
    return { total: total - gone.length, bindings: found.sort(byExpiry) };
  }

  async close(): Promise<void> {
    await this.redis.quit().catch(() => undefined);
  }

  private async load(ids: string[]): Promise<Binding[]> {
    if (ids.length === 0) return [];
    const values = await this.redis.mget(ids.map((id) => this.key('b', id)));
    return values.map((v, i) => this.decode(ids[i]!, v)).filter((b): b is Binding => b !== null);
  }

  /** Redis is shared with other software: a record that does not parse is skipped and logged, never thrown. */
  private decode(id: string, raw: string | null): Binding | null {
    if (raw === null) return null;
    try {
      return bindingSchema.parse(JSON.parse(raw));
    } catch (err) {
      (this.opts.logger ?? silentLogger).warn({ id, err: (err as Error).message }, 'unreadable binding in redis, ignored');
      return null;
    }
  }
}
