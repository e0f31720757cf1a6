/**
 * A SIP.js plugin client in a room in forwarding mode (docs/rooms.md), on loopback: it asks for
 * every speaker's stream (a=keylatch-room:forward), proves its leg key, mixes the streams itself
 * and reports each speaker's level; the plain phones in the room hear it in the relay's mix.
 */
import { decodeG711 } from '../../src/codec/g711';
import { blockToneShare as toneShare } from '../../src/codec/goertzel';
import { RoomRegistry } from '../../src/rooms/registry';
import type { Relay } from '../../src/media/relay';
import { DEFAULT_MEDIA_OPTIONS, KeylatchSessionDescriptionHandler } from '../../plugins/sipjs/src';
import { mediaPorts, newRelay, sleep, testMediaConfig, testPeers, waitFor, type Peer } from '../helpers/peers';
import { joined } from '../helpers/plugin-handlers';
import { toneSenders } from '../helpers/tone-sender';

const peer = testPeers();
let relay: Relay;
let rooms: RoomRegistry;
const sendTone = toneSenders();
const handlers: KeylatchSessionDescriptionHandler[] = [];

afterEach(async () => {
  handlers.splice(0).forEach((h) => h.close());
  rooms?.close();
  await relay?.close();
});

const phoneOffer = (port: number): string =>
  ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${port} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000'].join('\r\n') + '\r\n';

/** A plain phone in the room: a guarded leg sending its tone, paced by the clock. */
async function phone(ip: string, who: string, hz: number, ssrc: number): Promise<Peer> {
  const p = await peer(ip);
  const { participant } = await rooms.join('standup', who, { policy: 'guarded', secure: false, signallingAddress: ip }, phoneOffer(p.port));
  sendTone(p, { address: '127.0.0.1', port: mediaPorts(participant.answer(phoneOffer(p.port)))[0]! }, hz, { ssrc });
  return p;
}

describe('a plugin client in forwarding mode', () => {
  it('takes every speaker\'s stream, mixes them itself, and reports each speaker; the phones hear it in their mix', async () => {
    relay = newRelay();
    rooms = new RoomRegistry({ enabled: true, prefix: 'room-', names: null, maxParticipants: 10, broadcast: [] }, relay, testMediaConfig());
    const [a, b] = [await phone('127.0.0.2', 'sip:a@test', 440, 0xaaa), await phone('127.0.0.3', 'sip:b@test', 1000, 0xbbb)];
    const h = new KeylatchSessionDescriptionHandler({ ...DEFAULT_MEDIA_OPTIONS, bindAddress: '127.0.0.1', sdpAddress: '127.0.0.1', secureSignalling: true, transportName: 'WSS', roomForward: true });
    handlers.push(h);
    h.media.play({ toneHz: 600 }, { loop: true });
    const frames: Int16Array[] = [];
    h.media.on('frame', (pcm) => frames.push(pcm));
    const offer = (await h.getDescription()).body;
    expect(offer).toContain('a=keylatch-room:forward');
    const { room, participant } = await rooms.join('standup', 'sip:plugin@test', { policy: 'key', secure: true, signallingAddress: '127.0.0.1' }, offer);
    expect(room.get(participant.id)!.mode).toBe('forward');
    await h.setDescription(participant.answer(offer));
    await waitFor(() => h.media.state === 'authenticated', 3000);
    await sleep(500);
    const mark = frames.length;
    const phoneMarks = [a.media().length, b.media().length];
    await sleep(1500);

    // One mixed stream of its own: both speakers in it, not itself.
    const got = joined(frames.slice(mark));
    expect(got.length).toBeGreaterThan(8000 * 1.2);
    expect(toneShare(got, 440)).toBeGreaterThan(0.2);
    expect(toneShare(got, 1000)).toBeGreaterThan(0.2);
    expect(toneShare(got, 600)).toBeLessThan(0.02);
    const speakers = h.media.stats().speakers;
    expect(speakers.map((s) => s.ssrc).sort()).toEqual([0xaaa, 0xbbb]);
    for (const s of speakers) expect(s.levelDbov).toBeGreaterThan(-20);
    // The relay sent it the speakers' own SSRCs, not a mix of its own.
    expect(h.media.stats().ssrcs.sort()).toEqual([0xaaa, 0xbbb]);

    // Each phone's mix holds the plugin's 600 Hz and the other phone's tone.
    for (const [p, mk, other] of [[a, phoneMarks[0]!, 1000], [b, phoneMarks[1]!, 440]] as const) {
      const pcm = p.media().slice(mk).map((x) => decodeG711('PCMU', x.subarray(12)));
      const heard = joined(pcm);
      expect(toneShare(heard, 600)).toBeGreaterThan(0.2);
      expect(toneShare(heard, other)).toBeGreaterThan(0.2);
    }
  }, 15000);
});
