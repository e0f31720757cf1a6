/**
 * Which worker a call lives in. A call's two legs must share a worker (the fast path wires
 * partner sockets natively, inside one process), and every command of the call must reach it,
 * so the dispatcher pins each call to one worker for its whole life.
 */

/** FNV-1a over the call-id's UTF-16 code units: stable across processes and restarts. */
export function homeWorker(callId: string, workers: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < callId.length; i++) {
    h ^= callId.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % workers;
}

/**
 * The call -> worker table. A new call goes to its home worker (hash of its call-id) or, while
 * that one is down, to the next live one after it; from then on the table, not the hash,
 * decides, so a worker coming back never takes over calls placed elsewhere meanwhile.
 */
export class Placement {
  private readonly calls = new Map<string, number>();
  private readonly counts: number[];

  constructor(readonly workers: number) {
    this.counts = new Array<number>(workers).fill(0);
  }

  /** Where an existing call lives, if it is placed. */
  of(callId: string): number | undefined {
    return this.calls.get(callId);
  }

  /** Where commands for a call go: its worker if placed, else the worker a new call would get. */
  route(callId: string, alive: (w: number) => boolean): number | null {
    return this.calls.get(callId) ?? this.choose(callId, alive);
  }

  /** Places a new call (or returns where it already is); null when no worker is alive. */
  place(callId: string, alive: (w: number) => boolean): number | null {
    const placed = this.calls.get(callId);
    if (placed !== undefined) return placed;
    const w = this.choose(callId, alive);
    if (w === null) return null;
    this.calls.set(callId, w);
    this.counts[w]!++;
    return w;
  }

  forget(callId: string): void {
    const w = this.calls.get(callId);
    if (w === undefined) return;
    this.calls.delete(callId);
    this.counts[w]!--;
  }

  /** A worker died: its calls died with it. Returns how many. */
  forgetWorker(worker: number): number {
    let lost = 0;
    for (const [id, w] of this.calls) {
      if (w !== worker) continue;
      this.calls.delete(id);
      lost++;
    }
    this.counts[worker] = 0;
    return lost;
  }

  callsOn(worker: number): number {
    return this.counts[worker] ?? 0;
  }

  private choose(callId: string, alive: (w: number) => boolean): number | null {
    const home = homeWorker(callId, this.workers);
    for (let i = 0; i < this.workers; i++) {
      const w = (home + i) % this.workers;
      if (alive(w)) return w;
    }
    return null;
  }
}
