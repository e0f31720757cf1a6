/**
 * Classifying and sanity-checking datagrams on a media port, without allocating.
 * rtp-parser would allocate an object and a slice per packet; the relay reads three fields.
 */
export type PacketClass = 'stun' | 'rtp' | 'rtcp' | 'malformed';

/** RFC 7983 first-byte ranges, then RFC 5761 payload types 64..95 (marker folded) for RTCP. */
export function classify(buf: Buffer): PacketClass {
  if (buf.length === 0) return 'malformed';
  const b0 = buf[0]!;
  if (b0 < 4) return 'stun';
  if (b0 < 128 || b0 > 191) return 'malformed';
  if (buf.length < 2) return 'malformed';
  const pt = buf[1]! & 0x7f;
  if (pt >= 64 && pt <= 95) return validRtcp(buf) ? 'rtcp' : 'malformed';
  return validRtp(buf) ? 'rtp' : 'malformed';
}

function validRtp(buf: Buffer): boolean {
  const b0 = buf[0]!;
  let header = 12 + (b0 & 0x0f) * 4;
  if (buf.length < header) return false;
  if (b0 & 0x10) {
    if (buf.length < header + 4) return false;
    header += 4 + buf.readUInt16BE(header + 2) * 4;
    if (buf.length < header) return false;
  }
  // The padding count is not checked: under SRTP the last byte belongs to the auth tag.
  return true;
}

/** Walks the compound packet: every part must be version 2 and end exactly at the datagram's end. */
function validRtcp(buf: Buffer): boolean {
  let at = 0;
  while (at < buf.length) {
    if (at + 4 > buf.length) return false;
    if (buf[at]! >> 6 !== 2) return false;
    const next = at + (buf.readUInt16BE(at + 2) + 1) * 4;
    if (next > buf.length) return false;
    at = next;
  }
  return at === buf.length && buf.length >= 8;
}

export const rtpSeq = (buf: Buffer): number => buf.readUInt16BE(2);
export const rtpTimestamp = (buf: Buffer): number => buf.readUInt32BE(4);
export const rtpSsrc = (buf: Buffer): number => buf.readUInt32BE(8);
/** Sender SSRC of the first RTCP part. */
export const rtcpSsrc = (buf: Buffer): number => buf.readUInt32BE(4);
