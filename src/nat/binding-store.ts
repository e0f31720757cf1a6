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
  close(): Promise<void>;
}

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

  async close(): Promise<void> {}
}
