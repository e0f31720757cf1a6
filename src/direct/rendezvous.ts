/**
 * The relay as rendezvous server for direct media (docs/direct-media.md).
 *
 * When both legs of a call are key-policy clients and both have proved their keys, the relay
 * knows each one's authenticated external mapping. It tells each client the other's mapping,
 * with a key the two share (wrapped under the receiving client's leg key), so they can punch
 * through their NATs and prove to each other. It repeats itself whenever a mapping changes and
 * after every re-proof, so a lost message costs at most one consent interval.
 */
import { randomBytes } from 'node:crypto';
import { encodeRendezvous, newLegId, type Endpoint, type PairGrant } from '../media/challenge';

/** The two ends of one stream of one call, as far as the rendezvous is concerned. */
export interface PairEnd {
  readonly legId: string;
  readonly key: Buffer | null;
  /** The leg's client may take media direct (policy key, and neither config nor signalling said no). */
  readonly directAllowed: boolean;
  /** The authenticated mapping of this end's RTP port, or null before it proved. */
  readonly mapping: Endpoint | null;
  /** Sends a protocol message to this end's client, from its RTP relay port. */
  send(buf: Buffer, to: Endpoint): void;
}

/** One pair id and key per stream pair, minted when the pair first qualifies. */
export class DirectPair {
  readonly id = newLegId();
  readonly key = randomBytes(32);
  rendezvousSent = 0;

  /** `a` is the call's first leg: the side names keep the two directions' proofs apart. */
  constructor(private readonly a: PairEnd, private readonly b: PairEnd) {}

  /** Both ends are key clients that may go direct, and both have proved where they are. */
  get ready(): boolean {
    return DirectPair.possible(this.a, this.b);
  }

  /** Would a pair of these ends be ready? Asked before minting one, so no key is made for a call that cannot use it. */
  static possible(a: PairEnd, b: PairEnd): boolean {
    return qualifies(a) && qualifies(b) && a.mapping !== null && b.mapping !== null;
  }

  /** Tells the client of leg `legId` (or both) where the other is; nothing unless the pair is ready. */
  tell(legId?: string): void {
    if (!this.ready) return;
    for (const [me, peer, side] of [[this.a, this.b, 'a'], [this.b, this.a, 'b']] as const) {
      if (legId !== undefined && me.legId !== legId) continue;
      const grant: PairGrant = { pairId: this.id, side, pairKey: this.key, peer: peer.mapping! };
      me.send(encodeRendezvous(me.key!, me.legId, grant), me.mapping!);
      this.rendezvousSent++;
    }
  }
}

export function qualifies(end: PairEnd): end is PairEnd & { key: Buffer } {
  return end.key !== null && end.directAllowed;
}
