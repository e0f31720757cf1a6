/**
 * A media endpoint for the namespace tests: binds one UDP port, proves its key if it has one
 * (exactly as the SIP.js plugin will, through the shared protocol module), sends paced G.711
 * RTP and reports what it received as JSON lines.
 */
import dgram from 'node:dgram';
import { ChallengeProver, ProtocolError, decode, looksLikeStun, type Endpoint } from '../../src/media/challenge';

interface Args {
  relay: Endpoint;
  localPort: number;
  ssrc: number;
  peerSsrc: number;
  durationMs: number;
  legId?: string;
  key?: string;
}

const args = JSON.parse(process.argv[2]!) as Args;
const out = (o: object): void => void process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
const socket = dgram.createSocket('udp4');
const prover = args.legId && args.key ? new ChallengeProver(args.legId, Buffer.from(args.key, 'base64url')) : null;
let latched = prover === null;
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
    lastPeerAt = now;
  }
});

socket.bind(args.localPort, () => {
  const started = Date.now();
  let seq = 0;
  const hello = setInterval(() => {
    if (prover && !latched) socket.send(prover.hello(), args.relay.port, args.relay.address);
  }, 200);
  if (prover) socket.send(prover.hello(), args.relay.port, args.relay.address);
  const pkt = Buffer.alloc(172, 0xd5);
  pkt[0] = 0x80;
  pkt[1] = 0; // PCMU
  pkt.writeUInt32BE(args.ssrc, 8);
  const pace = setInterval(() => {
    if (Date.now() - started > args.durationMs) {
      clearInterval(pace);
      clearInterval(hello);
      out({ event: 'done', sent: seq, received: Object.fromEntries(received), maxGapMs, stunIn, latched });
      socket.close();
      return;
    }
    if (!latched) return;
    pkt.writeUInt16BE(seq & 0xffff, 2);
    pkt.writeUInt32BE((seq * 160) >>> 0, 4);
    seq++;
    socket.send(pkt, args.relay.port, args.relay.address);
  }, 20);
});
