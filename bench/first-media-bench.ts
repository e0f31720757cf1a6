/**
 * npm run bench:first-media — how long after the 200 OK the caller hears the first frame, with
 * the key challenge (key policy) and without it (guarded), over paths of several round-trip
 * times. The caller is the SIP.js plugin's handler; the callee is another handler already
 * sending; the relay is keylatch's, in process. Between caller and relay sits a delay line, a
 * small UDP NAT that holds each datagram for RTT/2 each way.
 *
 * The challenge costs one round trip by design (HELLO→CHALLENGE, PROOF→latched). Guarded
 * latching instead waits for media.guarded.lockAfterPackets (3) packets from the caller. The
 * target from issue 4: key p50 − guarded p50 < RTT + 5 ms. Frames leave every 20 ms, so any
 * first-media figure carries up to 20 ms of waiting for the callee's next frame.
 *
 *   BENCH_RTTS=0,20,60  BENCH_CALLS=40
 */
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../src/config/load';
import { Relay } from '../src/media/relay';
import { DEFAULT_MEDIA_OPTIONS, KeylatchSessionDescriptionHandler } from '../plugins/sipjs/src';

const rtts = (process.env.BENCH_RTTS ?? '0,20,60').split(',').map(Number);
const calls = Number(process.env.BENCH_CALLS ?? 40);

/** One client behind a NAT with latency: a socket toward the client, one toward the relay. */
class DelayLine {
  private client: { address: string; port: number } | null = null;
  private closed = false;
  private constructor(private readonly inside: Socket, private readonly outside: Socket, private readonly oneWayMs: number, private readonly target: number) {
    inside.on('message', (b, r) => {
      this.client = { address: r.address, port: r.port };
      this.later(() => outside.send(b, target, '127.0.0.1'));
    });
    outside.on('message', (b) => this.client && this.later(() => inside.send(b, this.client!.port, this.client!.address)));
  }

  static async open(rttMs: number, target: number): Promise<DelayLine> {
    const [inside, outside] = [createSocket('udp4'), createSocket('udp4')];
    inside.bind(0, '127.0.0.1');
    outside.bind(0, '127.0.0.1');
    await Promise.all([once(inside, 'listening'), once(outside, 'listening')]);
    return new DelayLine(inside, outside, rttMs / 2, target);
  }

  get port(): number {
    return this.inside.address().port;
  }

  close(): void {
    this.closed = true;
    this.inside.close();
    this.outside.close();
  }

  private later(fn: () => void): void {
    const go = () => !this.closed && fn();
    if (this.oneWayMs <= 0) go();
    else setTimeout(go, this.oneWayMs);
  }
}

const handler = () =>
  new KeylatchSessionDescriptionHandler({ ...DEFAULT_MEDIA_OPTIONS, bindAddress: '127.0.0.1', sdpAddress: '127.0.0.1', secureSignalling: true, transportName: 'WSS' });

async function firstMedia(relay: Relay, policy: 'key' | 'guarded', rttMs: number, n: number): Promise<number> {
  const a = handler();
  const b = handler();
  let line: DelayLine | null = null;
  try {
    a.media.play({ toneHz: 1000 }, { loop: true });
    b.media.play({ toneHz: 440 }, { loop: true });
    const legs = { policy, secure: true, signallingAddress: '127.0.0.1' };
    const toB = await relay.offer({ callId: `fm-${n}`, fromTag: 'a', sdp: (await a.getDescription()).body, offerer: legs, answerer: legs });
    await b.setDescription(toB.sdp);
    const toA = (await relay.answer({ callId: `fm-${n}`, fromTag: 'a', toTag: 'b', sdp: (await b.getDescription()).body })).sdp;
    const relayPort = Number(/^m=audio (\d+)/m.exec(toA)![1]);
    line = await DelayLine.open(rttMs, relayPort);
    const viaLine = toA.replace(/^m=audio \d+/m, `m=audio ${line.port}`).replace(/^a=rtcp:\d+/m, `a=rtcp:${line.port}`);
    // The callee answered and is already sending; its 200 OK reaches the caller half a round trip later.
    await sleep(60 + rttMs / 2);
    const heard = once(a.media, 'first-media');
    await a.setDescription(viaLine);
    const [ms] = (await Promise.race([heard, sleep(5000).then(() => [NaN])])) as [number];
    return ms;
  } finally {
    a.close();
    b.close();
    line?.close();
    relay.delete({ callId: `fm-${n}` });
  }
}

const pct = (xs: number[], p: number) => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;

async function main(): Promise<void> {
  const media = loadConfig({ env: {} }).media;
  const relay = new Relay({ ...media, interface: '127.0.0.1', allowLoopbackPeers: true, portMin: 36000, portMax: 36199 });
  const cols = ['rtt ms', 'policy', 'calls', 'p50 ms', 'p90 ms', 'max ms', 'key−guarded', 'target', 'ok'];
  console.log(cols.map((c) => c.padStart(12)).join(''));
  let n = 0;
  for (const rtt of rtts) {
    const p50: Record<string, number> = {};
    for (const policy of ['guarded', 'key'] as const) {
      const xs: number[] = [];
      for (let i = 0; i < calls; i++) xs.push(await firstMedia(relay, policy, rtt, n++));
      const ok = xs.filter((x) => Number.isFinite(x));
      p50[policy] = pct(ok, 50);
      const delta = policy === 'key' ? p50.key! - p50.guarded! : null;
      const row = [rtt, policy, `${ok.length}/${xs.length}`, p50[policy], pct(ok, 90), Math.max(...ok),
        delta === null ? '' : delta, delta === null ? '' : `< ${rtt + 5}`, delta === null ? '' : delta < rtt + 5 ? 'yes' : 'NO'];
      console.log(row.map((c) => String(c).padStart(12)).join(''));
    }
  }
  await relay.close();
}

void main();
