import type { LegOptions } from '../media/call';
import type { LegRef } from '../media/relay';
import { NgRefused, NgTimeout, isUnknownCall } from '../relay-pool/ng-client';
import type { RelayNode } from '../relay-pool/nodes';
import type { RelayPool } from '../relay-pool/pool';

export type Side = 'a' | 'b';

/**
 * How one call's SDP goes through the relay. Side a sent the INVITE, side b answers it. Every
 * method takes SDP from one side and returns what the other side should see.
 */
export interface CallMedia {
  offerToB(): Promise<string>;
  /** B's answer, provisional or final. */
  answerFromB(sdp: string, toTag: string, source: string): Promise<string>;
  /** An in-dialog offer from one side; `source` is where its SIP came from, when it did. */
  reoffer(from: Side, sdp: string, source?: string): Promise<string>;
  /** The other side's answer to that offer. */
  reanswer(offerer: Side, sdp: string): Promise<string>;
  /** The call is over; `connected` says whether it was ever answered. */
  release(connected: boolean): void;
}

/**
 * The usual case: the call gets a relay call of its own, one leg per side, on the pool node
 * that took its first offer. When that node dies or forgets the call (its `loss`), the call
 * moves whole to a new placement: a fresh offer with both legs as they were (policy,
 * transport, signalling address), whose SDP the session sends down both legs
 * (CallSession.moveMedia), or the next in-dialog offer if one comes first.
 */
export class AnchoredMedia implements CallMedia {
  private tagB = '';
  private node: RelayNode | null = null;
  /**
   * Why the call's placement is gone, if it is; its next offer then goes to a new placement.
   * 'died': the node is down, so the move avoids it and deletes the call there in case it was
   * only slow. 'forgot': the node is alive but no longer holds the call (it restarted, or a
   * worker of it died), so the move may land on it again, and the old placement needs no
   * delete (the call's id there is about to be reused by the new one).
   */
  loss: 'died' | 'forgot' | null = null;
  /**
   * Anchored only in place of a hairpin whose owner's node died while the client rang: the
   * PBX's next offer, naming the owner's leg on its new node, is adopted instead (CallSession).
   */
  standIn = false;
  /** How many times the call was placed on a node: a move is a new placement. */
  private placements = 0;
  /** When the latest placement was made (ms since the epoch). */
  private placedAt = 0;
  /** An offer to a new node is under way: the node may not know the call yet. */
  private placing = false;
  /** SDP for B from a move made while B rang: B still has the dead node's, so it goes by re-INVITE once the dialog is up. */
  private unsentToB: string | null = null;

  constructor(
    private readonly pool: RelayPool,
    private readonly callId: string,
    private readonly tagA: string,
    private readonly offer: string,
    private readonly legs: { offerer: LegOptions; answerer: LegOptions },
  ) {}

  /** The node the call is on (null before the first offer). */
  get on(): RelayNode | null {
    return this.node;
  }

  /** The node and placement while the call is settled there (not lost, not being placed). */
  get settled(): { node: RelayNode; placement: number; placedAt: number } | null {
    return this.node && !this.loss && !this.placing ? { node: this.node, placement: this.placements, placedAt: this.placedAt } : null;
  }

  async offerToB(): Promise<string> {
    return this.start('a', this.offer, this.legs.offerer, this.legs.answerer);
  }

  /**
   * B's answer through the node. When the node died while B rang (found down, or silent now),
   * the call moves first: A's offer goes to a new node, B's answer follows it there, and A gets
   * the new node's SDP in this answer; B's side of the move waits in takeUnsentOfferToB().
   */
  async answerFromB(sdp: string, toTag: string, source: string): Promise<string> {
    this.tagB = toTag;
    this.legs.answerer.signallingAddress = source;
    if (!this.loss) {
      try {
        return await this.answerOn(sdp, toTag, source);
      } catch (err) {
        if (err instanceof NgRefused && isUnknownCall(err.reason)) {
          // The node forgot the call while B rang (it restarted, or a worker of it died).
          this.loss = 'forgot';
        } else {
          if (!(err instanceof NgTimeout)) throw err;
          this.pool.suspect(this.node!);
        }
      }
    }
    this.unsentToB = await this.move('a', this.offer);
    return this.answerOn(sdp, toTag, source);
  }

