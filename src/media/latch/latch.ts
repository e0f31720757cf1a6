import type { Endpoint } from '../challenge';

export type LatchPolicy = 'key' | 'guarded';
export type MediaClass = 'rtp' | 'rtcp';

/** What a latch may do to the relay port it guards. */
export interface LatchHost {
  readonly latched: Endpoint | null;
  latchTo(source: Endpoint, now: number): void;
  unlatch(): void;
  /** Sends a protocol message (not media) straight to a source. */
  reply(buf: Buffer, to: Endpoint): void;
  drop(reason: DropReason): void;
}

export type DropReason =
  | 'malformed'
  | 'unlatched-source'
  | 'outside-learning-window'
  | 'unexpected-source-ip'
  | 'ambiguous-source'
  | 'spraying-source'
  | 'stun-invalid'
  | 'unknown-leg'
  | 'proof-rejected'
  | 'hello-rejected'
  | 'rate-limited'
  | 'no-destination'
  | 'internal-error';

export interface Latch {
  readonly policy: LatchPolicy;
  /** 'learning' | 'locked' for guarded; 'unauthenticated' | 'challenged' | 'authenticated' for key. */
  readonly state: string;
  /** May media go to the SDP-given address before anything has latched? */
  readonly sendsBeforeLatch: boolean;
  /** When the source last proved a key (key latches): proof of life even with no media through us. */
  readonly provedAt?: number;
  onStun(buf: Buffer, from: Endpoint, now: number): void;
  /** Media from a source other than the latched one. True means: latched now, forward it. */
  onForeignMedia(buf: Buffer, from: Endpoint, cls: MediaClass, now: number): boolean;
  /** A signalling event for this leg happened (offer, answer, update). */
  onSignalling(now: number): void;
  tick(now: number): void;
}
