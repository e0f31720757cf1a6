/** The ng control protocol, driven by rtpengine-client: the npm client jambonz uses. */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { Client } from 'rtpengine-client';
import { NgServer } from '../../src/control/ng-server';
import type { Relay } from '../../src/media/relay';
import { legHints } from '../../src/control/ng-options';
import { Peer, keyFromSdp, mediaPorts, newRelay, prove, rtp, sdp, sleep, waitFor } from '../helpers/peers';

let relay: Relay;
let server: NgServer;
let client: InstanceType<typeof Client>;
let ng: { port: number; host: string };
const peers: Peer[] = [];
const rawSockets: dgram.Socket[] = [];

async function rawSocket(): Promise<dgram.Socket> {
  const raw = dgram.createSocket('udp4');
  rawSockets.push(raw);
  raw.bind(0, '127.0.0.1');
  await once(raw, 'listening');
  return raw;
}

beforeEach(async () => {
  relay = newRelay();
  server = new NgServer(relay);
  const a = await server.listen(0, '127.0.0.1');
  ng = { port: a.port, host: '127.0.0.1' };
  client = new Client({ localPort: 0, localAddress: '127.0.0.1', timeout: 2000 });
});
afterEach(async () => {
  peers.splice(0).forEach((p) => p.close());
  rawSockets.splice(0).forEach((s) => s.close());
  client.close();
  server.close();
  await relay.close();
});

