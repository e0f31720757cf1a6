import { EventEmitter } from 'node:events';
import { EVENT_DTMF, EVENT_QUIET, EVENT_TALKING, MixerRoom, type ReceiveMode } from './native-mixer';
import type { Participant, ParticipantInfo } from './participant';

/** RFC 4733 event codes 0-15 as keys: 0-9, *, #, A-D. */
export const DTMF_KEYS = '0123456789*#ABCD';

export type LeaveReason = 'hangup' | 'removed' | 'media timeout' | 'room closed';

export interface RoomEvents {
  joined: [Participant];
  left: [Participant, LeaveReason];
  talking: [Participant, boolean];
  /** A key, and whether it came in the media (RFC 4733) or in signalling (SIP INFO). */
  dtmf: [Participant, string, 'rtp' | 'info'];
  muted: [Participant, boolean];
}

export interface RoomInfo {
  name: string;
  broadcast: boolean;
  createdAt: number;
  participants: ParticipantInfo[];
}

/**
 * A group call: participants whose media meets in the native mixer. The room polls the mixer
 * for events (talking, DTMF) and counters every POLL_MS; nothing here runs per packet.
 */
export class Room extends EventEmitter<RoomEvents> {
  static readonly POLL_MS = 100;
  /** Counters are read every this many polls (once a second): events need the short interval, they do not. */
  static readonly COUNTERS_EVERY = 10;
  private polls = 0;
  readonly createdAt = Date.now();
  private readonly mixer = new MixerRoom();
  private readonly members = new Map<string, Participant>();
  private readonly byMixerId = new Map<number, Participant>();
  private readonly poller: NodeJS.Timeout;
  private closed = false;

  constructor(readonly name: string, readonly speakers: ReadonlySet<string> | null) {
    super();
    this.poller = setInterval(() => this.poll(++this.polls % Room.COUNTERS_EVERY === 0), Room.POLL_MS);
    this.poller.unref();
  }

  get broadcast(): boolean {
    return this.speakers !== null;
  }

  get size(): number {
    return this.members.size;
  }

  participants(): Participant[] {
    return [...this.members.values()];
  }

  get(id: string): Participant | undefined {
    return this.members.get(id);
  }

  /**
   * What a newcomer receives: forwarding when it asked (it mixes itself); in a broadcast room with
   * one speaker, that speaker relayed under the listener's own SSRC (no decoding); else the mix.
   */
  modeFor(p: Participant): ReceiveMode {
    if (p.media.wantsForwarding) return 'forward';
    if (this.speakers && this.speakers.size === 1 && p.role === 'listener') return 'relay';
    return 'mix';
  }

  /** Hooks an opened participant's RTP socket into the mixer. */
  join(p: Participant): void {
    if (this.closed) throw new Error(`room ${this.name} is closed`);
    p.mixerId = this.mixer.add(p.socketHandle, { codec: p.media.codec, dtmfPt: p.media.dtmfPt, mode: p.mode, speaker: p.role === 'speaker' });
    this.members.set(p.id, p);
    this.byMixerId.set(p.mixerId, p);
    this.emit('joined', p);
  }

  /** Unhooks it from the mixer before its ports close (the native socket ids are reused). */
  leave(p: Participant, why: LeaveReason): void {
    if (!this.members.delete(p.id)) return;
    if (p.mixerId !== null) {
      this.mixer.remove(p.mixerId);
      this.byMixerId.delete(p.mixerId);
    }
    p.close();
    if (why !== 'hangup') p.end?.();
    p.end = null;
    this.emit('left', p, why);
  }

  mute(p: Participant, muted: boolean): void {
    if (!this.members.has(p.id) || p.mixerId === null || p.muted === muted) return;
    p.muted = muted;
    this.mixer.set(p.mixerId, { muted, mode: p.mode, speaker: p.role === 'speaker' });
    this.emit('muted', p, muted);
  }

  /** DTMF that came in signalling (SIP INFO) rather than in the media. */
  reportDtmf(p: Participant, key: string): void {
    if (this.members.has(p.id)) this.emit('dtmf', p, key, 'info');
  }

  info(): RoomInfo {
    return { name: this.name, broadcast: this.broadcast, createdAt: this.createdAt, participants: this.participants().map((p) => p.info()) };
  }

  close(): void {
    if (this.closed) return;
    for (const p of this.participants()) this.leave(p, 'room closed');
    this.closed = true;
    clearInterval(this.poller);
    this.mixer.close();
  }

  /** Mixer events since the last poll, and (unless told otherwise) fresh counters. */
  poll(counters = true): void {
    if (this.closed) return;
    const { events, participants } = this.mixer.poll(counters);
    for (const c of participants) {
      const p = this.byMixerId.get(c.id);
      if (p) p.counters = c;
    }
    for (const [type, id, value] of events) {
      const p = this.byMixerId.get(id);
      if (!p) continue;
      if (type === EVENT_TALKING || type === EVENT_QUIET) {
        p.talking = type === EVENT_TALKING;
        this.emit('talking', p, p.talking);
      } else if (type === EVENT_DTMF) {
        this.emit('dtmf', p, DTMF_KEYS[value] ?? String(value), 'rtp');
      }
    }
  }
}
