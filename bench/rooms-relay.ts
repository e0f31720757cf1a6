/**
 * The relay side of npm run bench:rooms: a Relay and a RoomRegistry in their own process
 * (pinned to one core by the bench), driven over IPC. Each participant is joined as the SIP
 * edge would join it, minus SIP: a guarded leg whose media the mixer takes once it latches.
 */
import { loadConfig } from '../src/config/load';
import { Relay } from '../src/media/relay';
import { mixerStats, setMixerBatching } from '../src/rooms/native-mixer';
import { RoomRegistry } from '../src/rooms/registry';

type Command =
  | { id: number; op: 'join'; room: string; who: string; port: number; forward: boolean }
  | { id: number; op: 'stats' }
  | { id: number; op: 'reset' };

const config = loadConfig({ env: {} });
// BENCH_ROOMS_BATCHING=0: the mixer sends one sendto at a time (the before of the io_uring batching).
const batched = setMixerBatching(process.env.BENCH_ROOMS_BATCHING !== '0');
// The relay's address and its participants' (bench/rooms-net.ts: loopback, or two ends of a veth).
const relayAddress = process.env.BENCH_ROOMS_RELAY_ADDRESS ?? '127.0.0.1';
const peerAddress = process.env.BENCH_ROOMS_PEER_ADDRESS ?? '127.0.0.1';
const media = { ...config.media, interface: relayAddress, allowLoopbackPeers: true, portMin: 20000, portMax: 59999, timeouts: { mediaSec: 3600, holdSec: 3600 } };
const relay = new Relay(media);
let rooms = new RoomRegistry({ ...config.rooms, enabled: true, maxParticipants: 10000, broadcast: [{ name: 'broadcast', speakers: ['sip:speaker@bench'] }] }, relay, media);

const offer = (port: number, forward: boolean): string =>
  ['v=0', `o=- 1 1 IN IP4 ${peerAddress}`, 's=-', `c=IN IP4 ${peerAddress}`, 't=0 0', `m=audio ${port} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000', ...(forward ? ['a=keylatch-room:forward'] : []), ''].join('\r\n');

process.on('message', (cmd: Command) => {
  void (async () => {
    try {
      if (cmd.op === 'join') {
        const { participant } = await rooms.join(cmd.room, cmd.who, { policy: 'guarded', secure: false, signallingAddress: peerAddress }, offer(cmd.port, cmd.forward));
        const relayPort = Number(/m=audio (\d+)/.exec(participant.answer(offer(cmd.port, cmd.forward)))![1]);
        process.send!({ id: cmd.id, relayPort, mode: participant.mode });
      } else if (cmd.op === 'stats') {
        const latched = rooms.list().reduce((n, r) => n + r.participants().filter((p) => p.latched).length, 0);
        const buffers = rooms.list().flatMap((r) => { r.poll(); return r.participants().map((p) => p.counters?.bufferMs ?? 0); });
        process.send!({ id: cmd.id, mixer: mixerStats(), latched, bufferMs: buffers.length ? buffers.reduce((a, b) => a + b, 0) / buffers.length : 0, portsInUse: relay.pool.inUse });
      } else {
        rooms.close();
        rooms = new RoomRegistry(rooms.config, relay, media);
        process.send!({ id: cmd.id });
      }
    } catch (err) {
      process.send!({ id: cmd.id, error: (err as Error).message });
    }
  })();
});
// The bench went away (finished or killed): so does its relay.
process.on('disconnect', () => process.exit(0));
process.send!({ ready: true, batched });