describe('ng control', () => {
  it('answers ping', async () => {
    expect(await client.ping(ng)).toMatchObject({ result: 'pong' });
  });

  it('runs offer, answer, query and delete, and media flows', async () => {
    const [a, b] = await Promise.all([Peer.open(), Peer.open('127.0.0.2')]);
    peers.push(a, b);
    const offer = await client.offer(ng, {
      'call-id': 'ng1', 'from-tag': 'ta', sdp: sdp(a.address, a.port), 'received-from': ['IP4', '127.0.0.1'],
    });
    expect(offer.result).toBe('ok');
    const answer = await client.answer(ng, { 'call-id': 'ng1', 'from-tag': 'ta', 'to-tag': 'tb', sdp: sdp(b.address, b.port) });
    expect(answer.result).toBe('ok');
    const toA = { address: '127.0.0.1', port: mediaPorts(answer.sdp)[0]! };
    for (let i = 0; i < 6; i++) a.send(rtp(i, i * 160), toA);
    await waitFor(() => b.media().length === 4);
    const q = await client.query(ng, { 'call-id': 'ng1' });
    expect(q.result).toBe('ok');
    expect(q.tags.ta.packets).toBe(6);
    expect(q.tags.ta.policy).toBe('guarded');
    expect(q.tags.ta.latched).toEqual({ address: '127.0.0.1', port: a.port });
    const del = await client.delete(ng, { 'call-id': 'ng1', 'from-tag': 'ta' });
    expect(del.result).toBe('ok');
    expect(relay.pool.inUse).toBe(0);
  });

  it('says "Unknown call-id", as rtpengine does, to any command for a call it does not hold', async () => {
    const replies = [
      await client.answer(ng, { 'call-id': 'gone', 'from-tag': 'ta', 'to-tag': 'tb', sdp: sdp('127.0.0.1', 50000) }),
      await client.query(ng, { 'call-id': 'gone' }),
      await client.delete(ng, { 'call-id': 'gone', 'from-tag': 'ta' }),
    ];
    expect(replies.map((r) => [r.result, r['error-reason']])).toEqual([['error', 'Unknown call-id'], ['error', 'Unknown call-id'], ['error', 'Unknown call-id']]);
  });

  it('lists call-ids, at most limit of them', async () => {
    for (const id of ['l1', 'l2', 'l3']) {
      expect((await client.offer(ng, { 'call-id': id, 'from-tag': 'ta', sdp: sdp('127.0.0.1', 4000) })).result).toBe('ok');
    }
    expect([...(await client.list(ng, {})).calls].sort()).toEqual(['l1', 'l2', 'l3']);
    expect((await client.list(ng, { limit: 2 })).calls).toHaveLength(2);
    expect(await client.list(ng, { limit: -1 })).toMatchObject({ result: 'error' });
  });

  it('puts the key only toward a side marked secure, and that side can prove it', async () => {
    const [a, b] = await Promise.all([Peer.open(), Peer.open('127.0.0.2')]);
    peers.push(a, b);
    const offer = await client.offer(ng, {
      'call-id': 'ng2', 'from-tag': 'ta', sdp: sdp(a.address, a.port), flags: ['keylatch-answerer=key', 'secure-answerer'],
    });
    expect(offer.result).toBe('ok');
    const k = keyFromSdp(offer.sdp);
    expect(k).not.toBeNull();
    const mapping = await prove(b, { address: '127.0.0.1', port: mediaPorts(offer.sdp)[0]! }, k!.legId, k!.key);
    expect(mapping.port).toBe(b.port);
    const answer = await client.answer(ng, { 'call-id': 'ng2', 'from-tag': 'ta', 'to-tag': 'tb', sdp: sdp(b.address, b.port) });
    expect(keyFromSdp(answer.sdp)).toBeNull(); // the offerer is guarded: no key toward it
  });

  it.each([[[], true], [['direct=no'], false]])('two key legs over ng with flags %j: a rendezvous is sent = %s', async (extra, expected) => {
    const [a, b] = await Promise.all([Peer.open(), Peer.open('127.0.0.2')]);
    peers.push(a, b);
    const callId = `ng-direct-${expected}`;
    const keyFlags = ['keylatch-offerer=key', 'secure-offerer', 'keylatch-answerer=key', 'secure-answerer', ...extra];
    const offer = await client.offer(ng, { 'call-id': callId, 'from-tag': 'ta', sdp: sdp(a.address, a.port), flags: keyFlags });
    const answer = await client.answer(ng, { 'call-id': callId, 'from-tag': 'ta', 'to-tag': 'tb', sdp: sdp(b.address, b.port) });
    const [kb, ka] = [keyFromSdp(offer.sdp)!, keyFromSdp(answer.sdp)!];
    await prove(a, { address: '127.0.0.1', port: mediaPorts(answer.sdp)[0]! }, ka.legId, ka.key);
    await prove(b, { address: '127.0.0.1', port: mediaPorts(offer.sdp)[0]! }, kb.legId, kb.key);
    await sleep(100);
    expect(relay.rendezvousSent > 0).toBe(expected);
  });

  it('refuses the key policy without a secure signalling path', async () => {
    const r = await client.offer(ng, { 'call-id': 'ng3', 'from-tag': 'ta', sdp: sdp('192.168.1.2', 4000), 'keylatch-answerer': 'key' });
    expect(r).toMatchObject({ result: 'error' });
    expect(r['error-reason']).toMatch(/secure/);
    expect(relay.callCount).toBe(0);
  });

  it.each([
    ['a missing call-id', { 'from-tag': 'x', sdp: 'v=0' }, /call-id/],
    ['bad SDP', { 'call-id': 'c', 'from-tag': 'x', sdp: 'v=0\r\n' }, /SDP/],
    ['a wrong type', { 'call-id': 'c', 'from-tag': 'x', sdp: 5 }, /string/],
    ['a bad received-from', { 'call-id': 'c', 'from-tag': 'x', sdp: 'v=0', 'received-from': 'x' }, /received-from/],
  ])('returns an error for %s', async (_n, body, reason) => {
    const r = await client.offer(ng, body);
    expect(r.result).toBe('error');
    expect(r['error-reason']).toMatch(reason);
  });

  it('answers an unknown command and undecodable bencode with an error, and keeps serving', async () => {
    const raw = await rawSocket();
    const replies: string[] = [];
    raw.on('message', (m) => replies.push(m.toString()));
    raw.send('c1 d7:command5:fronte', ng.port, ng.host);
    raw.send('c2 this is not bencode', ng.port, ng.host);
    raw.send('no-space-no-cookie', ng.port, ng.host);
    raw.send(Buffer.alloc(0), ng.port, ng.host);
    await waitFor(() => replies.length === 2);
    expect(replies.find((r) => r.startsWith('c1 '))).toMatch(/Unrecognized command/);
    expect(replies.find((r) => r.startsWith('c2 '))).toMatch(/decode/);
    expect(await client.ping(ng)).toMatchObject({ result: 'pong' });
  });

  it('answers a retransmitted offer from its cache instead of running it twice', async () => {
    const raw = await rawSocket();
    const replies: string[] = [];
    raw.on('message', (m) => replies.push(m.toString()));
    const body = `d7:call-id3:rtx7:command5:offer8:from-tag1:a3:sdp${sdp('192.168.1.2', 4000).length}:${sdp('192.168.1.2', 4000)}e`;
    raw.send(`same ${body}`, ng.port, ng.host);
    raw.send(`same ${body}`, ng.port, ng.host);
    await waitFor(() => replies.length === 2);
    expect(replies[0]).toBe(replies[1]);
    expect(relay.pool.inUse).toBe(2);
  });

  it("reads rtpengine's media hints in either spelling, and refuses contradictory or malformed ones", () => {
    expect(legHints({ 'received-from': ['IP4', '198.51.100.7'], flags: ['SIP source address', 'strict-source'] }))
      .toEqual({ signallingAddress: '198.51.100.7', trust: 'sip-source', strictSource: true });
    expect(legHints({ flags: ['trust-address'], 'media-address': '203.0.113.9' })).toEqual({ trust: 'sdp', mediaAddress: '203.0.113.9' });
    expect(legHints({ flags: ['media-address=203.0.113.9'] })).toEqual({ mediaAddress: '203.0.113.9' });
    expect(() => legHints({ 'media-address': 'phone.example' })).toThrow(/media-address/);
    expect(() => legHints({ flags: ['trust-address', 'SIP-source-address'] })).toThrow(/contradict/);
  });

  it('behind a proxy: the callee latches as the sole stream, or only at media-address, or not at all with strict-source', async () => {
    // The answer as Kamailio sends it from the core side: received-from is the PBX, the SDP private.
    const callee = await Peer.open('127.0.0.2');
    peers.push(callee);
    const latchedAfter = async (callId: string, extra: Record<string, unknown>): Promise<unknown> => {
      const offer = await client.offer(ng, { 'call-id': callId, 'from-tag': 'ta', sdp: sdp('127.0.0.1', 4000), 'received-from': ['IP4', '127.0.0.1'] });
      const answer = await client.answer(ng, { 'call-id': callId, 'from-tag': 'ta', 'to-tag': 'tb', sdp: sdp('10.0.0.5', 4000), 'received-from': ['IP4', '127.0.0.9'], ...extra });
      expect(answer.result).toBe('ok');
      const toRelay = { address: '127.0.0.1', port: mediaPorts(offer.sdp)[0]! };
      for (let i = 0; i < 12; i++) callee.send(rtp(i, i * 160, 0xb), toRelay);
      await sleep(50);
      return (await client.query(ng, { 'call-id': callId })).tags.tb.latched ?? null;
    };
    expect(await latchedAfter('px1', {})).toEqual(callee.endpoint);
    expect(await latchedAfter('px2', { flags: ['strict-source'] })).toBeNull();
    expect(await latchedAfter('px3', { 'media-address': '127.0.0.2' })).toEqual(callee.endpoint);
    expect(await latchedAfter('px4', { 'media-address': '127.0.0.4' })).toBeNull();
    const bad = await client.answer(ng, { 'call-id': 'px1', 'from-tag': 'ta', 'to-tag': 'tb', sdp: sdp('10.0.0.5', 4000), 'media-address': 'x' });
    expect(bad).toMatchObject({ result: 'error' });
  });
});
