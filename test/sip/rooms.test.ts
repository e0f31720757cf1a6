/**
 * Room INVITEs on a real drachtio-server: who may join (the PBX yes, a stranger no), which rooms
 * exist, what a room answers, and that a BYE leaves the room and frees its ports. Raw SIP over
 * UDP from the test's own sockets stands in for the PBX and the stranger; sipp sends DTMF in
 * SIP INFO from inside a room call.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import path from 'node:path';
import { decodeG711 } from '../../src/codec/g711';
import { sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';
import { Peer, mediaPorts, rtp, sdp as peerSdp, waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp } from '../helpers/sipp';

const skip = skipSipSuite('SIP room tests');

/** A UDP SIP endpoint that sends requests and collects what comes back. */
class RawSip {
  readonly messages: string[] = [];
  private constructor(readonly socket: dgram.Socket, readonly address: string, readonly port: number) {
    socket.on('message', (b) => this.messages.push(b.toString()));
  }

  static async open(address: string, port = 0): Promise<RawSip> {
    const s = dgram.createSocket('udp4');
    s.bind(port, address);
    await once(s, 'listening');
    return new RawSip(s, address, s.address().port);
  }

  send(text: string, to: number): void {
    this.socket.send(text.replace(/\n/g, '\r\n'), to, '127.0.0.1');
  }

  /** The final response to `callId`'s INVITE (or whichever CSeq method). */
  async final(callId: string, method = 'INVITE'): Promise<{ status: number; text: string }> {
    const pick = () => this.messages.find((m) => /^SIP\/2\.0 [2-6]\d\d/.test(m) && m.includes(callId) && new RegExp(`CSeq: *\\d+ ${method}`, 'i').test(m));
    await waitFor(() => pick() !== undefined, 5000);
    const text = pick()!;
    return { status: Number(text.slice(8, 11)), text };
  }

  close(): void {
    this.socket.close();
  }
}

