import { rtpSeq, rtpSsrc, rtpTimestamp } from './packet';

const SEQ_MOD = 1 << 16;
const MAX_DROPOUT = 3000;
const MAX_MISORDER = 100;

/**
 * Receive statistics of one RTP source, per RFC 3550 appendix A.1 (sequence tracking) and
 * A.8 (interarrival jitter). Restarts on a new SSRC.
 */
export class RtpReceiveStats {
  ssrc = -1;
  private baseSeq = 0;
  private maxSeq = 0;
  private cycles = 0;
  private received = 0;
  private transit = 0;
  private jitterUnits = 0;

  constructor(private clockRate = 8000) {}

  setClockRate(rate: number): void {
    if (rate > 0) this.clockRate = rate;
  }

  update(buf: Buffer, arrivalMs: number): void {
    const ssrc = rtpSsrc(buf);
    const seq = rtpSeq(buf);
    if (ssrc !== this.ssrc) this.restart(ssrc, seq);
    const delta = (seq - this.maxSeq + SEQ_MOD) % SEQ_MOD;
    if (delta > 0 && delta < MAX_DROPOUT) {
      if (seq < this.maxSeq) this.cycles += SEQ_MOD;
      this.maxSeq = seq;
    } else if (delta !== 0 && delta <= SEQ_MOD - MAX_MISORDER) {
      this.restart(ssrc, seq); // a big jump: the sender restarted its sequence
    }
    this.received++;
    const arrivalUnits = (arrivalMs * this.clockRate) / 1000;
    const transit = arrivalUnits - rtpTimestamp(buf);
    if (this.received > 1) {
      const d = Math.abs(transit - this.transit);
      this.jitterUnits += (d - this.jitterUnits) / 16;
    }
    this.transit = transit;
  }

  private restart(ssrc: number, seq: number): void {
    this.ssrc = ssrc;
    this.baseSeq = seq;
    this.maxSeq = seq;
    this.cycles = 0;
    this.received = 0;
    this.jitterUnits = 0;
  }

  get expected(): number {
    return this.received === 0 ? 0 : this.cycles + this.maxSeq - this.baseSeq + 1;
  }

  get lost(): number {
    return Math.max(0, this.expected - this.received);
  }

  get jitterMs(): number {
    return (this.jitterUnits * 1000) / this.clockRate;
  }

  /** The extended highest sequence number seen, for spotting a continuing stream. */
  get extendedMaxSeq(): number {
    return this.cycles + this.maxSeq;
  }

  get lastSeq(): number {
    return this.maxSeq;
  }
}
