import { randomBytes, randomInt } from 'node:crypto';
import { Leg, type LegOptions } from '../media/call';
import type { Relay } from '../media/relay';
import { parseSdp } from '../sdp/session';
import type { MixerCounters, ReceiveMode } from './native-mixer';
import { roomAnswer, roomMediaOf, type RoomMedia } from './room-sdp';

export type Role = 'speaker' | 'listener';

export interface ParticipantInfo {
  id: string;
  /** Who joined: the From URI (the PBX's caller, or a registered client's AOR). */
  who: string;
  role: Role;
  mode: ReceiveMode;
  codec: string;
  policy: string;
  muted: boolean;
  talking: boolean;
  /** Where its media is latched, or null while it has not (or no longer) proved itself. */
  latched: string | null;
  latchState: string;
  joinedAt: number;
  counters: MixerCounters | null;
}

/**
 * One leg in a room: relay ports with the usual latch (key or guarded) that belong to no call.
 * Until its leg latches nothing it sends reaches the mixer, since the fast path hands over only
 * media from the latched source.
 */
export class Participant {
  /** Hex, not base64url: an id starting with '-' would read as an option on `keylatch rooms`' command line. */
  readonly id = randomBytes(6).toString('hex');
  readonly leg: Leg;
  readonly joinedAt = Date.now();
  media!: RoomMedia;
  mode: ReceiveMode = 'mix';
  muted = false;
  talking = false;
  /** The mixer's handle, once in a room. */
  mixerId: number | null = null;
  counters: MixerCounters | null = null;
  /** Ends its signalling (a BYE) when the room lets it go for any reason but its own hangup. */
  end: (() => void) | null = null;
  /** Our answers keep one o= line, its version counting up (RFC 3264 section 8). */
  private readonly origin = { sessionId: randomInt(1, 2 ** 47), version: 0 };
  private opened = false;

  constructor(readonly who: string, readonly role: Role, legOptions: LegOptions, private readonly relay: Relay) {
    this.leg = new Leg(`room-${this.id}`, legOptions);
  }

  /** Opens the leg's ports for the offer; throws SdpError, RelayError or PortPoolExhausted. */
  async open(offer: string): Promise<void> {
    this.media = roomMediaOf(offer);
    await this.relay.openLoneLeg(`room-${this.id}`, this.leg, offer);
    this.opened = true;
  }

  /** A re-INVITE: the participant's media may have moved or gone on hold. */
  describe(offer: string): void {
    this.relay.describeLoneLeg(this.leg, parseSdp(offer));
  }

  answer(offer: string): string {
    const s = this.stream();
    return roomAnswer(offer, this.media, {
      address: this.relay.advertisedAddress,
      rtpPort: s.rtp.port,
      rtcpPort: s.rtcp.port,
      keylatchValue: this.leg.secure ? this.leg.keylatchAttribute() : undefined,
      mode: this.mode,
      sessionId: this.origin.sessionId,
      version: ++this.origin.version,
    });
  }

  /** The native socket of its audio RTP port, which the mixer hooks. */
  get socketHandle(): number {
    return this.stream().rtp.socket.handle;
  }

  get latched(): boolean {
    return this.stream().rtp.latched !== null;
  }

  lastSeen(): number {
    return this.stream().lastSeen();
  }

  tick(now: number): void {
    if (this.opened) this.relay.tickLoneLeg(this.leg, now);
  }

  close(): void {
    if (!this.opened) return;
    this.opened = false;
    this.relay.closeLoneLeg(this.leg);
  }

  info(): ParticipantInfo {
    const rtp = this.opened ? this.stream().rtp : null;
    return {
      id: this.id,
      who: this.who,
      role: this.role,
      mode: this.mode,
      codec: this.media?.codec ?? '-',
      policy: this.leg.policy,
      muted: this.muted,
      talking: this.talking,
      latched: rtp?.latched ? `${rtp.latched.address}:${rtp.latched.port}` : null,
      latchState: rtp?.latch.state ?? 'closed',
      joinedAt: this.joinedAt,
      counters: this.counters,
    };
  }

  private stream(): NonNullable<Leg['streams'][number]> {
    const s = this.leg.streams[this.media.index];
    if (!s) throw new Error(`participant ${this.id} has no audio stream`);
    return s;
  }
}
