/**
 * A media endpoint for the namespace tests: binds one UDP port, proves its key if it has one
 * (exactly as the SIP.js plugin will, through the shared protocol module), sends paced G.711
 * RTP and reports what it received as JSON lines.
 *
 * It is driven like a phone: started, it binds and says `ready`; media starts only on a
 * `start` command naming the relay port (and key) from the answer, and ends on `stop`.
 * Starting node and compiling TypeScript takes seconds on a loaded machine; a call whose
 * clock ran from the spawn would spend its learning window and its "mid-call" moments
 * before the first packet.
 */
import dgram from 'node:dgram';
import readline from 'node:readline';
import { ChallengeProver, ProtocolError, decode, looksLikeStun, type Endpoint } from '../../src/media/challenge';

interface Args {
  localPort: number;
  ssrc: number;
  peerSsrc: number;
}

interface Start {
  cmd: 'start';
  relay: Endpoint;
  legId?: string;
  key?: string;
}

const args = JSON.parse(process.argv[2]!) as Args;
const out = (o: object): void => void process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
const socket = dgram.createSocket('udp4');
let prover: ChallengeProver | null = null;
let latched = false;
const received = new Map<number, number>();
let lastPeerAt = 0;
let maxGapMs = 0;
let stunIn = 0;

socket.on('message', (buf, r) => {
  if (looksLikeStun(buf)) {
    stunIn++;
    if (!prover) return;
    try {
      const ev = prover.onMessage(decode(buf), { address: r.address, port: r.port });
      if (ev.type === 'proof-sent') socket.send(ev.reply, ev.to.port, ev.to.address);
      if (ev.type === 'latched') {
        latched = true;
        out({ event: 'latched', mapping: ev.mapping, changed: ev.mappingChanged });
      }
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
    }
    return;
  }
  if (buf.length < 12) return;
  const ssrc = buf.readUInt32BE(8);
  received.set(ssrc, (received.get(ssrc) ?? 0) + 1);
  if (ssrc === args.peerSsrc) {
    const now = Date.now();
    if (lastPeerAt) maxGapMs = Math.max(maxGapMs, now - lastPeerAt);
    else out({ event: 'first-media' });
    lastPeerAt = now;
  }
});

let seq = 0;
let timers: NodeJS.Timeout[] = [];

function start(cmd: Start): void {
  const relay = cmd.relay;
  prover = cmd.legId && cmd.key ? new ChallengeProver(cmd.legId, Buffer.from(cmd.key, 'base64url')) : null;
  latched = prover === null;
  const hello = (): void => {
    if (prover && !latched) socket.send(prover.hello(), relay.port, relay.address);
  };
  hello();
  const pkt = Buffer.alloc(172, 0xd5);
  pkt[0] = 0x80;
  pkt[1] = 0; // PCMU
  pkt.writeUInt32BE(args.ssrc, 8);
  const pace = (): void => {
    if (!latched) return;
    pkt.writeUInt16BE(seq & 0xffff, 2);
    pkt.writeUInt32BE((seq * 160) >>> 0, 4);
    seq++;
    socket.send(pkt, relay.port, relay.address);
  };
  timers = [setInterval(hello, 200), setInterval(pace, 20)];
}

let stopped = false;
function stop(): void {
  if (stopped) return;
  stopped = true;
  for (const t of timers) clearInterval(t);
  out({ event: 'done', sent: seq, received: Object.fromEntries(received), maxGapMs, stunIn, latched });
  socket.close();
  process.stdin.destroy();
}

socket.bind(args.localPort, () => {
  out({ event: 'ready' });
  const commands = readline.createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    const cmd = JSON.parse(line) as Start | { cmd: 'stop' };
    if (cmd.cmd === 'start') start(cmd);
    else stop();
  });
  // A test that died without saying stop: do not outlive it.
  commands.on('close', stop);
});
