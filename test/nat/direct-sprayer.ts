/**
 * The attacker of test/nat/direct-media.test.ts: it knows both clients' NAT mappings (the worst
 * case: it watched the relay's traffic) and the relay's ports, but none of the keys. For
 * durationMs it sprays the clients with hellos for made-up and real-looking pair ids, RTP and
 * RTCP, and the relay with the same; from FORGED_PORT (which the test SNATs to the relay's own
 * address and port for each client) it sends forged rendezvous naming the attacker as the peer.
 * It reports how much it sent and everything it got back.
 */
import dgram from 'node:dgram';
import { encodeHello, encodeRendezvous, newLegId, newLegKey, type Endpoint } from '../../src/media/challenge';
import { rtp } from '../helpers/peers';

const FORGED_PORT = 40000; // test/nat/direct-media.test.ts SNATs this port to the relay's

interface Args {
  targets: Endpoint[];
  relay: string;
  relayPorts: number[];
  legIds: string[];
  me: string;
  durationMs: number;
}

const args = JSON.parse(process.argv[2]!) as Args;
const socket = dgram.createSocket('udp4');
const forger = dgram.createSocket('udp4');
let sent = 0;
let received = 0;
socket.on('message', () => received++);
forger.on('message', () => received++);
socket.on('error', () => undefined);
forger.on('error', () => undefined);

const rtcp = Buffer.from([0x80, 200, 0, 1, 0, 0, 0x0b, 0xad]);

socket.bind(0, () => forger.bind(FORGED_PORT, () => {
  const started = Date.now();
  let seq = 0;
  const timer = setInterval(() => {
    if (Date.now() - started > args.durationMs) {
      clearInterval(timer);
      setTimeout(() => {
        process.stdout.write(`${JSON.stringify({ event: 'done', sent, received })}\n`);
        socket.close();
        forger.close();
      }, 300); // late replies count too
      return;
    }
    seq++;
    const send = (s: dgram.Socket, b: Buffer, to: Endpoint): void => {
      s.send(b, to.port, to.address);
      sent++;
    };
    const probes = [
      encodeHello(newLegKey(), `${newLegId()}-a`),
      encodeHello(newLegKey(), `${newLegId()}-b`),
      ...args.legIds.map((l) => encodeHello(newLegKey(), l)),
      rtp(seq, seq * 160, 0xbad, 160, 0),
      rtcp,
    ];
    for (const t of args.targets) {
      for (const p of probes) send(socket, p, t);
      // A rendezvous that would send this client's media to the attacker, under a key it made up.
      for (const legId of args.legIds) send(forger, encodeRendezvous(newLegKey(), legId, { pairId: newLegId(), side: 'a', pairKey: newLegKey(), peer: { address: args.me, port: FORGED_PORT } }), t);
    }
    for (const port of args.relayPorts) for (const p of probes) send(socket, p, { address: args.relay, port });
  }, 20);
}));
