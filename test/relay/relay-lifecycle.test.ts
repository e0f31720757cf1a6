import { PortPoolExhausted } from '../../src/media/port-pool';
import type { Relay } from '../../src/media/relay';
import { SdpError } from '../../src/sdp/session';
import { keyFromSdp, mediaPorts, newRelay, rtcpPorts, rtcpSr, rtp, sdp, sleep, testPeers, waitFor } from '../helpers/peers';

const peer = testPeers();
let relay: Relay;
afterEach(async () => {
  await relay?.close();
});

describe('SDP through the relay', () => {
  it('rewrites c=, o=, every m= port and a=rtcp to the relay, and strips ICE', async () => {
    relay = newRelay({ advertisedAddress: '198.51.100.10' });
    const offer = sdp('192.168.1.20', 4000, { video: 4002 }).replace('t=0 0\r\n', 't=0 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n') +
      'a=candidate:1 1 UDP 2130706431 192.168.1.20 4002 typ host\r\n';
    const out = (await relay.offer({ callId: 'x', fromTag: 'a', sdp: offer })).sdp;
    expect(out).not.toMatch(/192\.168/);
    expect(out).toMatch(/^o=- 1 1 IN IP4 198\.51\.100\.10$/m);
    expect(out).toMatch(/^c=IN IP4 198\.51\.100\.10$/m);
    expect(out).not.toMatch(/ice-|candidate/);
    const [audio, video] = mediaPorts(out);
    expect(audio).not.toBe(video);
    expect(rtcpPorts(out)).toEqual([audio! + 1, video! + 1]);
    expect(out).toMatch(/a=rtpmap:96 H264\/90000/);
  });

  it('never passes one side\'s a=keylatch attribute to the other', async () => {
    relay = newRelay();
    const offer = sdp('192.168.1.20', 4000).replace('s=-', 's=-\r\na=keylatch:v1 leg=stolen key=AAAA');
    const out = (await relay.offer({ callId: 'x', fromTag: 'a', sdp: offer })).sdp;
    expect(out).not.toMatch(/keylatch/);
  });

  it('keeps old-style hold (c=0.0.0.0) and direction attributes, and knows the stream is on hold', async () => {
    relay = newRelay();
    await relay.offer({ callId: 'h', fromTag: 'a', sdp: sdp('192.168.1.20', 4000) });
    await relay.answer({ callId: 'h', fromTag: 'a', toTag: 'b', sdp: sdp('203.0.113.9', 5000) });
    const hold = sdp('0.0.0.0', 4000, { direction: 'sendonly' });
    const out = (await relay.offer({ callId: 'h', fromTag: 'a', sdp: hold })).sdp;
    expect(out).toMatch(/^c=IN IP4 0\.0\.0\.0$/m);
    expect(out).toMatch(/^a=sendonly$/m);
    expect(relay.stats('h')!.find((l) => l.tag === 'a')!.streams[0]!.onHold).toBe(true);
  });

  it('keeps ports across a re-INVITE and reopens learning on it', async () => {
    relay = newRelay();
    const first = (await relay.offer({ callId: 'r', fromTag: 'a', sdp: sdp('192.168.1.20', 4000) })).sdp;
    await relay.answer({ callId: 'r', fromTag: 'a', toTag: 'b', sdp: sdp('203.0.113.9', 5000) });
    const again = (await relay.offer({ callId: 'r', fromTag: 'a', sdp: sdp('192.168.1.21', 4100) })).sdp;
    expect(mediaPorts(again)).toEqual(mediaPorts(first));
    // a re-INVITE from the callee side: from-tag is b
    const fromB = (await relay.offer({ callId: 'r', fromTag: 'b', sdp: sdp('203.0.113.9', 5000, { direction: 'sendonly' }) })).sdp;
    expect(mediaPorts(fromB)).toHaveLength(1);
    expect(relay.pool.inUse).toBe(2);
  });

  it('disables a stream the answer rejects (port 0) and frees its ports', async () => {
    relay = newRelay();
    await relay.offer({ callId: 'v', fromTag: 'a', sdp: sdp('192.168.1.20', 4000, { video: 4002 }) });
    expect(relay.pool.inUse).toBe(4);
    const ans = (await relay.answer({ callId: 'v', fromTag: 'a', toTag: 'b', sdp: sdp('203.0.113.9', 5000, { video: 0 }) })).sdp;
    expect(mediaPorts(ans)[1]).toBe(0);
    expect(relay.pool.inUse).toBe(2);
  });

  it('takes the last answer when a 183 and the 200 carry different SDP', async () => {
    relay = newRelay();
    const a = await peer();
    const early = await peer('127.0.0.2');
    const final = await peer('127.0.0.3');
    const offer = (await relay.offer({ callId: 'e', fromTag: 'a', sdp: sdp(a.address, a.port) })).sdp;
    const ans183 = (await relay.answer({ callId: 'e', fromTag: 'a', toTag: 'b', sdp: sdp(early.address, early.port) })).sdp;
    const ans200 = (await relay.answer({ callId: 'e', fromTag: 'a', toTag: 'b', sdp: sdp(final.address, final.port) })).sdp;
    expect(mediaPorts(ans183)).toEqual(mediaPorts(ans200));
    for (let i = 0; i < 5; i++) a.send(rtp(i, i * 160), { address: '127.0.0.1', port: mediaPorts(ans200)[0]! });
    await waitFor(() => final.media().length === 3);
    expect(early.media()).toHaveLength(0);
    expect(mediaPorts(offer)).toHaveLength(1);
  });
});

