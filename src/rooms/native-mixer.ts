import { loadNativeAddon } from '../native-addon';

/** How a participant receives the room (native/mixer.c). */
export type ReceiveMode = 'mix' | 'forward' | 'relay';

const MODE: Record<ReceiveMode, number> = { mix: 0, forward: 1, relay: 2 };

/** What the mixer counts per participant, read a few times a second. */
export interface MixerCounters {
  id: number;
  /** Smoothed RMS of its input (16-bit linear). */
  level: number;
  talking: number;
  packetsIn: number;
  /** Packets too late for the jitter buffer, which then deepened. */
  late: number;
  resyncs: number;
  /** 20 ms frames played with samples missing. */
  concealed: number;
  /** Times 5 ms were dropped because more was buffered than the path needed. */
  trimmed: number;
  /** Frames the limiter had to turn down. */
  clipped: number;
  /** Mixed packets sent to it. */
  sent: number;
  /** Packets forwarded or relayed to it. */
  forwarded: number;
  dtmf: number;
  /** Packets of a payload type it was not given (neither G.711 nor its telephone-event). */
  ignored: number;
  bufferMs: number;
  jitterMs: number;
}

export type MixerEvent = [type: 1 | 2 | 3, participant: number, value: number];
export const EVENT_TALKING = 1;
export const EVENT_QUIET = 2;
export const EVENT_DTMF = 3;

interface NativeMixer {
  roomCreate(): number;
  roomDestroy(room: number): void;
  partAdd(room: number, socket: number, law: number, dtmfPt: number, mode: number, speaker: number): number;
  partSet(part: number, muted: number, mode: number, speaker: number): void;
  partRemove(part: number): void;
  roomPoll(room: number, withCounters: number): { events: MixerEvent[]; eventsDropped: number; participants: MixerCounters[] };
  mixerStats(): { ticks: number; tickNs: number; clockSkips: number; rooms: number; participants: number; batched: number };
  setBatching(on: number): boolean;
}

// The same addon as src/media/media-socket.ts (one module instance: the mixer reaches its sockets by id).
const native = loadNativeAddon<NativeMixer>('src/rooms/native-mixer.ts', {
  roomCreate: true, roomDestroy: true, partAdd: true, partSet: true, partRemove: true, roomPoll: true, mixerStats: true, setBatching: true,
});

export const G711_PT = { PCMU: 0, PCMA: 8 } as const;
export type G711Codec = keyof typeof G711_PT;

/** One room in the native mixer. Every method is cheap; none runs per packet. */
export class MixerRoom {
  private readonly id = native.roomCreate();
  private closed = false;

  add(socketHandle: number, opts: { codec: G711Codec; dtmfPt: number | null; mode: ReceiveMode; speaker: boolean }): number {
    return native.partAdd(this.id, socketHandle, G711_PT[opts.codec], opts.dtmfPt ?? -1, MODE[opts.mode], opts.speaker ? 1 : 0);
  }

  set(part: number, opts: { muted: boolean; mode: ReceiveMode; speaker: boolean }): void {
    native.partSet(part, opts.muted ? 1 : 0, MODE[opts.mode], opts.speaker ? 1 : 0);
  }

  remove(part: number): void {
    native.partRemove(part);
  }

  /** Events since the last poll, and with `counters` every participant's counters. */
  poll(counters: boolean): ReturnType<NativeMixer['roomPoll']> {
    return native.roomPoll(this.id, counters ? 1 : 0);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    native.roomDestroy(this.id);
  }
}

/** The mixer's own cost: ticks run and the time they took, across all rooms; `batched` 1 when its sends go through io_uring. */
export const mixerStats = (): ReturnType<NativeMixer['mixerStats']> => native.mixerStats();

/**
 * Whether the mixer hands its sends to the kernel in batches (io_uring, on by default where the
 * addon was built with liburing and the kernel allows it) or one sendto each. Returns whether
 * batching is now in use. The bench compares both; nothing else needs to call it.
 */
export const setMixerBatching = (on: boolean): boolean => native.setBatching(on ? 1 : 0);