  /** The offer B must still get after a move during ringing (once: it is then sent). */
  takeUnsentOfferToB(): string | null {
    const sdp = this.unsentToB;
    this.unsentToB = null;
    return sdp;
  }

  private async answerOn(sdp: string, toTag: string, source: string): Promise<string> {
    return (await this.node!.answer({ callId: this.callId, fromTag: this.tagA, toTag, sdp, answerer: { signallingAddress: source } })).sdp;
  }

  async reoffer(from: Side, sdp: string, source?: string): Promise<string> {
    if (source) this.optionsOf(from).signallingAddress = source;
    if (this.loss) return this.move(from, sdp);
    return (await this.node!.offer({ callId: this.callId, fromTag: this.tag(from), sdp, offerer: { signallingAddress: this.optionsOf(from).signallingAddress } })).sdp;
  }

  async reanswer(offerer: Side, sdp: string): Promise<string> {
    const [fromTag, toTag] = offerer === 'a' ? [this.tagA, this.tagB] : [this.tagB, this.tagA];
    const answerer = this.optionsOf(offerer === 'a' ? 'b' : 'a');
    return (await this.node!.answer({ callId: this.callId, fromTag, toTag, sdp, answerer: { signallingAddress: answerer.signallingAddress } })).sdp;
  }

  /**
   * Re-creates the call on another node from `from`'s SDP: returns what the other side should
   * be offered. Key legs get new keys there (the new node's, in the SDP it returns).
   */
  async move(from: Side, sdp: string): Promise<string> {
    const old = this.node;
    const forgotten = this.loss === 'forgot';
    this.loss = null;
    if (old) this.pool.release(old, this.callId);
    // Best effort: a node that comes back would otherwise hold the call's ports till its timeout.
    if (old && !forgotten) old.delete(this.callId).catch(() => undefined);
    this.node = null;
    const to = from === 'a' ? 'b' : 'a';
    return this.start(from, sdp, this.optionsOf(from), this.optionsOf(to), forgotten ? undefined : (old ?? undefined));
  }

  release(): void {
    const node = this.node;
    if (!node) return;
    this.node = null;
    this.pool.release(node, this.callId);
    // Even on a node found down: one that was only slow would otherwise hold the ports till its timeout.
    node.delete(this.callId).catch(() => undefined);
  }

  /** Places the call on a node and offers; a node that times out is reported and one other is tried. */
  private async start(from: Side, sdp: string, offerer: LegOptions, answerer: LegOptions, avoid?: RelayNode): Promise<string> {
    const needsKey = offerer.policy === 'key' || answerer.policy === 'key';
    const toTag = from === 'a' ? this.tagB : this.tagA;
    this.placing = true;
    try {
      for (let attempt = 0; ; attempt++) {
        const node = this.pool.place(this.callId, needsKey, avoid);
        this.node = node;
        this.placements++;
        this.placedAt = Date.now();
        try {
          const out = (await node.offer({ callId: this.callId, fromTag: this.tag(from), ...(toTag ? { toTag } : {}), sdp, offerer: { ...offerer }, answerer: { ...answerer } })).sdp;
          this.pool.noteSdp(node, out);
          return out;
        } catch (err) {
          if (!(err instanceof NgTimeout) || attempt > 0) throw err;
          this.pool.release(node, this.callId);
          this.pool.suspect(node);
          avoid = node;
        }
      }
    } finally {
      this.placing = false;
    }
  }

  private optionsOf(side: Side): LegOptions {
    return side === 'a' ? this.legs.offerer : this.legs.answerer;
  }