describe('streams and RTCP', () => {
  it('carries audio and video of one call on separate ports', async () => {
    relay = newRelay();
    const a = await peer();
    const b = await peer('127.0.0.2');
    const av = await peer();
    const bv = await peer('127.0.0.2');
    const offer = (await relay.offer({ callId: 'av', fromTag: 'a', sdp: sdp(a.address, a.port, { video: av.port }), offerer: { signallingAddress: '127.0.0.1' } })).sdp;
    const ans = (await relay.answer({ callId: 'av', fromTag: 'a', toTag: 'b', sdp: sdp(b.address, b.port, { video: bv.port }) })).sdp;
    const [ra, rv] = mediaPorts(ans);
    for (let i = 0; i < 4; i++) {
      a.send(rtp(i, i * 160, 1), { address: '127.0.0.1', port: ra! });
      av.send(rtp(i, i * 3000, 2, 1000, 96), { address: '127.0.0.1', port: rv! });
    }
    await waitFor(() => b.media().length === 2 && bv.media().length === 2);
    expect(bv.media()[0]!.length).toBe(1012);
    expect(mediaPorts(offer)).toHaveLength(2);
  });

  it('bridges an rtcp-mux leg to a leg with a separate RTCP port', async () => {
    relay = newRelay();
    const a = await peer();
    const b = await peer('127.0.0.2');
    const bRtcp = await peer('127.0.0.2');
    await relay.offer({ callId: 'm', fromTag: 'a', sdp: sdp(a.address, a.port, { mux: true }) });
    const ans = (await relay.answer({ callId: 'm', fromTag: 'a', toTag: 'b', sdp: sdp(b.address, b.port, { rtcpPort: bRtcp.port }) })).sdp;
    expect(ans).not.toMatch(/rtcp-mux/);
    const relayForA = { address: '127.0.0.1', port: mediaPorts(ans)[0]! };
    for (let i = 0; i < 3; i++) a.send(rtp(i, i * 160), relayForA);
    a.send(rtcpSr(0x1234), relayForA);
    await waitFor(() => bRtcp.received.length === 1);
    expect(bRtcp.received[0]!.buf[1]).toBe(200);
    expect(b.media()).toHaveLength(1);
  });
});