const sdp = (ip: string, port: number, codecs = '0 101'): string =>
  [`v=0`, `o=- 1 1 IN IP4 ${ip}`, 's=-', `c=IN IP4 ${ip}`, 't=0 0', `m=audio ${port} RTP/AVP ${codecs}`, 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:18 G729/8000', 'a=rtpmap:101 telephone-event/8000', ''].join('\n');

function invite(from: RawSip, ruri: string, callId: string, body: string): string {
  return [`INVITE ${ruri} SIP/2.0`, `Via: SIP/2.0/UDP ${from.address}:${from.port};branch=z9hG4bK${callId}`, 'Max-Forwards: 70',
    `From: <sip:caller@${from.address}>;tag=f${callId}`, `To: <${ruri}>`, `Call-ID: ${callId}`, 'CSeq: 1 INVITE',
    `Contact: <sip:caller@${from.address}:${from.port}>`, 'Content-Type: application/sdp', `Content-Length: ${Buffer.byteLength(body.replace(/\n/g, '\r\n'))}`, '', body].join('\n');
}

function inDialog(method: 'ACK' | 'BYE', from: RawSip, ruri: string, callId: string, toTag: string, cseq: number): string {
  return [`${method} ${ruri} SIP/2.0`, `Via: SIP/2.0/UDP ${from.address}:${from.port};branch=z9hG4bK${method}${callId}`, 'Max-Forwards: 70',
    `From: <sip:caller@${from.address}>;tag=f${callId}`, `To: <sip:room@127.0.0.1>;tag=${toTag}`, `Call-ID: ${callId}`, `CSeq: ${cseq} ${method}`, 'Content-Length: 0', '', ''].join('\n');
}

(skip ? describe.skip : describe)('rooms on the SIP edge', () => {
  const sipPort = 25060 + (process.pid % 500);
  const pbxPort = 26060 + (process.pid % 500);
  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp`],
    adminPort: 27022 + (process.pid % 500),
    sip: { pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${sipPort}` },
    rooms: { names: ['standup'] },
  });
  const room = `sip:room-standup@127.0.0.1:${sipPort}`;

  it('answers the PBX as the room itself, with the relay\'s port and PCMU; media reaches the mixer; BYE leaves and frees the ports', async () => {
    const pbx = await RawSip.open('127.0.0.2', pbxPort);
    const media = await Peer.open('127.0.0.2');
    try {
      pbx.send(invite(pbx, room, 'room-1', sdp('127.0.0.2', media.port)), sipPort);
      const ok = await pbx.final('room-1');
      expect(ok.status).toBe(200);
      const body = ok.text.split('\r\n\r\n')[1]!;
      expect(body).toMatch(/^m=audio \d+ RTP\/AVP 0 101\r?$/m);
      expect(body).toContain('a=keylatch-room:mix');
      const toTag = /^To:.*;tag=([^;\s]+)/im.exec(ok.text)![1]!;
      pbx.send(inDialog('ACK', pbx, room, 'room-1', toTag, 1), sipPort);
      const participant = f.rooms!.get('standup')!.participants()[0]!;
      expect(participant).toMatchObject({ who: 'sip:caller@127.0.0.2', role: 'speaker', mode: 'mix' });
      expect(participant.leg.policy).toBe('guarded');
      const port = Number(/^m=audio (\d+)/m.exec(body)![1]);
      for (let i = 0; i < 10; i++) media.send(rtp(i, i * 160, 0x77), { address: '127.0.0.1', port });
      await waitFor(() => participant.latched, 2000);
      // The room answers with the mix (silence: nobody else is there) from the port it latched.
      await waitFor(() => media.media().length > 3, 2000);
      expect(new Set(media.media().map((m) => m[1]! & 0x7f))).toEqual(new Set([0]));
      pbx.send(inDialog('BYE', pbx, room, 'room-1', toTag, 2), sipPort);
      expect((await pbx.final('room-1', 'BYE')).status).toBe(200);
      await waitFor(() => f.rooms!.list().length === 0 && f.relay.pool.inUse === 0, 2000);
      expect(f.edge.calls.size).toBe(0);
    } finally {
      pbx.close();
      media.close();
    }
  });

  it('refuses a caller that is neither the PBX nor registered, a room that does not exist, and an offer without G.711', async () => {
    const stranger = await RawSip.open('127.0.0.3');
    const pbx = await RawSip.open('127.0.0.2', pbxPort);
    try {
      stranger.send(invite(stranger, room, 'room-2', sdp('127.0.0.3', 40000)), sipPort);
      expect((await stranger.final('room-2')).status).toBe(403);
      pbx.send(invite(pbx, `sip:room-nosuch@127.0.0.1:${sipPort}`, 'room-3', sdp('127.0.0.2', 40000)), sipPort);
      expect((await pbx.final('room-3')).status).toBe(404);
      pbx.send(invite(pbx, room, 'room-4', sdp('127.0.0.2', 40000, '18')), sipPort);
      const refused = await pbx.final('room-4');
      expect(refused.status).toBe(488);
      expect(refused.text).toMatch(/Warning: 399 keylatch "a room speaks G\.711/);
      expect(f.rooms!.list()).toHaveLength(0);
      expect(f.relay.pool.inUse).toBe(0);
    } finally {
      stranger.close();
      pbx.close();
    }
  });

  it('takes DTMF in SIP INFO as the room\'s DTMF event, never into the mix; a bad body is 400, another type 415, and the call goes on', async () => {
    // Someone already in the room, listening: what the relay sends it must stay silence.
    const listener = await Peer.open('127.0.0.3');
    const offer = peerSdp('127.0.0.3', listener.port);
    const { room, participant } = await f.rooms!.join('standup', 'sip:listener@test', { policy: 'guarded', secure: false, signallingAddress: '127.0.0.3' }, offer);
    const relayEp = { address: '127.0.0.1', port: mediaPorts(participant.answer(offer))[0]! };
    const keys: string[] = [];
    room.on('dtmf', (p, key, via) => keys.push(`${p.who} ${key} ${via}`));
    const before = f.rooms!.totals.dtmf;
    let n = 0;
    const silence = setInterval(() => listener.send(rtp(n, 160 * n++, 0x5e, 160), relayEp), 20);
    try {
      await waitFor(() => participant.latched, 3000);
      const mark = listener.media().length;
      const sipp = await runSipp(['-sf', path.join(SCENARIOS, 'pbx-room-info-dtmf.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-s', 'room-standup',
        '-key', 'mport', '40000', `127.0.0.1:${sipPort}`], { timeoutMs: 15000 });
      expect({ code: sipp.code, out: sipp.code === 0 ? '' : sipp.out.slice(-3000) }).toEqual({ code: 0, out: '' });
      // The four keys, in order, each once; the refused INFOs reported nothing.
      expect(keys).toEqual(['5', '#', '*', '7'].map((k) => `sip:dtmf@keylatch.test ${k} info`));
      expect(f.rooms!.totals.dtmf - before).toBe(4);
      const heard = listener.media().slice(mark);
      expect(heard.length).toBeGreaterThan(5);
      const loudest = Math.max(...heard.map((b) => Math.max(...decodeG711('PCMU', b.subarray(12)).map(Math.abs))));
      expect(loudest).toBeLessThan(64);
      // sipp's BYE left the room; the listener is still in it.
      await waitFor(() => room.size === 1, 2000);
      expect(room.get(participant.id)).toBe(participant);
    } finally {
      clearInterval(silence);
      room.leave(participant, 'removed');
      listener.close();
    }
    await waitFor(() => f.rooms!.list().length === 0 && f.relay.pool.inUse === 0, 2000);
  });
});

