import { silentLogger, type Logger } from '../log';
import type { RelayNode } from './nodes';
import type { RelayPool } from './pool';

/** A call as the media watch sees it. */
export interface WatchedCall {
  readonly callId: string;
  /**
   * Where the call's media is while it is answered and settled on one node: the node, the
   * call's id there, and which placement this is (a move makes a new one). Null while it
   * rings, moves, or has no call of its own on a node (a hairpin: its owner is watched).
   */
  mediaOnNode(): { node: RelayNode; callId: string; placement: number } | null;
  hangUp(why: string): void;
}

/** Queries in flight at once, per round: a round over thousands of calls is no burst of thousands of datagrams. */
const PARALLEL = 32;

/**
 * Dead media on pooled nodes, heard at the edge. The in-process relay tells the edge of a media
 * timeout itself; an ng node does not: rtpengine deletes the call, a keylatch node marks it
 * timed out. Every intervalMs each answered call on an ng node is asked after with ng `query`
 * (one small datagram each way, the same command for both kinds), and a call its node no longer
 * holds, or holds as timed out, is ended with BYE on both legs, as Kamailio's dialog module
 * ends a dialog on rtpengine's timeout. A node that does not answer is left to the pings: its
 * calls move, they are not ended here.
 */
export class MediaWatch {
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(
    private readonly pool: RelayPool,
    private readonly calls: () => Iterable<WatchedCall>,
    private readonly intervalMs: number,
    private readonly log: Logger = silentLogger,
  ) {}

  start(): void {
    if (this.timer || this.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.round(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One round over every call; resolves with the number of calls it ended. A round still running skips the next. */
  async round(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      const due = [...this.calls()].flatMap((call) => {
        const at = call.mediaOnNode();
        return at && at.node.kind !== 'in-process' && this.pool.isUp(at.node) ? [{ call, at }] : [];
      });
      let ended = 0;
      for (let i = 0; i < due.length; i += PARALLEL) {
        const results = await Promise.all(due.slice(i, i + PARALLEL).map(({ call, at }) => this.check(call, at)));
        ended += results.filter(Boolean).length;
      }
      return ended;
    } finally {
      this.running = false;
    }
  }

  private async check(call: WatchedCall, at: { node: RelayNode; callId: string; placement: number }): Promise<boolean> {
    let held;
    try {
      held = await at.node.query(at.callId);
    } catch {
      return false; // a silent or confused node is the pings' business
    }
    if (held && !held.timedOut) return false;
    // The answer must still be about where the call is: a move meanwhile made a new placement.
    const now = call.mediaOnNode();
    if (!now || now.node !== at.node || now.placement !== at.placement || !this.pool.isUp(at.node)) return false;
    const why = held ? 'media timeout on relay node' : 'relay node no longer holds the call';
    this.log.warn({ callId: call.callId, relay: at.node.id, relayCallId: at.callId, why }, 'dead media on a pooled relay node: ending the call');
    this.pool.mediaTimeouts++;
    call.hangUp(why);
    return true;
  }
}
