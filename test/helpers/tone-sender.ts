/**
 * A phone's sound card for tests on loopback: a G.711 tone in 20 ms RTP packets from a Peer's
 * own socket, paced by the clock rather than by counting timer callbacks (which run late on a
 * busy box), so a late timer sends the packets it owes and the stream keeps its rate.
 */
import { encodeG711, tone } from '../../src/codec/g711';
import type { Endpoint } from '../../src/media/challenge';
import { rtp, type Peer } from './peers';

export interface ToneOptions {
  ssrc?: number;
  /** 0 (PCMU, the default) or 8 (PCMA). */
  pt?: number;
  /** Wall-clock time per 20 ms packet: 21 is a sound card running 5 % slow. */
  packetMs?: number;
}

export interface ToneSender {
  stop(): void;
  sent(): number;
}

function startTone(p: Peer, to: Endpoint, hz: number, opts: ToneOptions): ToneSender {
  let n = 0;
  const ssrc = opts.ssrc ?? Math.floor(Math.random() * 2 ** 32);
  const pt = opts.pt ?? 0;
  const t0 = Date.now();
  const timer = setInterval(() => {
    try {
      while (n <= (Date.now() - t0) / (opts.packetMs ?? 20)) {
        p.send(Buffer.concat([rtp(n, n * 160, ssrc, 0, pt), encodeG711(pt === 8 ? 'PCMA' : 'PCMU', tone(hz, 160, n * 160))]), to);
        n++;
      }
    } catch (err) {
      // The peer's socket closed first (test teardown runs in no set order): the phone hung up.
      if ((err as NodeJS.ErrnoException).code !== 'ERR_SOCKET_DGRAM_NOT_RUNNING') throw err;
      clearInterval(timer);
    }
  }, 10);
  return { stop: () => clearInterval(timer), sent: () => n };
}

/** sendTone() for one test file: every sender it starts is stopped after each test. */
export function toneSenders(): (p: Peer, to: Endpoint, hz: number, opts?: ToneOptions) => ToneSender {
  const running: ToneSender[] = [];
  afterEach(() => running.splice(0).forEach((s) => s.stop()));
  return (p, to, hz, opts = {}) => {
    const s = startTone(p, to, hz, opts);
    running.push(s);
    return s;
  };
}
