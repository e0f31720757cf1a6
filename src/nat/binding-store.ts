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

  async put(b: Binding): Promise<void> {
    this.byId.set(b.id, structuredClone(b));
  }

  async get(id: string): Promise<Binding | null> {
    const b = this.byId.get(id);
    return b ? structuredClone(b) : null;
  }

  async byAor(aor: string): Promise<Binding[]> {
    return [...this.byId.values()].filter((b) => b.aor === aor).map((b) => structuredClone(b));
  }

  async remove(id: string): Promise<boolean> {
    return this.byId.delete(id);
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
