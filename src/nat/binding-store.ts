import type { Binding } from './binding';

/**
 * Where bindings live. In memory for one instance; in Redis (redis-binding-store.ts) when
 * several keylatch instances share registrations, or bindings must survive a restart.
 */
export interface BindingStore {
  /** Inserts or replaces by id. */
  put(b: Binding): Promise<void>;
  get(id: string): Promise<Binding | null>;
  byAor(aor: string): Promise<Binding[]>;
  remove(id: string): Promise<boolean>;
  /** Every binding whose expiry has passed, for the sweeper to unregister upstream. */
  expired(now: number): Promise<Binding[]>;
  all(): Promise<Binding[]>;
  /**
   * Up to `limit` bindings, soonest to expire first (ties by id), and how many there are in
   * all: what an operator's status page needs without loading every binding of a large site.
   */
  list(opts: { limit: number }): Promise<{ total: number; bindings: Binding[] }>;
  close(): Promise<void>;
}

/** The order list() returns bindings in, shared by every store so they list alike. */
export const byExpiry = (a: Binding, b: Binding): number => a.expires - b.expires || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export class MemoryBindingStore implements BindingStore {
  private readonly byId = new Map<string, Binding>();
  /**
   * Binding ids per AOR. Every REGISTER looks its AOR up; a scan of every binding made that
   * O(bindings) per request, the largest cost in the REGISTER path once a site has thousands.
   */
  private readonly idsByAor = new Map<string, Set<string>>();

  async put(b: Binding): Promise<void> {
    const old = this.byId.get(b.id);
    if (old && old.aor !== b.aor) this.unindex(old);
    this.byId.set(b.id, structuredClone(b));
    let ids = this.idsByAor.get(b.aor);
    if (!ids) this.idsByAor.set(b.aor, (ids = new Set()));
    ids.add(b.id);
  }

  async get(id: string): Promise<Binding | null> {
    const b = this.byId.get(id);
    return b ? structuredClone(b) : null;
  }

  async byAor(aor: string): Promise<Binding[]> {
    const ids = this.idsByAor.get(aor);
    return ids ? [...ids].map((id) => structuredClone(this.byId.get(id)!)) : [];
  }

  async remove(id: string): Promise<boolean> {
    const b = this.byId.get(id);
    if (!b) return false;
    this.unindex(b);
    return this.byId.delete(id);
  }

  private unindex(b: Binding): void {
    const ids = this.idsByAor.get(b.aor);
    ids?.delete(b.id);
    if (ids?.size === 0) this.idsByAor.delete(b.aor);
  }

  async expired(now: number): Promise<Binding[]> {
    return [...this.byId.values()].filter((b) => b.expires <= now).map((b) => structuredClone(b));
  }

  async all(): Promise<Binding[]> {
    return [...this.byId.values()].map((b) => structuredClone(b));
  }

  async list(opts: { limit: number }): Promise<{ total: number; bindings: Binding[] }> {
    const sorted = [...this.byId.values()].sort(byExpiry);
    return { total: sorted.length, bindings: sorted.slice(0, Math.max(0, opts.limit)).map((b) => structuredClone(b)) };
  }

  async close(): Promise<void> {}
}
