import type { LegOptions } from '../media/call';
import type { LegRef, Relay } from '../media/relay';

export type Side = 'a' | 'b';

/**
 * How one call's SDP goes through the relay. Side a sent the INVITE, side b answers it. Every
 * method takes SDP from one side and returns what the other side should see.
 */
export interface CallMedia {
  offerToB(): Promise<string>;
  /** B's answer, provisional or final. */
  answerFromB(sdp: string, toTag: string, source: string): Promise<string>;
  /** An in-dialog offer from one side. */
  reoffer(from: Side, sdp: string, source: string): Promise<string>;
  /** The other side's answer to that offer. */
  reanswer(offerer: Side, sdp: string): Promise<string>;
  /** The call is over; `connected` says whether it was ever answered. */
  release(connected: boolean): void;
}

/** The usual case: the call gets a relay call of its own, one leg per side. */
export class AnchoredMedia implements CallMedia {
  private tagB = '';

  constructor(
    private readonly relay: Relay,
    private readonly callId: string,
    private readonly tagA: string,
    private readonly offer: string,
    private readonly legs: { offerer: LegOptions; answerer: LegOptions },
  ) {}

  async offerToB(): Promise<string> {
    return (await this.relay.offer({ callId: this.callId, fromTag: this.tagA, sdp: this.offer, ...this.legs })).sdp;
  }

  async answerFromB(sdp: string, toTag: string, source: string): Promise<string> {
    this.tagB = toTag;
    return (await this.relay.answer({ callId: this.callId, fromTag: this.tagA, toTag, sdp, answerer: { signallingAddress: source } })).sdp;
  }

  async reoffer(from: Side, sdp: string, source: string): Promise<string> {
    return (await this.relay.offer({ callId: this.callId, fromTag: this.tag(from), sdp, offerer: { signallingAddress: source } })).sdp;
  }

  async reanswer(offerer: Side, sdp: string): Promise<string> {
    const [fromTag, toTag] = offerer === 'a' ? [this.tagA, this.tagB] : [this.tagB, this.tagA];
    return (await this.relay.answer({ callId: this.callId, fromTag, toTag, sdp })).sdp;
  }

  release(): void {
    this.relay.delete({ callId: this.callId });
  }

  private tag(side: Side): string {
    return side === 'a' ? this.tagA : this.tagB;
  }
}

/**
 * A call the PBX routed back through keylatch to a client (side b), carrying an offer that
 * names one of our own legs. That leg is handed to the client instead of anchoring the call a
 * second time; the call it belongs to keeps owning its ports. Toward the PBX (side a) the leg
 * keeps naming itself.
 */
export class HairpinMedia implements CallMedia {
  constructor(
    private readonly relay: Relay,
    private readonly leg: LegRef,
    private readonly offer: string,
    private readonly client: LegOptions,
    private readonly pbx: LegOptions,
  ) {}

  async offerToB(): Promise<string> {
    return this.relay.adopt(this.leg, this.offer, this.client).sdp;
  }

  async answerFromB(sdp: string, _toTag: string, source: string): Promise<string> {
    return this.relay.describeAdopted(this.leg, sdp, source).sdp;
  }

  async reoffer(from: Side, sdp: string, source: string): Promise<string> {
    return from === 'b' ? this.relay.describeAdopted(this.leg, sdp, source).sdp : this.relay.towardAdopter(this.leg, sdp).sdp;
  }

  async reanswer(offerer: Side, sdp: string): Promise<string> {
    return offerer === 'a' ? this.relay.describeAdopted(this.leg, sdp).sdp : this.relay.towardAdopter(this.leg, sdp).sdp;
  }

  /** Unanswered, the leg goes back to the PBX, which may still route the call elsewhere. */
  release(connected: boolean): void {
    if (!connected) this.relay.disown(this.leg, this.pbx);
  }
}
