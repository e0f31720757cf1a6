import { silentLogger, type Logger } from '../log';
import type { RelayNode } from './nodes';
import type { RelayPool } from './pool';

/** A call as the media watch sees it. */
export interface WatchedCall {
  readonly callId: string;
  /**
   * Where the call's media is while it is answered and settled on one node: the node, the
   * call's id there, which placement this is (a move makes a new one) and when it was made.
   * Null while it rings, moves, or has no call of its own on a node (a hairpin: its owner is
   * watched).
   */
  mediaOnNode(): { node: RelayNode; callId: string; placement: number; placedAt: number } | null;
  hangUp(why: string): void;
}

type Placed = NonNullable<ReturnType<WatchedCall['mediaOnNode']>>;

/**
 * A call placed this little before its node says it lost calls still counts as lost there: the
 * edge's clock and the node's need not agree to the millisecond.
 */
const CLOCK_SLACK_MS = 1000;

/** Queries in flight at once, per round: a round over thousands of calls is no burst of thousands of datagrams. */
const PARALLEL = 32;

/**
 * Dead media on pooled nodes, heard at the edge. The in-process relay tells the edge of a media
 * timeout itself; an ng node does not: rtpengine deletes the call, a keylatch node marks it
 * timed out. Every intervalMs each answered call on an ng node is asked after with ng `query`
 * (one small datagram each way, the same command for both kinds), and a call its node holds as
 * timed out, or no longer holds, is ended with BYE on both legs, as Kamailio's dialog module
 * ends a dialog on rtpengine's timeout.
 *
 * Unless the node lost it: a node that restarted faster than its pings could miss, or a keylatch
 * node one of whose workers died, no longer holds calls whose media was fine. A call the node
 * does not hold, placed before the node last lost calls (its pong says when, nodes.ts), is handed
 * to `forgotten` to move instead, and so is every such call when the pool sees a node's
 * lost-calls time jump (recheck). A node that does not answer is left to the pings: its calls
 * move, they are not ended here.
 */
export class MediaWatch {
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private readonly onForgot = (node: RelayNode): void => void this.recheck(node);

  constructor(
    private readonly pool: RelayPool,
    private readonly calls: () => Iterable<WatchedCall>,
    private readonly intervalMs: number,
    /**
     * Calls their node lost, by their id there and the placement that was lost: the edge moves
     * them, as off a dead node (a call placed again since is not lost any more).
     */
    private readonly forgotten: (node: RelayNode, lost: Array<{ callId: string; placement: number }>) => void,
    private readonly log: Logger = silentLogger,
  ) {}

  /** Rounds every intervalMs (none when 0), and a recheck of a node whenever the pool says it forgot calls. */
  start(): void {
    this.pool.off('forgot', this.onForgot);
    this.pool.on('forgot', this.onForgot);
    if (this.timer || this.intervalMs <= 0) return;
    this.timer = setInterval(() => void this.round(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.pool.off('forgot', this.onForgot);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One round over every call; resolves with the number of calls it ended. A round still running skips the next. */
  async round(): Promise<number> {
    if (this.running) return 0;
    this.running = true;
    try {
      return (await this.checkAll(() => true)).ended;
    } finally {
      this.running = false;
    }
  }

  /** The node says it lost calls: asks after each of its calls now, not at the next round. */
  async recheck(node: RelayNode): Promise<number> {
    return (await this.checkAll((at) => at.node === node)).moved;
  }

  private async checkAll(which: (at: Placed) => boolean): Promise<{ ended: number; moved: number }> {
    const due = [...this.calls()].flatMap((call) => {
      const at = call.mediaOnNode();
      return at && at.node.kind !== 'in-process' && this.pool.isUp(at.node) && which(at) ? [{ call, at }] : [];
    });
    let ended = 0;
    const lost = new Map<RelayNode, Array<{ callId: string; placement: number }>>();
    for (let i = 0; i < due.length; i += PARALLEL) {
      const results = await Promise.all(due.slice(i, i + PARALLEL).map(({ call, at }) => this.check(call, at)));
      results.forEach((r, j) => {
        const { at } = due[i + j]!;
        if (r === 'ended') ended++;
        if (r === 'lost') lost.set(at.node, [...(lost.get(at.node) ?? []), { callId: at.callId, placement: at.placement }]);
      });
    }
    // Per node, all at once: the edge orders the moves of one conversation's halves.
    for (const [node, calls] of lost) this.forgotten(node, calls);
    return { ended, moved: [...lost.values()].reduce((n, calls) => n + calls.length, 0) };
  }

  private async check(call: WatchedCall, at: Placed): Promise<'held' | 'ended' | 'lost' | 'unknown'> {
    let held;
    try {
      held = await at.node.query(at.callId);
    } catch {
      return 'unknown'; // a silent or confused node is the pings' business
    }
    if (held && !held.timedOut) return 'held';
    // The answer must still be about where the call is: a move meanwhile made a new placement.
    const still = (): boolean => {
      const now = call.mediaOnNode();
      return now !== null && now.node === at.node && now.placement === at.placement && this.pool.isUp(at.node);
    };
    if (!held) {
      let lostAt;
      try {
        lostAt = await this.pool.callsLostAt(at.node);
      } catch {
        return 'unknown'; // the pings' business, as above
      }
      if (lostAt !== null && lostAt >= at.placedAt - CLOCK_SLACK_MS && still()) {
        this.log.warn({ callId: call.callId, relay: at.node.id, relayCallId: at.callId }, 'relay node lost the call (it restarted, or a worker of it died): moving it');
        return 'lost';
      }
    }
    if (!still()) return 'unknown';
    const why = held ? 'media timeout on relay node' : 'relay node no longer holds the call';
    this.log.warn({ callId: call.callId, relay: at.node.id, relayCallId: at.callId, why }, 'dead media on a pooled relay node: ending the call');
    this.pool.mediaTimeouts++;
    call.hangUp(why);
    return 'ended';
  }
}
