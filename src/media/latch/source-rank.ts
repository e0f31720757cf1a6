/**
 * How much signalling vouches for a media source's IP, for guarded latching. A higher rank
 * wins a learning window over a lower one and may take a lock away from it; the unnamed rank
 * may lock only as the one plausible stream on its port (see GuardedLatch).
 */
import { isPrivateAddress } from '../../nat/private-address';

export const Rank = {
  /** Signalling said nothing about this IP. */
  unnamed: 1,
  /** The SIP source (`received-from`), a private SDP address, or an IP this leg already locked onto. */
  signalled: 2,
  /** A public SDP connection address. */
  described: 3,
  /** Named by the ng caller (`media-address`, or `received-from` under `SIP-source-address`). */
  asserted: 4,
} as const;
export type SourceRank = (typeof Rank)[keyof typeof Rank];

/** Whose word to take for where a leg's media comes from: rtpengine's ng flags of the same names. */
export type AddressTrust =
  /** SDP addresses and the SIP source are both named (the default). */
  | 'both'
  /** `trust-address`: the SDP is the endpoint; the SIP source is only a hop. */
  | 'sdp'
  /** `SIP-source-address`: the SIP source is the endpoint; SDP addresses are ignored. */
  | 'sip-source';

export interface LegEvidence {
  /** ng `media-address`: overrides both the SDP and the SIP source. */
  mediaAddress: string | null;
  trust: AddressTrust;
  signallingAddress: string | null;
  sdpAddresses: Iterable<string>;
  /** The IP this leg locked onto first: once learned, it is named for the rest of the call. */
  learnedIp: string | null;
}

/** The rank of `ip` as a media source of the leg `e` describes. */
export function rankSource(e: LegEvidence, ip: string): SourceRank {
  if (e.mediaAddress !== null) return ip === e.mediaAddress ? Rank.asserted : ip === e.learnedIp ? Rank.signalled : Rank.unnamed;
  if (e.trust === 'sip-source' && ip === e.signallingAddress) return Rank.asserted;
  if (e.trust !== 'sip-source') {
    for (const a of e.sdpAddresses) if (a === ip) return isPrivateAddress(ip) ? Rank.signalled : Rank.described;
  }
  if (e.trust !== 'sdp' && ip === e.signallingAddress) return Rank.signalled;
  if (ip === e.learnedIp) return Rank.signalled;
  return Rank.unnamed;
}
