/** Just enough RTP (RFC 3550) and telephone-event (RFC 4733) for a G.711 phone. */

export interface RtpPacket {
  pt: number;
  marker: boolean;
  seq: number;
  timestamp: number;
  ssrc: number;
  payload: Buffer;
}

export function encodeRtp(p: RtpPacket): Buffer {
  const b = Buffer.alloc(12 + p.payload.length);
  b[0] = 0x80;
  b[1] = (p.marker ? 0x80 : 0) | (p.pt & 0x7f);
  b.writeUInt16BE(p.seq & 0xffff, 2);
  b.writeUInt32BE(p.timestamp >>> 0, 4);
  b.writeUInt32BE(p.ssrc >>> 0, 8);
  p.payload.copy(b, 12);
  return b;
}

/** null for anything that is not a well-formed RTP packet; the caller counts and drops it. */
export function decodeRtp(b: Buffer): RtpPacket | null {
  if (b.length < 12 || b[0]! >> 6 !== 2) return null;
  const pt = b[1]! & 0x7f;
  if (pt >= 72 && pt <= 76) return null; // RTCP SR/RR/SDES/BYE/APP under rtcp-mux (RFC 5761 section 4)
  let offset = 12 + (b[0]! & 0x0f) * 4;
  if (b[0]! & 0x10) {
    if (b.length < offset + 4) return null;
    offset += 4 + b.readUInt16BE(offset + 2) * 4;
  }
  let end = b.length;
  if (b[0]! & 0x20) end -= b[b.length - 1]!;
  if (offset > end) return null;
  return { pt, marker: (b[1]! & 0x80) !== 0, seq: b.readUInt16BE(2), timestamp: b.readUInt32BE(4), ssrc: b.readUInt32BE(8), payload: b.subarray(offset, end) };
}

export const isRtcp = (b: Buffer): boolean => b.length >= 8 && b[0]! >> 6 === 2 && b[1]! >= 192 && b[1]! <= 223;

/** Loss and interarrival jitter as RFC 3550 appendix A.1 and A.8 compute them. */
export class ReceiveStats {
  packets = 0;
  octets = 0;
  private baseSeq = -1;
  private maxSeq = 0;
  private cycles = 0;
  private transit: number | null = null;
  private jitter = 0;

  constructor(private readonly clockRate: number) {}

  onPacket(p: RtpPacket, arrivalMs: number): void {
    this.packets++;
    this.octets += p.payload.length;
    if (this.baseSeq < 0) {
      this.baseSeq = p.seq;
      this.maxSeq = p.seq;
    } else {
      const delta = (p.seq - this.maxSeq + 0x10000) & 0xffff;
      if (delta > 0 && delta < 0x8000) {
        if (p.seq < this.maxSeq) this.cycles += 0x10000;
        this.maxSeq = p.seq;
      }
    }
    const transit = (arrivalMs * this.clockRate) / 1000 - p.timestamp;
    if (this.transit !== null) {
      const d = Math.abs(transit - this.transit);
      this.jitter += (d - this.jitter) / 16;
    }
    this.transit = transit;
  }

  get expected(): number {
    return this.baseSeq < 0 ? 0 : this.cycles + this.maxSeq - this.baseSeq + 1;
  }

  get lost(): number {
    return Math.max(0, this.expected - this.packets);
  }

  get jitterMs(): number {
    return (this.jitter * 1000) / this.clockRate;
  }
}

export const DTMF_EVENTS = '0123456789*#ABCD';

/** Digits RFC 4733 events 0-15 can carry. */
export const isDtmfString = (digits: string): boolean => /^[0-9A-D#*]+$/i.test(digits);

export interface DtmfEvent {
  digit: string;
  end: boolean;
  volume: number;
  duration: number;
}

export function encodeDtmf(digit: string, end: boolean, duration: number, volume = 10): Buffer {
  const event = DTMF_EVENTS.indexOf(digit.toUpperCase());
  if (event < 0) throw new RangeError(`not a DTMF digit: ${digit}`);
  const b = Buffer.alloc(4);
  b[0] = event;
  b[1] = (end ? 0x80 : 0) | (volume & 0x3f);
  b.writeUInt16BE(Math.min(duration, 0xffff), 2);
  return b;
}

export function decodeDtmf(payload: Buffer): DtmfEvent | null {
  if (payload.length < 4 || payload[0]! >= DTMF_EVENTS.length) return null;
  return { digit: DTMF_EVENTS[payload[0]!]!, end: (payload[1]! & 0x80) !== 0, volume: payload[1]! & 0x3f, duration: payload.readUInt16BE(2) };
}

/** A receiver report (or sender report) with our CNAME: the compound packet RFC 3550 asks for. */
export function encodeRtcpReport(ssrc: number, cname: string, sent: { packets: number; octets: number; timestamp: number } | null): Buffer {
  const parts: Buffer[] = [];
  if (sent) {
    const sr = Buffer.alloc(28);
    sr[0] = 0x80;
    sr[1] = 200;
    sr.writeUInt16BE(6, 2);
    sr.writeUInt32BE(ssrc >>> 0, 4);
    const ntp = Date.now() / 1000 + 2208988800;
    sr.writeUInt32BE(Math.floor(ntp) >>> 0, 8);
    sr.writeUInt32BE(Math.floor((ntp % 1) * 0x100000000) >>> 0, 12);
    sr.writeUInt32BE(sent.timestamp >>> 0, 16);
    sr.writeUInt32BE(sent.packets >>> 0, 20);
    sr.writeUInt32BE(sent.octets >>> 0, 24);
    parts.push(sr);
  } else {
    const rr = Buffer.alloc(8);
    rr[0] = 0x80;
    rr[1] = 201;
    rr.writeUInt16BE(1, 2);
    rr.writeUInt32BE(ssrc >>> 0, 4);
    parts.push(rr);
  }
  const text = Buffer.from(cname.slice(0, 255), 'utf8');
  const itemLen = 2 + text.length + 1; // type, length, text, end-of-list
  const words = Math.ceil((4 + itemLen) / 4);
  const sdes = Buffer.alloc(4 + words * 4);
  sdes[0] = 0x81;
  sdes[1] = 202;
  sdes.writeUInt16BE(words, 2);
  sdes.writeUInt32BE(ssrc >>> 0, 4);
  sdes[8] = 1;
  sdes[9] = text.length;
  text.copy(sdes, 10);
  parts.push(sdes);
  return Buffer.concat(parts);
}
