/**
 * G.711 call load: per call two endpoints, each sending 172-byte RTP at 50 pps with real
 * sequence numbers and timestamps, and a send time in the payload for latency.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';

const PACKET = 172;
const TICK_MS = 5;
const PTIME_MS = 20;

class Endpoint {
  seq = Math.floor(Math.random() * 0xffff);
  ts = Math.floor(Math.random() * 0xffffffff);
  target = 0;
  readonly pkt = Buffer.alloc(PACKET, 0xd5);

  constructor(readonly socket: dgram.Socket, readonly port: number, ssrc: number, readonly slot: number) {
    this.pkt[0] = 0x80;
    this.pkt[1] = 0;
    this.pkt.writeUInt32BE(ssrc, 8);
  }

  send(measuring: boolean): void {
    this.pkt.writeUInt16BE(this.seq, 2);
    this.pkt.writeUInt32BE(this.ts >>> 0, 4);
    this.pkt.writeBigUInt64BE(process.hrtime.bigint(), 12);
    this.pkt[20] = measuring ? 1 : 0;
    this.seq = (this.seq + 1) & 0xffff;
    this.ts = (this.ts + 160) >>> 0;
    this.socket.send(this.pkt, this.target, '127.0.0.1');
  }
}

export interface StepResult {
  sent: number;
  received: number;
  latenciesUs: Float64Array;
}

export class Load {
  private readonly endpoints: Endpoint[] = [];
  private measuring = false;
  private sent = 0;
  private received = 0;
  /** Preallocated: a growing array would make the generator's own GC pauses show up as p99. */
  private latencies = new Float64Array(0);

  private async endpoint(ssrc: number): Promise<Endpoint> {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1');
    await once(s, 'listening');
    const ep = new Endpoint(s, s.address().port, ssrc, this.endpoints.length % (PTIME_MS / TICK_MS));
    s.on('message', (buf) => {
      if (buf.length !== PACKET || buf[20] !== 1) return;
      if (this.received < this.latencies.length) this.latencies[this.received] = Number(process.hrtime.bigint() - buf.readBigUInt64BE(12)) / 1000;
      this.received++;
    });
    this.endpoints.push(ep);
    return ep;
  }

  /** Two endpoints for one call; `anchor` tells each where to send. */
  async addCall(n: number, anchor: (a: number, b: number) => Promise<{ toA: number; toB: number }>): Promise<void> {
    const a = await this.endpoint(n * 2 + 1);
    const b = await this.endpoint(n * 2 + 2);
    const { toA, toB } = await anchor(a.port, b.port);
    a.target = toA;
    b.target = toB;
  }

  /** Sends for warmupMs (unmeasured: latching), then measures for measureMs. */
  async run(warmupMs: number, measureMs: number, onMeasureStart: () => void, onMeasureEnd: () => void): Promise<StepResult> {
    let tick = 0;
    const slots = PTIME_MS / TICK_MS;
    this.latencies = new Float64Array(Math.ceil(this.endpoints.length * (measureMs / PTIME_MS) * 1.2) + 1000);
    // Each endpoint sends in one of four 5 ms slots, so the 20 ms packet train is spread out.
    const timer = setInterval(() => {
      const slot = tick++ % slots;
      for (const ep of this.endpoints) if (ep.slot === slot) {
        ep.send(this.measuring);
        if (this.measuring) this.sent++;
      }
    }, TICK_MS);
    await new Promise((r) => setTimeout(r, warmupMs));
    this.measuring = true;
    onMeasureStart();
    await new Promise((r) => setTimeout(r, measureMs));
    this.measuring = false;
    onMeasureEnd();
    clearInterval(timer);
    await new Promise((r) => setTimeout(r, 300)); // in-flight packets
    return { sent: this.sent, received: this.received, latenciesUs: this.latencies.slice(0, Math.min(this.received, this.latencies.length)).sort() };
  }

  close(): void {
    for (const ep of this.endpoints) ep.socket.close();
  }
}

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}
