/**
 * Dead media on ng nodes and the pooled calls of `keylatch status`, against real keylatch
 * relays behind real ng servers on loopback: ng query as NgNode reads it, the media watch
 * ending a call its node timed out or no longer holds (and only such a call), and the status
 * rows per pooled call.
 */
import { NgServer } from '../../src/control/ng-server';
import { formatStatus } from '../../src/control/status-format';
import type { Relay } from '../../src/media/relay';
import { MediaWatch, type WatchedCall } from '../../src/relay-pool/media-watch';
import { NgNode, type RelayNode } from '../../src/relay-pool/nodes';
import { RelayPool } from '../../src/relay-pool/pool';
import { pooledCallStatuses } from '../../src/relay-pool/pool-status';
import { newRelay, sdp, sleep, waitForAsync } from '../helpers/peers';

const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function ngRelay(over: Parameters<typeof newRelay>[0] = {}): Promise<{ relay: Relay; node: NgNode; pool: RelayPool; server: NgServer; restart: () => Promise<void> }> {
  let relay = newRelay(over);
  let server = new NgServer(relay);
  const { port } = await server.listen(0, '127.0.0.1');
  const node = new NgNode(`ng://127.0.0.1:${port}`, 'keylatch', { pingMs: 150, commandMs: 500 });
  /** A new relay process, as a restart makes it: same ng port, no calls. */
  const restart = async (): Promise<void> => {
    server.close();
    await relay.close();
    await new Promise((r) => setTimeout(r, 5)); // a restart takes a moment: its start time differs
    relay = newRelay(over);
    server = new NgServer(relay);
    await server.listen(port, '127.0.0.1');
  };
  const pool = new RelayPool([{ node, weight: 1 }], { pingIntervalMs: 100, missedPingsDown: 2 });
  closers.push(async () => {
    pool.close();
    try {
      server.close();
    } catch {
      /* closed by the test */
    }
    await relay.close();
  });
  return { relay, node, pool, server, restart };
}

/**
 * A call placed within a second of its node's start may have been lost to that start (the two
 * clocks need not agree: media-watch.ts): a call the node must be found to have ended comes later.
 */
const SINCE_START_MS = 1100;

const noMoves = (node: RelayNode, lost: Array<{ callId: string }>): never => {
  throw new Error(`no call should be taken for lost here: ${lost.map((l) => l.callId).join()} on ${node.id}`);
};

const guarded = { policy: 'guarded' as const, secure: false, signallingAddress: '127.0.0.1' };

/** A call set up on the node: offer from tag a, answer from tag b. */
async function callOn(node: RelayNode, callId: string): Promise<void> {
  await node.offer({ callId, fromTag: 'a', sdp: sdp('127.0.0.1', 50000), offerer: guarded, answerer: guarded });
  await node.answer({ callId, fromTag: 'a', toTag: 'b', sdp: sdp('127.0.0.1', 50002), answerer: guarded });
}

/** A call as the watch sees it, whose placement the test may move on. */
function watched(node: RelayNode, callId: string, placedAt = Date.now()): WatchedCall & { ended: string[]; placement: number } {
  const c = {
    callId,
    ended: [] as string[],
    placement: 1,
    mediaOnNode: () => (c.ended.length ? null : { node, callId, placement: c.placement, placedAt }),
    hangUp: (why: string) => void c.ended.push(why),
  };
  return c;
}

describe('ng query through NgNode', () => {
  it('reads a keylatch node\'s legs, says null for an unknown call and timed-out once the node says so', async () => {
    const { node } = await ngRelay({ timeouts: { mediaSec: 0.3, holdSec: 0.3 } });
    await callOn(node, 'q1');
    const held = await node.query('q1');
    expect(held).toMatchObject({ timedOut: false });
    expect(held!.legs.map((l) => [l.tag, l.policy, l.packetsIn, l.packetsOut])).toEqual([['a', 'guarded', 0, 0], ['b', 'guarded', 0, 0]]);
    expect(held!.legs[0]!.latchState).toMatch(/\w/);
    expect(await node.query('no-such-call')).toBeNull();
    // No media at all: the node's media timeout (0.3 s) fires, and query says so.
    await waitForAsync(async () => (await node.query('q1'))?.timedOut === true, 5000);
  });
});

describe('media watch', () => {
  it('ends a call its node timed out, with BYE reasons for each case, and leaves live calls alone', async () => {
    const { node, pool } = await ngRelay({ timeouts: { mediaSec: 0.3, holdSec: 0.3 } });
    pool.start();
    await sleep(SINCE_START_MS);
    const watch = new MediaWatch(pool, () => calls, 1000, noMoves);
    await callOn(node, 'live');
    const live = watched(node, 'live');
    const gone = watched(node, 'never-placed');
    const calls = [live, gone];
    // A round right away: the fresh call is alive; one the node never had is ended.
    expect(await watch.round()).toBe(1);
    expect(live.ended).toEqual([]);
    expect(gone.ended).toEqual(['relay node no longer holds the call']);
    expect(pool.mediaTimeouts).toBe(1);
    await waitForAsync(async () => (await node.query('live'))?.timedOut === true, 5000);
    expect(await watch.round()).toBe(1);
    expect(live.ended).toEqual(['media timeout on relay node']);
    expect(pool.mediaTimeouts).toBe(2);
  });

  it('does not end a call that moved while its query was out, nor one whose node stopped answering', async () => {
    const { node, pool, server } = await ngRelay();
    pool.start();
    const moved = watched(node, 'moved-away');
    // The node says it has no such call, but by then the call is on its next placement.
    const query = node.query.bind(node);
    jest.spyOn(node, 'query').mockImplementation(async (id) => {
      const out = await query(id);
      moved.placement++;
      return out;
    });
    const watch = new MediaWatch(pool, () => [moved], 1000, noMoves);
    expect(await watch.round()).toBe(0);
    expect(moved.ended).toEqual([]);
    jest.restoreAllMocks();
    server.close();
    const silent = watched(node, 'on-a-silent-node');
    expect(await new MediaWatch(pool, () => [silent], 1000, noMoves).round()).toBe(0);
    expect(silent.ended).toEqual([]);
  });
});

