/**
 * Phones behind real Linux NATs whose UDP conntrack timeouts are short, with keylatch's default
 * keepalive settings, on a real drachtio-server. Each phone registers once and then stays
 * silent (nat-phone.ts sends nothing of its own while idle, and its registration and the edge's
 * NAT expiry are long enough that no REGISTER refresh can hold the mapping open): only
 * keylatch's keepalives cross its NAT. After three NAT timeouts the PBX calls it, and the
 * INVITE must arrive.
 *  - 20 s unreplied / 30 s stream (the lab in issue 9), 20 s flat, and 30 s: the first
 *    interval must already be short enough, since a phone that is never heard from again
 *    cannot be learned from.
 *  - 10 s flat: shorter than the first interval, so the first keepalive finds the mapping gone.
 *    The phone registers again from a new mapping, keylatch learns, and from then on the phone
 *    must stay reachable with nothing but keepalives.
 * The four run side by side: the suite takes about as long as the longest idle (90 s).
 */
import path from 'node:path';
import { Registry } from 'prom-client';
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import type { Binding } from '../../src/nat/binding';
import { registerKeepaliveMetrics } from '../../src/nat/keepalive';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { LiveEvents, RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';

const PHONE = path.join(__dirname, 'nat-phone.ts');
const why = netnsUnavailable() ?? sippUnavailable();
if (why) console.warn(`!!! SKIPPED adaptive keepalive NAT tests: ${why}`);
const skip = skipUnlessDrachtio('adaptive keepalive NAT tests') || why !== null;

interface Case {
  user: string;
  n: number;
  unrepliedSec: number;
  streamSec: number;
  /** Seconds after registering at which the phone registers again (from whatever mapping its NAT gives it), or null. */
  registerAgainAtSec: number | null;
}

const CASES: Case[] = [
  { user: 'alice', n: 2, unrepliedSec: 20, streamSec: 30, registerAgainAtSec: null },
  { user: 'dave', n: 3, unrepliedSec: 20, streamSec: 20, registerAgainAtSec: null },
  { user: 'bob', n: 4, unrepliedSec: 30, streamSec: 30, registerAgainAtSec: null },
  { user: 'carol', n: 5, unrepliedSec: 10, streamSec: 10, registerAgainAtSec: 25 },
];
const IDLE_TIMEOUTS = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Outcome {
  first: Binding;
  beforeCall: Binding | undefined;
  call: { code: number; out: string };
  invites: number;
  lines: Array<Record<string, unknown>>;
}

(skip ? describe.skip : describe)('adaptive keepalives through NATs with short UDP timeouts', () => {
  let topo: Topology;
  let drachtio: RunningDrachtio;
  let relay: Relay;
  let edge: SipEdge;
  const outcomes = new Map<string, Promise<Outcome>>();
  let registrar: Promise<{ code: number; out: string }>;
  let pbx: { ns: string; ip: string };

  /**
   * The PBX calls a binding. It sends from its registrar port, as a UDP PBX does (RFC 3261
   * 18.1.1, and how keylatch tells the PBX from a phone), so calls take turns on that port.
   */
  let pbxTurn: Promise<unknown> = Promise.resolve();
  function pbxCalls(bindingId: string): Promise<{ code: number; out: string }> {
    const call = pbxTurn.then(() =>
      runSipp(['-sf', path.join(SCENARIOS, 'pbx-call.xml'), '-i', pbx.ip, '-p', '5060', '-m', '1', '-s', bindingId, '-key', 'mport', '4000', '-d', '200', `${RELAY_IP}:5060`], { netns: pbx.ns, timeoutMs: 15000 }),
    );
    pbxTurn = call.catch(() => undefined);
    return call;
  }

  beforeAll(async () => {
    topo = new Topology(`klka${process.pid % 10000}`);
    topo.destroy();
    topo.createPublicNet();
    pbx = topo.addPublicHost('pbx', 5);
    const phones = CASES.map((c) => ({ c, ns: topo.addNattedClient(c.user.slice(0, 3), c.n, 'symmetric') }));
    for (const { c, ns } of phones) {
      topo.exec(ns.natNs, 'sysctl', ['-q', '-w', `net.netfilter.nf_conntrack_udp_timeout=${c.unrepliedSec}`, `net.netfilter.nf_conntrack_udp_timeout_stream=${c.streamSec}`]);
    }
    drachtio = await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp`], adminPort: 7522 + (process.pid % 400) });
    const base = loadConfig({ env: {} });
    relay = new Relay({ ...base.media, interface: RELAY_IP, portMin: 35400, portMax: 35499 });
    // Default keepalive settings. Only the edge's NAT expiry is long, so that no REGISTER
    // refresh is asked of the phones and keylatch's keepalives alone must hold the mappings.
    const sip = { ...base.sip, pbx: `sip:${pbx.ip}:5060`, advertisedAddress: `${RELAY_IP}:5060`, registration: { ...base.sip.registration, natExpiresSec: 3600 } };
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip });

    registrar = runSipp(['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml'), '-i', pbx.ip, '-p', '5060', '-m', String(CASES.length)], { netns: pbx.ns, timeoutMs: 20000 });
    pbxTurn = registrar.catch(() => undefined); // the registrar's port is the PBX's: calls wait for it
    for (const { c, ns } of phones) outcomes.set(c.user, run(c, ns));
    for (const o of outcomes.values()) o.catch(() => undefined);
  }, 60000);

  afterAll(async () => {
    await Promise.allSettled(outcomes.values());
    await edge?.close();
    await relay?.close();
    await drachtio?.stop();
    topo?.destroy();
  });

  const bindingOf = async (user: string): Promise<Binding | undefined> => (await edge.store.byAor(`sip:${user}@keylatch.test`))[0];

  async function run(c: Case, ns: ReturnType<Topology['addNattedClient']>): Promise<Outcome> {
    const child = topo.spawnTs(ns.clientNs, PHONE, { localIp: ns.privateIp, port: 5060, edge: { address: RELAY_IP, port: 5060 }, user: c.user, durationMs: 170000, rtpPort: 4000 });
    const events = new LiveEvents(child);
    try {
      await events.next('registered', 20000, 0);
      const first = (await bindingOf(c.user))!;
      if (c.registerAgainAtSec !== null) {
        await sleep(c.registerAgainAtSec * 1000);
        events.command({ cmd: 'register' });
        await events.next('registered', 10000, 1);
      }
      await sleep(IDLE_TIMEOUTS * c.streamSec * 1000); // silent: only keylatch's keepalives cross the NAT
      const beforeCall = await bindingOf(c.user);
      // A phone keylatch gave up on (three unanswered keepalives) cannot be called at all.
      const call = beforeCall ? await pbxCalls(beforeCall.id) : { code: -1, out: 'no binding left: keylatch dropped it' };
      return { first, beforeCall, call, invites: events.of('invite').length, lines: events.lines };
    } finally {
      Topology.killGroup(child);
      await events.done.catch(() => undefined);
    }
  }

  it('sets the timeouts in the NAT namespaces only: conntrack sysctls are per network namespace here', async () => {
    const r = await registrar;
    expect({ code: r.code, out: r.code === 0 ? '' : r.out.slice(-1500) }).toEqual({ code: 0, out: '' });
    const natNs = topo.ns(`${CASES[0]!.user.slice(0, 3)}nat`);
    expect(topo.exec(natNs, 'sysctl', ['-n', 'net.netfilter.nf_conntrack_udp_timeout']).trim()).toBe(String(CASES[0]!.unrepliedSec));
    expect(topo.exec(topo.bridgeNs, 'sysctl', ['-n', 'net.netfilter.nf_conntrack_udp_timeout']).trim()).not.toBe(String(CASES[0]!.unrepliedSec));
  });

  it.each(CASES.filter((c) => c.registerAgainAtSec === null).map((c) => [c.unrepliedSec, c.streamSec, c.user] as const))(
    'NAT %i s unreplied / %i s stream: %s, silent for three timeouts after registering, gets the PBX call',
    async (_u, _s, user) => {
      const o = await outcomes.get(user)!;
      expect({ pbx: o.call.code, out: o.call.code === 0 ? '' : o.call.out.slice(0, 1500) }).toEqual({ pbx: 0, out: '' });
      expect(o.invites).toBe(1);
      // Nothing to learn: the first interval was already short enough, and the flow never moved.
      expect(o.beforeCall!.source).toEqual(o.first.source);
      expect(o.beforeCall!.keepaliveIntervalMs).toBeUndefined();
    },
    170000,
  );

  it('NAT 10 s: the lost first mapping is learned from when the phone comes back, and then the phone stays reachable', async () => {
    const o = await outcomes.get('carol')!;
    expect(o.beforeCall).toBeDefined();
    expect(o.beforeCall!.source.port).not.toBe(o.first.source.port); // its NAT had forgotten the first mapping
    const learned = { interval: o.beforeCall!.keepaliveIntervalMs, failed: o.beforeCall!.keepaliveFailedMs };
    expect(learned.failed).toBeGreaterThan(10000);
    expect(learned.failed).toBeLessThanOrEqual(16000);
    expect(learned.interval).toBeGreaterThanOrEqual(5000);
    expect(learned.interval).toBeLessThan(10000);
    expect({ pbx: o.call.code, out: o.call.code === 0 ? '' : o.call.out.slice(0, 1500) }).toEqual({ pbx: 0, out: '' });
    expect(o.invites).toBe(1);
    const registry = new Registry();
    registerKeepaliveMetrics(edge.keepalive, registry);
    const text = await registry.metrics();
    expect(text).toMatch(/^keylatch_keepalive_adaptations_total\{direction="shorter"\} 1$/m);
    expect(text).toMatch(/^keylatch_keepalive_unanswered_total [1-9]\d*$/m);
  }, 170000);
});