describe('resources', () => {
  it('refuses a call clearly when the pool is full, and existing calls go on', async () => {
    relay = newRelay();
    // 100 ports = 50 pairs; each call takes 2 pairs for one stream
    const a = await peer();
    const b = await peer('127.0.0.2');
    await relay.offer({ callId: 'keep', fromTag: 'a', sdp: sdp(a.address, a.port), offerer: { signallingAddress: '127.0.0.1' } });
    const ans = (await relay.answer({ callId: 'keep', fromTag: 'a', toTag: 'b', sdp: sdp(b.address, b.port) })).sdp;
    let n = 0;
    await expect((async () => {
      for (;;) await relay.offer({ callId: `fill${n++}`, fromTag: 'a', sdp: sdp('192.168.1.20', 4000) });
    })()).rejects.toThrow(PortPoolExhausted);
    expect(relay.callCount).toBe(n);
    for (let i = 0; i < 5; i++) a.send(rtp(i, i * 160), { address: '127.0.0.1', port: mediaPorts(ans)[0]! });
    await waitFor(() => b.media().length === 3);
    relay.delete({ callId: 'fill0' });
    await relay.offer({ callId: 'after', fromTag: 'a', sdp: sdp('192.168.1.20', 4000) });
  });

  it('rolls back a half-allocated offer (audio fits, video does not)', async () => {
    relay = newRelay({ portMin: 33900, portMax: 33905 }); // three pairs
    await expect(relay.offer({ callId: 'big', fromTag: 'a', sdp: sdp('192.168.1.20', 4000, { video: 4002 }) })).rejects.toThrow(PortPoolExhausted);
    expect(relay.pool.inUse).toBe(0);
    expect(relay.callCount).toBe(0);
  });

  it('returns ports to the pool at once on delete', async () => {
    relay = newRelay();
    await relay.offer({ callId: 'd', fromTag: 'a', sdp: sdp('192.168.1.20', 4000, { video: 4002 }) });
    expect(relay.pool.inUse).toBe(4);
    const stats = relay.delete({ callId: 'd' });
    expect(stats).toHaveLength(2);
    expect(relay.pool.inUse).toBe(0);
    expect(relay.delete({ callId: 'd' })).toBeNull();
  });

  it('reports a stream dead after the media timeout, longer on hold', async () => {
    relay = newRelay({ timeouts: { mediaSec: 0.3, holdSec: 5 } });
    const dead: string[] = [];
    relay.on('media-timeout', (e) => dead.push(e.callId));
    await relay.offer({ callId: 'quiet', fromTag: 'a', sdp: sdp('192.168.1.20', 4000) });
    await relay.offer({ callId: 'held', fromTag: 'a', sdp: sdp('192.168.1.20', 4000, { direction: 'sendonly' }) });
    await relay.answer({ callId: 'held', fromTag: 'a', toTag: 'b', sdp: sdp('203.0.113.9', 5000, { direction: 'recvonly' }) });
    await relay.offer({ callId: 'held2', fromTag: 'a', sdp: sdp('0.0.0.0', 4000) });
    await waitFor(() => dead.length > 0, 3000);
    await sleep(500);
    expect(dead).toEqual(['quiet']);
  });
});

describe('refusals keep state', () => {
  it.each([
    ['empty SDP', ''],
    ['not SDP', 'hello'],
    ['no m-line', 'v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n'],
    ['all m-lines disabled', sdp('1.2.3.4', 0)],
    ['no c= address', 'v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n'],
    ['a hostname in c=', sdp('pbx.example.com', 4000)],
    ['a port out of range', sdp('1.2.3.4', 4000).replace('m=audio 4000', 'm=audio 99999')],
  ])('refuses %s with SdpError, leaving existing calls alone', async (_n, bad) => {
    relay = newRelay();
    await relay.offer({ callId: 'ok', fromTag: 'a', sdp: sdp('192.168.1.20', 4000) });
    await expect(relay.offer({ callId: 'bad', fromTag: 'a', sdp: bad })).rejects.toThrow(SdpError);
    await expect(relay.offer({ callId: 'ok', fromTag: 'a', sdp: bad })).rejects.toThrow(SdpError);
    expect(relay.callIds()).toEqual(['ok']);
    expect(relay.pool.inUse).toBe(2);
  });

  it('refuses an answer for an unknown call or tag', async () => {
    relay = newRelay();
    await expect(relay.answer({ callId: 'nope', fromTag: 'a', toTag: 'b', sdp: sdp('1.2.3.4', 4000) })).rejects.toThrow(/no call/);
    await relay.offer({ callId: 'c', fromTag: 'a', sdp: sdp('192.168.1.20', 4000) });
    await expect(relay.answer({ callId: 'c', fromTag: 'zz', toTag: 'b', sdp: sdp('1.2.3.4', 4000) })).rejects.toThrow(/from-tag/);
  });
});

