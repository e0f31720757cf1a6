/** Keepalives down NATed UDP flows, on a real drachtio-server, with sipp as phone and PBX. */
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { newBindingId, type Binding } from '../../src/nat/binding';
import { waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp } from '../helpers/sipp';
import { sipEdgeFixture, skipSipSuite } from '../helpers/sip-edge';

const skip = skipSipSuite('SIP keepalive tests');

(skip ? describe.skip : describe)('keepalives', () => {
  const sipPort = 20060 + (process.pid % 500);
  const pbxPort = 19060 + (process.pid % 500);

  const binding = (port: number): Binding => ({
    id: newBindingId(), aor: 'sip:carol@keylatch.test', contact: `<sip:carol@127.0.0.9:${port}>`, instance: null,
    source: { address: '127.0.0.1', port }, transport: 'udp', localSocket: 'udp', lastSeen: Date.now(),
    expires: Date.now() + 60_000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: Date.now() + 3_600_000, keylatch: false,
  });

  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`],
    adminPort: 18022 + (process.pid % 500),
    sip: { pbx: `sip:127.0.0.2:${pbxPort}`, advertisedAddress: `127.0.0.1:${sipPort}`, keepalive: { ...loadConfig({ env: {} }).sip.keepalive, intervalSec: 3600, timeoutMs: 400, maxFailures: 2 } },
  });

  it("sends OPTIONS to the phone's Contact down its learned flow, and keeps a binding that answers", async () => {
    const port = 17060 + (process.pid % 500);
    const b = binding(port);
    await f.edge.store.put(b);
    const phone = runSipp(['-sf', path.join(SCENARIOS, 'phone-options.xml'), '-i', '127.0.0.1', '-p', String(port), '-m', '1'], { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    await f.edge.keepalive.round();
    const p = await phone;
    expect({ code: p.code, out: p.code === 0 ? '' : p.out.slice(-1500) }).toEqual({ code: 0, out: '' });
    await f.edge.keepalive.round(); // nobody answers now: one failure, below maxFailures
    expect(await f.edge.store.get(b.id)).not.toBeNull();
    await f.edge.store.remove(b.id);
  });

  it('drops a binding whose flow stays silent and tells the PBX the contact is gone', async () => {
    const b = binding(16060 + (process.pid % 500)); // nothing listens there
    await f.edge.store.put(b);
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-unregister.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 300));
    await f.edge.keepalive.round();
    expect(await f.edge.store.get(b.id)).not.toBeNull();
    await f.edge.keepalive.round();
    expect(await f.edge.store.get(b.id)).toBeNull();
    const x = await pbx;
    expect({ code: x.code, out: x.code === 0 ? '' : x.out.slice(-1500) }).toEqual({ code: 0, out: '' });
  });
});

(skip ? describe.skip : describe)('keepalives from clients', () => {
  const sipPort = 53060 + (process.pid % 500);
  const f = sipEdgeFixture({
    contacts: [`sip:127.0.0.1:${sipPort};transport=udp,tcp`],
    adminPort: 54022 + (process.pid % 500),
    sip: { pbx: 'sip:127.0.0.2:5060', advertisedAddress: `127.0.0.1:${sipPort}` },
  });

  it('answers a CRLF ping on a TCP flow with a pong (RFC 5626 section 4.4.1), and the flow stays usable', async () => {
    const socket = net.connect(sipPort, '127.0.0.1');
    try {
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      const got: Buffer[] = [];
      socket.on('data', (d: Buffer) => got.push(d));
      socket.write('\r\n\r\n');
      await waitFor(() => Buffer.concat(got).toString() === '\r\n', 2000);
      socket.write(['OPTIONS sip:127.0.0.1 SIP/2.0', `Via: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKcrlf${Date.now()}`, 'From: <sip:x@keylatch.test>;tag=1',
        'To: <sip:127.0.0.1>', 'Call-ID: crlf-ping', 'CSeq: 1 OPTIONS', 'Max-Forwards: 70', 'Content-Length: 0', '', ''].join('\r\n'));
      await waitFor(() => /^\r\nSIP\/2\.0 200/.test(Buffer.concat(got).toString()), 2000);
    } finally {
      socket.destroy();
    }
  });

  it('lets any request from a known client refresh its binding and follow a new port, but never a new IP', async () => {
    const b: Binding = {
      id: newBindingId(), aor: 'sip:dave@keylatch.test', contact: '<sip:dave@10.0.0.7:5060>', instance: null,
      source: { address: '127.0.0.1', port: 9 }, transport: 'udp', localSocket: 'udp', lastSeen: 0,
      expires: Date.now() + 60_000, natted: true, natTests: ['private-contact'], secure: false, upstreamExpires: Date.now() + 3_600_000, keylatch: false,
    };
    await f.edge.store.put(b);
    const options = async (from: string): Promise<void> => {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, from, r));
      const answered = new Promise<void>((r) => sock.once('message', () => r()));
      sock.send(['OPTIONS sip:127.0.0.1 SIP/2.0', `Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bKref${Date.now()};rport`, 'From: <sip:dave@keylatch.test>;tag=1',
        'To: <sip:127.0.0.1>', `Call-ID: refresh-${from}-${Date.now()}`, 'CSeq: 1 OPTIONS', 'Contact: <sip:dave@10.0.0.7:5060>', 'Max-Forwards: 70', 'Content-Length: 0', '', ''].join('\r\n'),
      sipPort, '127.0.0.1');
      await answered;
      sock.close();
    };
    await options('127.0.0.1');
    const followed = (await f.edge.store.get(b.id))!;
    expect(followed.source.port).not.toBe(9);
    expect(followed.lastSeen).toBeGreaterThan(0);
    await options('127.0.0.3'); // someone else claiming dave's From and Contact
    expect((await f.edge.store.get(b.id))!.source).toEqual(followed.source);
  });
});
