/**
 * Secure signalling: registration over TLS, and the leg key, which goes only to a client that
 * announced keylatch and signals over TLS. The client then proves that key to the relay on the
 * media path with the shared protocol module, which is the whole point of the key.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import path from 'node:path';
import { ChallengeProver, decode, looksLikeStun } from '../../src/media/challenge';
import { keyFromSdp, mediaPorts, waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';
import { SipStreamClient } from '../helpers/sip-stream-client';

const skip = skipSipSuite('SIP TLS tests');

const offerSdp = (announce: boolean) =>
  ['v=0', 'o=- 1 1 IN IP4 192.168.1.40', 's=-', 'c=IN IP4 192.168.1.40', 't=0 0', ...(announce ? ['a=keylatch:v1'] : []),
    'm=audio 4000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');

(skip ? describe.skip : describe)('secure signalling', () => {
  const udpPort = 13060 + (process.pid % 500);
  const tlsPort = udpPort + 1;
  const tcpPort = udpPort + 2;
  const wssPort = udpPort + 3;
  const pbxPort = 12060 + (process.pid % 500);

  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${udpPort};transport=udp`, `sips:127.0.0.1:${tlsPort};transport=tls`, `sip:127.0.0.1:${tcpPort};transport=tcp`, `sips:127.0.0.1:${wssPort};transport=wss`],
    adminPort: 11022 + (process.pid % 500),
    sip: { pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${udpPort}` },
    tls: true,
  });

  it('registers a client over TLS: a secure binding, and no NAT-shortened expiry', async () => {
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 8000 });
    await new Promise((r) => setTimeout(r, 300));
    const c = await SipStreamClient.connect('tls', '127.0.0.1', tlsPort);
    try {
      c.send([
        'REGISTER sips:keylatch.test SIP/2.0', `Via: SIP/2.0/TLS 192.168.1.40:5061;branch=z9hG4bKtls1;rport`, 'From: <sip:dave@keylatch.test>;tag=t1',
        'To: <sip:dave@keylatch.test>', 'Call-ID: tls-reg-1', 'CSeq: 1 REGISTER', 'Contact: <sip:dave@192.168.1.40:5061;transport=tls>', 'Expires: 1800', 'Max-Forwards: 70',
      ]);
      const res = await c.next();
      expect(res.status).toBe(200);
      expect(res.headers.get('contact')).toMatch(/expires=1800/);
      expect((await pbx).code).toBe(0);
      const [b] = await f.edge.store.byAor('sip:dave@keylatch.test');
      expect(b).toMatchObject({ transport: 'tls', secure: true, natted: true });
    } finally {
      c.close();
    }
  });

  let calls = 0;
  async function call(kind: 'tls' | 'tcp' | 'wss', announce: boolean, extraHeaders: string[] = []) {
    const pbxMedia = dgram.createSocket('udp4');
    pbxMedia.bind(0, '127.0.0.2');
    await once(pbxMedia, 'listening');
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-answer.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-key', 'mport', String(pbxMedia.address().port)], { timeoutMs: 10000 });
    await new Promise((r) => setTimeout(r, 300));
    const c = await SipStreamClient.connect(kind, '127.0.0.1', { tls: tlsPort, tcp: tcpPort, wss: wssPort }[kind]);
    const T = kind.toUpperCase();
    const n = ++calls;
    const dialog = [`From: <sip:dave@keylatch.test>;tag=d${kind}${n}`, `Call-ID: call-${kind}-${n}-${process.pid}`];
    c.send([`INVITE sip:bob@keylatch.test SIP/2.0`, `Via: SIP/2.0/${T} 192.168.1.40:5061;branch=z9hG4bK${kind}inv${n};rport`, ...dialog, 'To: <sip:bob@keylatch.test>',
      'CSeq: 1 INVITE', `Contact: <sip:dave@192.168.1.40:5061;transport=${kind}>`, 'Max-Forwards: 70', ...extraHeaders, 'Content-Type: application/sdp'], offerSdp(announce));
    const ok = await c.next((m) => m.status === 200, 8000);
    const to = ok.headers.get('to')!;
    const ack = (method: string, cseq: string, branch: string) =>
      c.send([`${method} sip:bob@keylatch.test SIP/2.0`, `Via: SIP/2.0/${T} 192.168.1.40:5061;branch=z9hG4bK${branch};rport`, ...dialog, `To: ${to}`, `CSeq: ${cseq}`, 'Max-Forwards: 70']);
    ack('ACK', '1 ACK', `${kind}ack${n}`);
    return {
      answer: ok.body,
      async hangUp() {
        ack('BYE', '2 BYE', `${kind}bye${n}`);
        expect((await c.next((m) => m.status === 200)).status).toBe(200);
        const x = await pbx;
        c.close();
        pbxMedia.close();
        expect({ pbx: x.code, out: x.code === 0 ? '' : x.out.slice(0, 1500) }).toEqual({ pbx: 0, out: '' });
      },
    };
  }

  it('gives a client that announced keylatch over TLS its leg key, and it can prove it to the relay', async () => {
    const { answer, hangUp } = await call('tls', true);
    const key = keyFromSdp(answer);
    expect(key).not.toBeNull();
    const media = dgram.createSocket('udp4');
    media.bind(0, '127.0.0.1');
    await once(media, 'listening');
    const prover = new ChallengeProver(key!.legId, key!.key);
    let latched = false;
    media.on('message', (buf, r) => {
      if (!looksLikeStun(buf)) return;
      const ev = prover.onMessage(decode(buf), { address: r.address, port: r.port });
      if (ev.type === 'proof-sent') media.send(ev.reply, ev.to.port, ev.to.address);
      if (ev.type === 'latched') latched = true;
    });
    media.send(prover.hello(), mediaPorts(answer)[0]!, '127.0.0.1');
    await waitFor(() => latched, 2000);
    const legs = f.relay.stats(f.relay.callIds()[0]!)!;
    expect(legs.find((l) => l.policy === 'key')?.authenticated).toBe(true);
    media.close();
    await hangUp();
  });

  it('lets a call keep its media on the relay with X-Keylatch-Direct: no', async () => {
    for (const [headers, allowed] of [[['X-Keylatch-Direct: no'], false], [[], true]] as const) {
      const { hangUp } = await call('tls', true, [...headers]);
      const legs = f.relay.stats(f.relay.callIds()[0]!)!;
      expect(legs.map((l) => l.directAllowed)).toEqual([allowed, allowed]);
      await hangUp();
    }
  });

  it('registers over WSS and gives a WebSocket client that announced keylatch its leg key', async () => {
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 8000 });
    await new Promise((r) => setTimeout(r, 300));
    const c = await SipStreamClient.connect('wss', '127.0.0.1', wssPort);
    try {
      c.send([
        'REGISTER sip:keylatch.test SIP/2.0', 'Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKwss1;rport', 'From: <sip:wendy@keylatch.test>;tag=w1',
        'To: <sip:wendy@keylatch.test>', 'Call-ID: wss-reg-1', 'CSeq: 1 REGISTER', 'Contact: <sip:wendy@df7jal23ls0d.invalid;transport=ws>', 'Expires: 600', 'Max-Forwards: 70',
      ]);
      expect((await c.next()).status).toBe(200);
      expect((await pbx).code).toBe(0);
      const [b] = await f.edge.store.byAor('sip:wendy@keylatch.test');
      expect(b).toMatchObject({ transport: 'wss', secure: true });
    } finally {
      c.close();
    }
    const { answer, hangUp } = await call('wss', true);
    expect(keyFromSdp(answer)).not.toBeNull();
    await hangUp();
  });

  /** A client registers over TLS, then the PBX calls it; returns the SDP of the INVITE it got. */
  async function callToRegistered(user: string, announce: boolean): Promise<string> {
    const registrar = runSipp(['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 8000 });
    await new Promise((r) => setTimeout(r, 300));
    const c = await SipStreamClient.connect('tls', '127.0.0.1', tlsPort);
    try {
      c.send([`REGISTER sips:keylatch.test SIP/2.0`, `Via: SIP/2.0/TLS 192.168.1.40:5061;branch=z9hG4bKr${user};rport`, `From: <sip:${user}@keylatch.test>;tag=r${user}`,
        `To: <sip:${user}@keylatch.test>`, `Call-ID: reg-${user}-${process.pid}`, 'CSeq: 1 REGISTER',
        `Contact: <sip:${user}@192.168.1.40:5061;transport=tls>${announce ? ';+keylatch="v1"' : ''}`, 'Expires: 600', 'Max-Forwards: 70']);
      expect((await c.next()).status).toBe(200);
      expect((await registrar).code).toBe(0);
      const [b] = await f.edge.store.byAor(`sip:${user}@keylatch.test`);
      expect(b!.keylatch).toBe(announce);
      const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-call.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1', '-s', b!.id, '-key', 'mport', '4000', '-d', '200',
        `127.0.0.1:${udpPort}`], { timeoutMs: 10000 });
      const invite = await c.next((m) => m.startLine.startsWith('INVITE '), 5000);
      const answer = (status: string, req: typeof invite, body = '') => {
        const to = req.headers.get('to')!;
        c.send([`SIP/2.0 ${status}`, `Via: ${req.headers.get('via')}`, `From: ${req.headers.get('from')}`, `To: ${/tag=/.test(to) ? to : `${to};tag=c${user}`}`,
          `Call-ID: ${req.headers.get('call-id')}`, `CSeq: ${req.headers.get('cseq')}`, `Contact: <sip:${user}@192.168.1.40:5061;transport=tls>`,
          ...(body ? ['Content-Type: application/sdp'] : [])], body);
      };
      answer('200 OK', invite, offerSdp(announce));
      const bye = await c.next((m) => m.startLine.startsWith('BYE '), 5000);
      answer('200 OK', bye);
      expect((await pbx).code).toBe(0);
      return invite.body;
    } finally {
      c.close();
    }
  }

  it('gives a registered client that announced +keylatch over TLS its key in calls from the PBX', async () => {
    const offer = await callToRegistered('kate', true);
    expect(keyFromSdp(offer)).not.toBeNull();
  });

  it('gives no key in calls from the PBX to a TLS client that did not announce +keylatch', async () => {
    const offer = await callToRegistered('liam', false);
    expect(offer).not.toMatch(/keylatch/);
  });

  it('gives no key over plain TCP, even to a client that announced keylatch', async () => {
    const { answer, hangUp } = await call('tcp', true);
    expect(answer).not.toMatch(/keylatch/);
    expect(f.relay.stats(f.relay.callIds()[0]!)!.every((l) => l.policy === 'guarded')).toBe(true);
    await hangUp();
  });

  it('gives no key to a plain-TCP client whose Via claims WSS: the listener decides, not the client', async () => {
    const policies: Array<string | undefined> = [];
    const offer = f.relay.offer.bind(f.relay);
    f.relay.offer = (req) => {
      policies.push(req.offerer?.policy);
      return offer(req);
    };
    const c = await SipStreamClient.connect('tcp', '127.0.0.1', tcpPort);
    try {
      c.send(['INVITE sip:bob@keylatch.test SIP/2.0', 'Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKliar;rport', 'From: <sip:mallory@keylatch.test>;tag=liar',
        'To: <sip:bob@keylatch.test>', `Call-ID: liar-${process.pid}`, 'CSeq: 1 INVITE', 'Contact: <sip:mallory@df7jal23ls0d.invalid;transport=ws>', 'Max-Forwards: 70',
        'Content-Type: application/sdp'], offerSdp(true));
      await new Promise((r) => setTimeout(r, 2000));
      // drachtio-server drops a request whose Via contradicts its connection; if one ever got
      // through, transportOf() would still call it TCP (see test/unit/transport-of.test.ts).
      expect(policies).not.toContain('key');
    } finally {
      f.relay.offer = offer;
      c.close();
    }
  });

  it('refuses a client that cannot hold a key with 403 when the key is required, and admits one that can', async () => {
    f.sip.requireKey = true;
    try {
      const c = await SipStreamClient.connect('tcp', '127.0.0.1', tcpPort);
      c.send(['INVITE sip:bob@keylatch.test SIP/2.0', 'Via: SIP/2.0/TCP 192.168.1.40:5061;branch=z9hG4bKreq1;rport', 'From: <sip:dave@keylatch.test>;tag=r1',
        'To: <sip:bob@keylatch.test>', 'Call-ID: require-key-1', 'CSeq: 1 INVITE', 'Contact: <sip:dave@192.168.1.40:5061;transport=tcp>', 'Max-Forwards: 70',
        'Content-Type: application/sdp'], offerSdp(true));
      const res = await c.next();
      expect(res.status).toBe(403);
      expect(res.headers.get('warning')).toMatch(/TLS or WSS/);
      c.close();
      expect(f.relay.callCount).toBe(0);
      const { answer, hangUp } = await call('tls', true);
      expect(keyFromSdp(answer)).not.toBeNull();
      await hangUp();
    } finally {
      f.sip.requireKey = false;
    }
  });

  it('gives no key over TLS to a client that did not announce keylatch', async () => {
    const { answer, hangUp } = await call('tls', false);
    expect(answer).not.toMatch(/keylatch/);
    await hangUp();
  });
});
