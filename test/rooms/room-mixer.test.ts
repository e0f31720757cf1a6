/**
 * The room mixer (native/mixer.c) over real UDP on loopback: participants behind guarded legs
 * send their own tones, and what each receives is checked by frequency (Goertzel), not just
 * loudness. Also mute, DTMF, a sprayer, forwarding and a broadcast room's relayed stream.
 */
import { decodeG711 } from '../../src/codec/g711';
import { blockToneShare as toneShare } from '../../src/codec/goertzel';
import type { Endpoint } from '../../src/media/challenge';
import type { Relay } from '../../src/media/relay';
import { RoomRegistry } from '../../src/rooms/registry';
import type { Room } from '../../src/rooms/room';
import { Peer, mediaPorts, newRelay, sleep, testMediaConfig, testPeers, waitFor } from '../helpers/peers';
import { toneSenders } from '../helpers/tone-sender';

const peer = testPeers();
let relay: Relay;
let rooms: RoomRegistry;
const sendTone = toneSenders();

afterEach(async () => {
  rooms?.close();
  await relay?.close();
});

/** A phone's offer: PCMU, PCMA and telephone-event, or with `a=x-pcma-only` PCMA alone. */
function offer(ip: string, port: number, extra: string[] = []): string {
  const pcmaOnly = extra.includes('a=x-pcma-only');
  return ['v=0', `o=- 1 1 IN IP4 ${ip}`, 's=-', `c=IN IP4 ${ip}`, 't=0 0', `m=audio ${port} RTP/AVP ${pcmaOnly ? '8' : '0 8'} 101`,
    ...(pcmaOnly ? [] : ['a=rtpmap:0 PCMU/8000']), 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:101 telephone-event/8000', ...extra].join('\r\n') + '\r\n';
}

/** The audio a peer received since `from` (an index into its packets), in arrival order. */
function heard(p: Peer, from = 0): Int16Array {
  const parts = p.media().slice(from).filter((b) => (b[1]! & 0x7f) === 0 || (b[1]! & 0x7f) === 8).map((b) => decodeG711((b[1]! & 0x7f) === 8 ? 'PCMA' : 'PCMU', b.subarray(12)));
  const out = new Int16Array(parts.reduce((n, x) => n + x.length, 0));
  let at = 0;
  for (const x of parts) {
    out.set(x, at);
    at += x.length;
  }
  return out;
}

interface Member {
  peer: Peer;
  relayEp: Endpoint;
  room: Room;
  id: string;
}

async function join(name: string, ip: string, who: string, extra: string[] = []): Promise<Member> {
  const p = await peer(ip);
  const { room, participant } = await rooms.join(name, who, { policy: 'guarded', secure: false, signallingAddress: ip }, offer(ip, p.port, extra));
  const answer = participant.answer(offer(ip, p.port, extra));
  return { peer: p, relayEp: { address: '127.0.0.1', port: mediaPorts(answer)[0]! }, room, id: participant.id };
}

function start(over: { broadcast?: Array<{ name: string; speakers: string[] }> } = {}): void {
  relay = newRelay();
  const media = testMediaConfig();
  rooms = new RoomRegistry({ enabled: true, prefix: 'room-', names: null, maxParticipants: 10, broadcast: over.broadcast ?? [] }, relay, media);
}

const TONES = [440, 700, 1000, 1400];

describe('room mixer', () => {
  it('each of four participants hears the three others and not itself; mute takes one out; a sprayer is not heard', async () => {
    start();
    const m = await Promise.all(TONES.map((_, i) => join('standup', `127.0.0.${i + 2}`, `sip:p${i}@test`)));
    const tx = m.map((x, i) => sendTone(x.peer, x.relayEp, TONES[i]!));
    // An attacker on the first participant's port, from an address nobody signalled.
    const attacker = await peer('127.0.0.9');
    sendTone(attacker, m[0]!.relayEp, 2000);
    await waitFor(() => m.every((x) => x.room.get(x.id)!.latched), 3000);
    await sleep(300);
    const marks = m.map((x) => x.peer.media().length);
    await sleep(1500);

    m.forEach((x, i) => {
      const got = heard(x.peer, marks[i]);
      expect(got.length).toBeGreaterThan(8000 * 1.2);
      TONES.forEach((hz, j) => {
        const share = toneShare(got, hz);
        if (j === i) expect(share).toBeLessThan(0.02);
        else expect(share).toBeGreaterThan(0.2);
      });
      expect(toneShare(got, 2000)).toBeLessThan(0.02);
    });
    expect(attacker.media()).toHaveLength(0);

    // Mute participant 1: the others stop hearing 700 Hz.
    const room = m[0]!.room;
    room.mute(room.get(m[1]!.id)!, true);
    await sleep(300);
    const after = m[0]!.peer.media().length;
    await sleep(1000);
    const got = heard(m[0]!.peer, after);
    expect(toneShare(got, 700)).toBeLessThan(0.02);
    expect(toneShare(got, 1000)).toBeGreaterThan(0.2);
    tx.forEach((t) => t.stop());
  }, 20000);

  it('reports DTMF without mixing it, and a participant who leaves stops being heard', async () => {
    start();
    const a = await join('desk', '127.0.0.2', 'sip:a@test');
    const b = await join('desk', '127.0.0.3', 'sip:b@test');
    sendTone(a.peer, a.relayEp, 440);
    sendTone(b.peer, b.relayEp, 1000, { ssrc: 77 });
    await waitFor(() => a.room.get(a.id)!.latched && b.room.get(b.id)!.latched, 3000);
    const keys: string[] = [];
    a.room.on('dtmf', (p, key) => keys.push(`${p.who}:${key}`));
    // RFC 4733 '5': three end packets of one event, from b's latched source.
    for (let i = 0; i < 3; i++) {
      const ev = Buffer.alloc(16);
      ev[0] = 0x80;
      ev[1] = 101;
      ev.writeUInt16BE(60000 + i, 2);
      ev.writeUInt32BE(123456, 4);
      ev.writeUInt32BE(77, 8);
      ev[12] = 5;
      ev[13] = 0x80 | 10;
      ev.writeUInt16BE(800, 14);
      b.peer.send(ev, b.relayEp);
    }
    await waitFor(() => keys.length > 0, 2000);
    await sleep(200);
    expect(keys).toEqual(['sip:b@test:5']);

    const room = a.room;
    room.leave(room.get(b.id)!, 'removed');
    await sleep(300);
    const mark = a.peer.media().length;
    await sleep(600);
    const got = heard(a.peer, mark);
    expect(got.length).toBeGreaterThan(2000);
    expect(toneShare(got, 1000)).toBeLessThan(0.02);
    expect(relay.pool.inUse).toBe(1);
  }, 15000);

  it('a phone whose clock runs 5 % slow is heard cleanly: the buffer waits for it instead of dropping its packets as late', async () => {
    start();
    const a = await join('drift', '127.0.0.2', 'sip:a@test');
    const slow = await join('drift', '127.0.0.3', 'sip:slow@test');
    sendTone(a.peer, a.relayEp, 440);
    sendTone(slow.peer, slow.relayEp, 1000, { packetMs: 21 });
    await waitFor(() => a.room.get(a.id)!.latched && slow.room.get(slow.id)!.latched, 3000);
    await sleep(300);
    const mark = a.peer.media().length;
    await sleep(3000);
    a.room.poll();
    const counters = a.room.get(slow.id)!.counters!;
    expect(counters.late).toBeLessThan(3);
    expect(counters.bufferMs).toBeLessThanOrEqual(60);
    expect(toneShare(heard(a.peer, mark), 1000)).toBeGreaterThan(0.7);
  }, 15000);

  it('forwards every other speaker unchanged to a participant that asked for it', async () => {
    start();
    const a = await join('fw', '127.0.0.2', 'sip:a@test');
    const b = await join('fw', '127.0.0.3', 'sip:b@test');
    const f = await join('fw', '127.0.0.4', 'sip:f@test', ['a=keylatch-room:forward']);
    expect(f.room.get(f.id)!.mode).toBe('forward');
    sendTone(a.peer, a.relayEp, 440, { ssrc: 1111 });
    sendTone(b.peer, b.relayEp, 1000, { ssrc: 2222 });
    sendTone(f.peer, f.relayEp, 700, { ssrc: 3333 });
    await waitFor(() => [a, b, f].every((x) => x.room.get(x.id)!.latched), 3000);
    await sleep(1000);
    const ssrcs = new Set(f.peer.media().map((x) => x.readUInt32BE(8)));
    expect([...ssrcs].sort()).toEqual([1111, 2222]);
    // a gets the mix (its own SSRC from the relay) with f's tone in it.
    expect(toneShare(heard(a.peer, 10), 700)).toBeGreaterThan(0.2);
  }, 15000);

  it('a broadcast room: listeners get the one speaker as one continuous stream of their own, in their own codec', async () => {
    start({ broadcast: [{ name: 'townhall', speakers: ['sip:boss@test'] }] });
    const speaker = await join('townhall', '127.0.0.2', 'sip:boss@test');
    // The last listener's phone speaks PCMA only; the speaker sends PCMU.
    const listeners = await Promise.all([3, 4, 5].map((n) => join('townhall', `127.0.0.${n}`, `sip:l${n}@test`, n === 5 ? ['a=x-pcma-only'] : [])));
    const l = listeners[0]!;
    expect(l.room.get(l.id)!.role).toBe('listener');
    expect(l.room.get(l.id)!.mode).toBe('relay');
    sendTone(speaker.peer, speaker.relayEp, 1000, { ssrc: 4242 });
    listeners.forEach((x, i) => sendTone(x.peer, x.relayEp, 440 + i * 100, { pt: i === 2 ? 8 : 0 }));
    await waitFor(() => [speaker, ...listeners].every((x) => x.room.get(x.id)!.latched), 3000);
    await sleep(1000);
    expect(listeners.map((x) => x.room.get(x.id)!.media.codec)).toEqual(['PCMU', 'PCMU', 'PCMA']);
    for (const x of listeners) {
      const pkts = x.peer.media();
      expect(new Set(pkts.map((p) => p[1]! & 0x7f))).toEqual(new Set([x.room.get(x.id)!.media.codec === 'PCMA' ? 8 : 0]));
      expect(pkts.length).toBeGreaterThan(30);
      expect(new Set(pkts.map((p) => p.readUInt32BE(8))).size).toBe(1);
      expect(pkts[0]!.readUInt32BE(8)).not.toBe(4242);
      const seqs = pkts.map((p) => p.readUInt16BE(2));
      for (let i = 1; i < seqs.length; i++) expect((seqs[i]! - seqs[i - 1]! + 65536) % 65536).toBe(1);
      const got = heard(x.peer);
      expect(toneShare(got, 1000)).toBeGreaterThan(0.8);
      expect(toneShare(got, 440)).toBeLessThan(0.02);
    }
    // The speaker hears no listener.
    expect(heard(speaker.peer).some((s) => Math.abs(s) > 200)).toBe(false);
  }, 15000);
});