describe('a node that lost calls while it kept answering', () => {
  it('says when in its pong; the watch hands its lost calls on to move, not to end, and still ends a call placed after', async () => {
    const { node, pool, restart } = await ngRelay();
    const first = await node.ping();
    expect(first.callsLostAt).toBeLessThanOrEqual(Date.now());
    await callOn(node, 'before-restart');
    const before = watched(node, 'before-restart');
    const moved: Array<[string, string[]]> = [];
    const calls: WatchedCall[] = [before];
    const watch = new MediaWatch(pool, () => calls, 1000, (n, lost) => void moved.push([n.id, lost.map((l) => l.callId)]));
    expect(await watch.round()).toBe(0);
    await restart();
    await sleep(SINCE_START_MS);
    const after = watched(node, 'placed-after-restart');
    calls.push(after);
    // No ping between the restart and the round: the watch asks the node itself before ending anything.
    expect(await watch.round()).toBe(1);
    expect(before.ended).toEqual([]);
    expect(moved).toEqual([[node.id, ['before-restart']]]);
    expect(after.ended).toEqual(['relay node no longer holds the call']);
    expect(pool.mediaTimeouts).toBe(1);
  });

  it('is seen by the pings: the pool says "forgot", and a recheck moves only the calls the node no longer holds', async () => {
    const { node, pool, restart } = await ngRelay();
    pool.start();
    await waitForAsync(async () => (await pool.callsLostAt(node)) !== null, 2000);
    const forgot: string[] = [];
    pool.on('forgot', (n) => forgot.push(n.id));
    for (const id of ['c1', 'c2']) pool.place(id, false);
    await restart();
    await callOn(node, 'c2'); // placed again since: held
    const moved: string[][] = [];
    const calls = ['c1', 'c2'].map((id) => watched(node, id, Date.now() - 2000));
    const watch = new MediaWatch(pool, () => calls, 0, (_n, lost) => void moved.push(lost.map((l) => `${l.callId}#${l.placement}`)));
    await waitForAsync(async () => forgot.length === 1, 2000);
    expect(await watch.recheck(node)).toBe(1);
    expect(moved).toEqual([['c1#1']]);
    expect(calls.map((c) => c.ended)).toEqual([[], []]);
    expect(pool.status()[0]!.state).toBe('up');
  });
});

describe('pooled calls in keylatch status', () => {
  it('lists each pooled call with its node and legs, says so for a call the node lost, and skips in-process calls', async () => {
    const { node } = await ngRelay();
    await callOn(node, 'shown');
    const inProcess = { id: 'in-process', kind: 'in-process' } as unknown as RelayNode;
    const status = await pooledCallStatuses([
      { callId: 'sip-1', mediaPlace: { node, relayCallId: 'shown', hairpin: false } },
      { callId: 'sip-2', mediaPlace: { node, relayCallId: 'shown', hairpin: true } },
      { callId: 'sip-3', mediaPlace: { node, relayCallId: 'lost', hairpin: false } },
      { callId: 'sip-4', mediaPlace: { node: inProcess, relayCallId: 'x', hairpin: false } },
      { callId: 'ringing', mediaPlace: null },
    ]);
    expect(status.total).toBe(3);
    expect(status.shown.map((c) => [c.callId, c.relay, c.hairpin, c.legs?.length ?? null, c.error ?? null])).toEqual([
      ['sip-1', node.id, false, 2, null],
      ['sip-2', node.id, true, 2, null],
      ['sip-3', node.id, false, null, 'the node does not hold this call'],
    ]);
    const text = formatStatus({ service: 'edge', now: Date.now(), uptimeSec: 1, summary: {}, bindings: null, calls: [], pooledCalls: status });
    expect(text).toContain('Calls on relay nodes: 3');
    // The in-process relay's calls are named as such, not as all the edge's calls.
    expect(text).toContain("Calls on the edge's own relay: 0");
    expect(text).not.toMatch(/^Calls: /m);
    expect(text).toMatch(new RegExp(`sip-2 +${node.id.replace(/[/.]/g, '\\$&')} \\(hairpin\\) +a +guarded`));
    expect(text).toContain('the node does not hold this call');
    const cut = await pooledCallStatuses([{ callId: 'sip-1', mediaPlace: { node, relayCallId: 'shown', hairpin: false } }, { callId: 'sip-2', mediaPlace: { node, relayCallId: 'shown', hairpin: true } }], 1);
    expect([cut.total, cut.shown.length]).toEqual([2, 1]);
  });
});