describe('destinations', () => {
  it('sends nothing to a loopback SDP address unless loopback peers are allowed', async () => {
    relay = newRelay({ allowLoopbackPeers: false });
    const b = await peer('127.0.0.2');
    const a = await peer('127.0.0.3');
    await relay.offer({ callId: 'lo', fromTag: 'a', sdp: sdp(a.address, a.port) });
    const ans = (await relay.answer({ callId: 'lo', fromTag: 'a', toTag: 'b', sdp: sdp(b.address, b.port) })).sdp;
    for (let i = 0; i < 6; i++) a.send(rtp(i, i * 160), { address: '127.0.0.1', port: mediaPorts(ans)[0]! });
    await sleep(100);
    expect(b.received).toHaveLength(0);
    expect(relay.stats('lo')!.find((l) => l.tag === 'a')!.latched).toBeNull();
  });

  it('sends to a peer on the relay host whose port merely lies inside the relay range', async () => {
    relay = newRelay();
    const range = { min: relay.pool.min, max: relay.pool.max };
    const first = (await relay.offer({ callId: 'free', fromTag: 'a', sdp: sdp('127.0.0.1', 4000) })).sdp;
    // The call holds a pair for each leg, at random in the range (the offer shows only one of
    // them): the port taken here is one no leg holds, found from the whole range.
    let port = range.max - 1;
    while (relay.pool.holds(port)) port -= 2;
    expect(port).toBeGreaterThanOrEqual(range.min);
    expect(relay.denied('127.0.0.1', port)).toBeNull();
    expect(relay.denied('127.0.0.1', mediaPorts(first)[0]!)).toBe('relay-port');
    expect(relay.denied('127.0.0.1', mediaPorts(first)[0]! + 1)).toBe('relay-port');
  });

  it('does not send to the private SDP address of a leg whose signalling came from elsewhere (its LAN)', async () => {
    relay = newRelay();
    const lan = await peer('127.0.0.9'); // what the NATed phone's SDP says
    const phone = await peer('127.0.0.1'); // where its signalling and media really come from
    const far = await peer('127.0.0.2');
    await relay.offer({ callId: 'nat', fromTag: 'a', sdp: sdp(lan.address, lan.port), offerer: { signallingAddress: '127.0.0.1' } });
    const offerToFar = (await relay.offer({ callId: 'nat', fromTag: 'a', sdp: sdp(lan.address, lan.port) })).sdp;
    await relay.answer({ callId: 'nat', fromTag: 'a', toTag: 'b', sdp: sdp(far.address, far.port), answerer: { signallingAddress: '127.0.0.2' } });
    const relayForFar = { address: '127.0.0.1', port: mediaPorts(offerToFar)[0]! };
    for (let i = 0; i < 5; i++) far.send(rtp(i, i * 160, 0xb), relayForFar);
    await sleep(100);
    expect(lan.received).toHaveLength(0);
    expect(phone.received).toHaveLength(0);
  });

  it('refuses to aim a leg at one of its own ports', async () => {
    relay = newRelay();
    const first = (await relay.offer({ callId: 'self', fromTag: 'a', sdp: sdp('192.168.1.20', 4000) })).sdp;
    const own = mediaPorts(first)[0]!;
    const ans = (await relay.answer({ callId: 'self', fromTag: 'a', toTag: 'b', sdp: sdp('127.0.0.1', own) })).sdp;
    const a = await peer();
    for (let i = 0; i < 6; i++) a.send(rtp(i, i * 160), { address: '127.0.0.1', port: mediaPorts(ans)[0]! });
    await sleep(100);
    const legB = relay.stats('self')!.find((l) => l.tag === 'b')!;
    expect(legB.packetsIn).toBe(0);
    expect(keyFromSdp(ans)).toBeNull();
  });
});