  private tag(side: Side): string {
    return side === 'a' ? this.tagA : this.tagB;
  }
}

/**
 * A PBX call for a flow another edge holds, passed on to that edge (sip.peerEdges): the media
 * is that edge's to anchor, so the SDP goes through untouched both ways.
 */
export class PassthroughMedia implements CallMedia {
  constructor(private readonly offer: string) {}

  async offerToB(): Promise<string> {
    return this.offer;
  }

  async answerFromB(sdp: string): Promise<string> {
    return sdp;
  }

  async reoffer(_from: Side, sdp: string): Promise<string> {
    return sdp;
  }

  async reanswer(_offerer: Side, sdp: string): Promise<string> {
    return sdp;
  }

  release(): void {
    /* nothing anchored here */
  }
}

/** A PBX offer that names one of our own legs, on whichever node holds it, adopted by the client `opts` describes. */
export async function adoptHairpin(pool: RelayPool, offer: string, opts: LegOptions): Promise<{ node: RelayNode; ref: LegRef; sdp: string } | null> {
  for (const node of pool.hairpinNodesFor(offer)) {
    const adopted = await node.hairpins!.adopt(offer, opts);
    if (adopted) return { node, ...adopted };
  }
  return null;
}

/**
 * A call the PBX routed back through keylatch to a client (side b), carrying an offer that
 * names one of our own legs. That leg is handed to the client instead of anchoring the call a
 * second time; the call it belongs to keeps owning its ports. Toward the PBX (side a) the leg
 * keeps naming itself. When the node dies, the owning call moves and re-offers to the PBX,
 * which brings that offer here, naming the owner's leg on its new node: it is adopted there.
 */
export class HairpinMedia implements CallMedia {
  /** The owning call's node died: the next offer from the PBX names its leg on another node. */
  lost = false;

  constructor(
    private readonly pool: RelayPool,
    private node: RelayNode,
    private leg: LegRef,
    private readonly adoptedSdp: string,
    private readonly client: LegOptions,
    private readonly pbx: LegOptions,
  ) {}

  get on(): RelayNode {
    return this.node;
  }

  /** The owning call's relay call id. */
  get owner(): string {
    return this.leg.callId;
  }

  async offerToB(): Promise<string> {
    return this.adoptedSdp;
  }

  async answerFromB(sdp: string, _toTag: string, source: string): Promise<string> {
    this.client.signallingAddress = source;
    return this.node.hairpins!.describeAdopted(this.leg, sdp, source);
  }

  async reoffer(from: Side, sdp: string, source?: string): Promise<string> {
    if (from === 'b') {
      if (source) this.client.signallingAddress = source;
      return this.node.hairpins!.describeAdopted(this.leg, sdp, source);
    }
    // Another edge may have moved the owning call before this edge noticed the node die: an
    // offer naming another node's leg is that move, whatever this edge thinks of the node.
    if (this.lost || !this.pool.hairpinNodesFor(sdp).includes(this.node)) {
      const adopted = await adoptHairpin(this.pool, sdp, this.client);
      if (!adopted) throw new Error('the PBX re-offered no leg of a live relay node after the hairpin\'s node died');
      [this.node, this.leg, this.lost] = [adopted.node, adopted.ref, false];
      return adopted.sdp;
    }
    return this.node.hairpins!.towardAdopter(this.leg, sdp);
  }

  async reanswer(offerer: Side, sdp: string): Promise<string> {
    return offerer === 'a' ? this.node.hairpins!.describeAdopted(this.leg, sdp) : this.node.hairpins!.towardAdopter(this.leg, sdp);
  }

  /** Unanswered, the leg goes back to the PBX, which may still route the call elsewhere. */
  release(connected: boolean): void {
    if (!connected && !this.lost) this.node.hairpins!.disown(this.leg, this.pbx).catch(() => undefined);
  }
}
