/**
 * Hairpins across edge processes (src/relay-pool/sibling-relays.ts): two "processes" on
 * loopback, each a relay with its SiblingRelays and a pool holding its own relay and the other's
 * with weight 0. A call's leg toward the PBX on process 0 is found and adopted from process 1's
 * pool; leg keys cross sealed; strangers, unsigned or wrongly signed requests get nothing; a
 * sibling is never given a call of its own.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import bencode from 'bencode';
import { signedAs, siblingKeys } from '../../src/control/sibling-auth';
import type { EdgeShare } from '../../src/edge-processes';
import { Relay } from '../../src/media/relay';
import { InProcessNode, type RelayNode } from '../../src/relay-pool/nodes';
import { RelayPool } from '../../src/relay-pool/pool';
import { SiblingRelays } from '../../src/relay-pool/sibling-relays';
import { keyFromSdp, mediaPorts, sdp, testMediaConfig, testPeers, waitFor } from '../helpers/peers';

const SECRET = 'a sibling secret for this test only, long enough';
const BASE_PORT = 26000 + (process.pid % 2000) * 4;
const peer = testPeers();

interface Proc {
  relay: Relay;
  siblings: SiblingRelays;
  pool: RelayPool;
}

let procs: Proc[] = [];
afterEach(async () => {
  for (const p of procs) {
    p.pool.close();
    p.siblings.close();
    await p.relay.close();
  }
  procs = [];
});

async function twoProcesses(secrets: [string, string] = [SECRET, SECRET]): Promise<void> {
  for (const index of [0, 1]) {
    const share: EdgeShare = { index, count: 2 };
    const relay = new Relay(testMediaConfig());
    const siblings = new SiblingRelays({ share, basePort: BASE_PORT, secret: secrets[index]!, relay, timeouts: { pingMs: 200, commandMs: 500 } });
    await siblings.listen();
    const pool = new RelayPool([{ node: new InProcessNode(relay), weight: 1 }, ...siblings.nodes.map((node) => ({ node, weight: 0, sibling: true }))], { pingIntervalMs: 200, missedPingsDown: 3 });
    procs.push({ relay, siblings, pool });
  }
  for (const p of procs) p.pool.start();
  if (secrets[0] === secrets[1]) await waitFor(() => procs.every((p) => p.pool.status().every((n) => n.lastPingMs !== null)), 3000);
}

/** The caller's call on process 0: what its leg toward the PBX looks like when the PBX bounces it. */
async function callerOnProcess0(): Promise<string> {
  const a = await peer();
  return (await procs[0]!.relay.offer({ callId: 'carol-to-pbx', fromTag: 'ca', sdp: sdp(a.address, a.port), offerer: { signallingAddress: '127.0.0.1' } })).sdp;
}

/** One request to process `index`'s channel, as raw bytes; resolves with the reply or null after 300 ms. */
async function rawAsk(index: number, req: Record<string, unknown>): Promise<Record<string, unknown> | null> {
  const s = dgram.createSocket('udp4');
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  const reply = new Promise<Record<string, unknown> | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), 300);
    s.on('message', (msg) => {
      clearTimeout(timer);
      resolve(bencode.decode(msg.subarray(msg.indexOf(0x20) + 1), 'utf8') as Record<string, unknown>);
    });
  });
  s.send(Buffer.concat([Buffer.from('ck1 '), Buffer.from(bencode.encode(req))]), BASE_PORT + index, '127.0.0.1');
  const r = await reply;
  s.close();
  return r;
}

describe('sibling relays', () => {
  it('hands a bounced offer the caller\'s leg on the other process: the call is anchored once', async () => {
    await twoProcesses();
    const towardPbx = await callerOnProcess0();
    const [own, sibling] = [procs[1]!.pool.nodes[0]!, procs[1]!.pool.nodes[1]!];
    // Process 1's own relay holds no leg of it; its pool names both, and the sibling adopts.
    const candidates = procs[1]!.pool.hairpinNodesFor(towardPbx);
    expect(candidates).toEqual([own, sibling]);
    expect(await own.hairpins!.adopt(towardPbx, { policy: 'guarded', secure: false })).toBeNull();
    const adopted = await sibling.hairpins!.adopt(towardPbx, { policy: 'guarded', secure: false, signallingAddress: '127.0.0.1' });
    expect(adopted?.ref.callId).toBe('carol-to-pbx');
    expect(mediaPorts(adopted!.sdp)).toEqual(mediaPorts(towardPbx));
    expect(procs[1]!.relay.pool.inUse).toBe(0);
  });

  it('a key leg\'s key crosses the channel sealed and reaches the adopter in clear', async () => {
    await twoProcesses();
    const towardPbx = await callerOnProcess0();
    const sibling: RelayNode = procs[1]!.pool.nodes[1]!;
    const adopted = await sibling.hairpins!.adopt(towardPbx, { policy: 'key', secure: true, signallingAddress: '127.0.0.1' });
    expect(keyFromSdp(adopted!.sdp)).toBeTruthy();
    // The same request on the wire, as process 1 sends it: the reply holds the key only sealed.
    await sibling.hairpins!.disown(adopted!.ref, { policy: 'guarded', secure: false });
    const { macKey } = siblingKeys(SECRET, 'relays');
    const wire = await rawAsk(0, signedAs(1, macKey)({ command: 'adopt', sdp: towardPbx, 'keylatch-answerer': 'key', 'secure-answerer': 'yes' }));
    expect(String(wire?.sdp)).toMatch(/a=keylatch:v1 leg=\S+ sealed=/);
    expect(String(wire?.sdp)).not.toMatch(/ key=/);
  });

  it('answers nothing to a stranger, an unsigned or stale request, or another secret; refuses commands it does not serve', async () => {
    await twoProcesses();
    const towardPbx = await callerOnProcess0();
    const { macKey } = siblingKeys(SECRET, 'relays');
    expect(await rawAsk(0, { command: 'ping' })).toBeNull();
    expect(await rawAsk(0, { command: 'ping', from: 1, ts: Date.now(), mac: '00'.repeat(32) })).toBeNull();
    expect(await rawAsk(0, signedAs(1, siblingKeys('another secret, also long enough', 'relays').macKey)({ command: 'ping' }))).toBeNull();
    // The rooms channel's key signs nothing here.
    expect(await rawAsk(0, signedAs(1, siblingKeys(SECRET, 'rooms').macKey)({ command: 'ping' }))).toBeNull();
    const stale = { command: 'ping', from: 1, ts: Date.now() - 60_000 };
    expect(await rawAsk(0, { ...stale, mac: signedAs(1, macKey)(stale).mac })).toBeNull();
    expect(await rawAsk(0, signedAs(0, macKey)({ command: 'ping' }))).toBeNull(); // itself
    expect(await rawAsk(0, 'junk' as unknown as Record<string, unknown>)).toBeNull();
    expect(await rawAsk(0, signedAs(1, macKey)({ command: 'ping' }))).toMatchObject({ result: 'pong' });
    for (const command of ['offer', 'delete', 'query', 'list']) {
      expect(await rawAsk(0, signedAs(1, macKey)({ command, 'call-id': 'carol-to-pbx', 'from-tag': 'x', sdp: towardPbx }))).toMatchObject({ result: 'error' });
    }
    expect(procs[0]!.relay.stats('carol-to-pbx')).not.toBeNull();
  });

  it('never gives a sibling a call of its own', async () => {
    await twoProcesses();
    const pool = procs[1]!.pool;
    for (let i = 0; i < 10; i++) expect(pool.place(`call-${i}`, i % 2 === 0).id).toBe('in-process');
    procs[1]!.pool.drain('in-process');
    expect(() => pool.place('one more', false)).toThrow(/no live, undrained relay node/);
  });

  it('a sibling with another secret is not asked in vain: its pings go unanswered and it is down', async () => {
    await twoProcesses([SECRET, 'another secret, also long enough']);
    await waitFor(() => procs[1]!.pool.status()[1]!.state === 'down', 3000);
    expect(procs[1]!.pool.hairpinNodesFor(await callerOnProcess0())).toEqual([procs[1]!.pool.nodes[0]]);
  });
});
