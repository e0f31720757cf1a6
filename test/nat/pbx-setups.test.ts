/**
 * The SIP setups people start from, with real peers: two stock baresip phones behind real NATs
 * (carol behind a port-preserving one, dave behind --random-fully), and Kamailio as a plain
 * record-routing proxy and registrar with digest authentication and no topology hiding. A call
 * between the phones crosses keylatch twice with one Call-ID and From tag, which is why the
 * edge runs with a second drachtio-server facing the PBX (sip.pbxDrachtio).
 *
 * Two account setups: the phones' domain is keylatch itself (no outbound proxy: the most
 * common softphone setup), and the phones' domain is the PBX's name with keylatch as outbound
 * proxy, with carol over TCP.
 */
import pino from 'pino';
import { loadConfig } from '../../src/config/load';
import type { SipConfig } from '../../src/config/schema';
import { createLogger, silentLogger } from '../../src/log';
import { Relay } from '../../src/media/relay';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { Baresip, baresipUnavailable, wavClosed, wavToneShare, type BaresipAccount } from '../helpers/baresip';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable, startKamailio } from '../helpers/kamailio';
import { RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { sleep, waitFor, waitForAsync } from '../helpers/peers';

const why = netnsUnavailable() ?? kamailioUnavailable() ?? baresipUnavailable();
if (why) console.warn(`!!! SKIPPED PBX setup tests: ${why}`);
const skip = skipUnlessDrachtio('PBX setup tests') || why !== null;

const CAROL_HZ = 440;
const DAVE_HZ = 1000;
const ESTABLISHED = /Call established/;
const CLOSED = /terminated|closed/i;

type Setup = { name: string; account: (user: string) => Partial<BaresipAccount>; carolTransport: 'udp' | 'tcp' };
const SETUPS: Setup[] = [
  { name: 'domain = keylatch, no outbound proxy', account: () => ({ domain: RELAY_IP, outbound: false }), carolTransport: 'udp' },
  { name: 'domain = the PBX, keylatch as outbound proxy, carol over TCP', account: () => ({ domain: 'pbx.test' }), carolTransport: 'tcp' },
];

SETUPS.forEach((setup, i) => {
  (skip ? describe.skip : describe)(`phones through keylatch to a record-routing Kamailio (${setup.name})`, () => {
    let topo: Topology;
    const drachtio: RunningDrachtio[] = [];
    let relay: Relay;
    let edge: SipEdge;
    let pbx: ReturnType<typeof startKamailio>;
    let carol: Baresip;
    let dave: Baresip;
    let carolNet: ReturnType<Topology['addNattedClient']>;
    let daveNet: ReturnType<Topology['addNattedClient']>;
    const domain = (): string => setup.account('').domain ?? 'keylatch.test';

    beforeAll(async () => {
      topo = new Topology(`klp${i}${process.pid % 1000}`);
      topo.destroy();
      topo.createPublicNet();
      carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
      daveNet = topo.addNattedClient('da', 4, 'symmetric');
      const pbxHost = topo.addPublicHost('pbx', 5);
      pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { config: 'kamailio-proxy.cfg' });
      const admin = 7920 + (process.pid % 300) * 2 + i * 600;
      drachtio.push(await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp,tcp`], adminPort: admin }));
      drachtio.push(await startDrachtio({ contacts: [`sip:${RELAY_IP}:5070;transport=udp,tcp`], adminPort: admin + 1 }));
      relay = new Relay({ ...loadConfig({ env: {} }).media, interface: RELAY_IP, portMin: 35600 + i * 100, portMax: 35699 + i * 100 });
      const sip: SipConfig = { ...loadConfig({ env: {} }).sip, pbx: `sip:${pbxHost.ip}:5060`, advertisedAddress: `${RELAY_IP}:5070` };
      const logger = process.env.KEYLATCH_TEST_LOG ? createLogger(process.env.KEYLATCH_TEST_LOG) : silentLogger;
      edge = await startSipEdge({ drachtio: drachtio[0]!.admin, pbxDrachtio: drachtio[1]!.admin, relay, sip, logger });
      const phone = (user: string, net: typeof carolNet, toneHz: number, transport: 'udp' | 'tcp'): Baresip =>
        new Baresip(topo, net.clientNs, { localIp: net.privateIp, user, edge: `${RELAY_IP}:5060`, password: `pw-${user}`, toneHz, transport, ...setup.account(user) });
      carol = phone('carol', carolNet, CAROL_HZ, setup.carolTransport);
      dave = phone('dave', daveNet, DAVE_HZ, 'udp');
      for (const [user, p] of [['carol', carol], ['dave', dave]] as const) {
        await waitForAsync(async () => (await edge.store.byAor(`sip:${user}@${domain()}`)).length > 0, 10000).catch((err: Error) => {
          throw new Error(`${user} did not register: ${err.message}\n${p.tail()}\n${pbx.log().slice(-3000)}`);
        });
      }
    }, 60000);

    afterAll(async () => {
      await edge?.close();
      await relay?.close();
      for (const d of drachtio) await d.stop();
      pbx?.stop();
      topo?.destroy();
      carol?.remove();
      dave?.remove();
    });

    const idle = async (): Promise<void> => {
      await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 8000).catch(() => {
        throw new Error(`calls left: relay ${relay.callCount}, edge ${edge.calls.size}\n${pbx.log().slice(-2000)}`);
      });
    };
    const established = async (p: Baresip, before: number, who: string): Promise<void> => {
      await waitFor(() => p.count(ESTABLISHED) > before, 10000).catch(() => {
        throw new Error(`${who}: no established call\n${p.tail()}\n${pbx.log().slice(-3000)}`);
      });
    };
    /** The recording a phone made of its latest call, once that phone has closed it. */
    const closedRecording = async (p: Baresip, n: number): Promise<string> => {
      await waitFor(() => p.recordings().length >= n && wavClosed(p.recordings()[n - 1]!), 5000).catch(() => {
        throw new Error(`recording ${n} not closed: ${JSON.stringify(p.recordings())}\n${p.tail()}`);
      });
      return p.recordings()[n - 1]!;
    };

    it('registers both phones at the PBX through keylatch, digest authentication passing through', async () => {
      const bindings = [...(await edge.store.byAor(`sip:carol@${domain()}`)), ...(await edge.store.byAor(`sip:dave@${domain()}`))];
      expect(bindings.map((b) => [b.source.address, b.transport, b.natted])).toEqual([
        [carolNet.publicIp, setup.carolTransport, true],
        [daveNet.publicIp, 'udp', true],
      ]);
      // What the PBX sees: its own address as Request-URI when the phone named keylatch, the
      // uri the phone signed in the digest, the realm it challenged with, and keylatch's
      // Contact, over the PBX's own transport (UDP) whatever the phone used.
      const d = domain().replace(/\./g, '\\.');
      const ruri = domain() === RELAY_IP ? 'sip:198\\.18\\.0\\.5:5060' : 'sip:pbx\\.test';
      expect(pbx.log()).toMatch(new RegExp(`REGISTER sip:carol@${d} ruri=${ruri}\\S* digest-uri=sip:${d}\\S* realm=${d} proto=udp contact=<sip:\\S+@198\\.18\\.0\\.1:5070>`));
    });

    it('carol calls dave: each hears the other\'s tone, the callee holds and resumes, the callee hangs up', async () => {
      const inUse = relay.pool.inUse;
      const [carolUp, daveUp] = [carol.count(ESTABLISHED), dave.count(ESTABLISHED)];
      const recordings = [carol.recordings().length, dave.recordings().length];
      carol.command(`/dial sip:dave@${domain()}`);
      await established(carol, carolUp, 'carol');
      await established(dave, daveUp, 'dave');
      // Two B2BUA calls (carol-PBX, PBX-dave), one relay call: media crosses the relay once.
      expect(edge.calls.size).toBe(2);
      expect(relay.callCount).toBe(1);
      expect(relay.pool.inUse - inUse).toBe(2);
      await sleep(2000);
      const legs = relay.stats(relay.callIds()[0]!)!;
      expect(legs.map((l) => l.latched?.address).sort()).toEqual([carolNet.publicIp, daveNet.publicIp].sort());

      dave.command('/hold');
      await waitFor(() => relay.stats(relay.callIds()[0]!)!.some((l) => l.streams[0]!.onHold), 5000).catch(() => {
        throw new Error(`hold did not reach the relay\n${dave.tail()}\n${pbx.log().slice(-2000)}`);
      });
      dave.command('/resume');
      await waitFor(() => relay.stats(relay.callIds()[0]!)!.every((l) => !l.streams[0]!.onHold), 5000);
      await sleep(1500);
      const carolIn = relay.stats(relay.callIds()[0]!)!.find((l) => l.latched?.address === carolNet.publicIp)!.packetsIn;

      dave.command('/hangup');
      await idle();
      expect(relay.pool.inUse).toBe(inUse);
      expect(carolIn).toBeGreaterThan(100);
      // Both recordings are closed (carol's call ended when dave's BYE reached her), and each
      // holds the other's tone, not its own.
      const heardByCarol = await closedRecording(carol, recordings[0]! + 1);
      const heardByDave = await closedRecording(dave, recordings[1]! + 1);
      expect(wavToneShare(heardByCarol, DAVE_HZ, 0.5)).toBeGreaterThan(0.5);
      expect(wavToneShare(heardByCarol, CAROL_HZ, 0.5)).toBeLessThan(0.1);
      expect(wavToneShare(heardByDave, CAROL_HZ, 0.5)).toBeGreaterThan(0.5);
      expect(wavToneShare(heardByDave, DAVE_HZ, 0.5)).toBeLessThan(0.1);
    }, 60000);

    it('dave calls carol: the call finds carol\'s flow, audio both ways, the caller hangs up', async () => {
      const [carolUp, daveUp] = [carol.count(ESTABLISHED), dave.count(ESTABLISHED)];
      const recordings = [carol.recordings().length, dave.recordings().length];
      dave.command(`/dial sip:carol@${domain()}`);
      await established(dave, daveUp, 'dave');
      await established(carol, carolUp, 'carol');
      expect(relay.callCount).toBe(1);
      await sleep(2000);
      dave.command('/hangup');
      await idle();
      expect(wavToneShare(await closedRecording(carol, recordings[0]! + 1), DAVE_HZ, 0.5)).toBeGreaterThan(0.5);
      expect(wavToneShare(await closedRecording(dave, recordings[1]! + 1), CAROL_HZ, 0.5)).toBeGreaterThan(0.5);
    }, 40000);

    it('a busy callee: carol rejects, dave\'s call ends, and nothing is left on the relay', async () => {
      carol.command('/answermode manual');
      await sleep(300);
      const closed = dave.count(CLOSED);
      dave.command(`/dial sip:carol@${domain()}`);
      await waitFor(() => carol.count(/Incoming call/) > 0 && relay.callCount === 1, 8000);
      const incoming = carol.count(/Incoming call/);
      carol.command('/hangup');
      await waitFor(() => dave.count(CLOSED) > closed, 8000).catch(() => {
        throw new Error(`dave's call did not end\n${dave.tail()}\n${pbx.log().slice(-2000)}`);
      });
      expect(dave.lines.slice(-30).join('\n')).toMatch(/486|Busy|Rejected|Decline/i);
      expect(incoming).toBeGreaterThan(0);
      await idle();
    }, 30000);

    it('CANCEL: dave gives up before carol answers, and her phone stops ringing', async () => {
      const [incoming, closed] = [carol.count(/Incoming call/), carol.count(CLOSED)];
      dave.command(`/dial sip:carol@${domain()}`);
      await waitFor(() => carol.count(/Incoming call/) > incoming, 8000);
      dave.command('/hangup');
      await waitFor(() => carol.count(CLOSED) > closed, 8000).catch(() => {
        throw new Error(`carol still rings\n${carol.tail()}\n${pbx.log().slice(-2000)}`);
      });
      await idle();
    }, 30000);

    it('a callee that never answers: the PBX gives up, both sides end, the ports are freed', async () => {
      const closed = dave.count(CLOSED);
      dave.command(`/dial sip:carol@${domain()}`);
      await waitFor(() => dave.count(CLOSED) > closed, 15000).catch(() => {
        throw new Error(`dave's call did not time out\n${dave.tail()}\n${pbx.log().slice(-2000)}`);
      });
      await idle();
      carol.command('/answermode auto');
    }, 30000);
  });
});

(skip ? describe.skip : describe)('a record-routing Kamailio without sip.pbxDrachtio', () => {
  let topo: Topology;
  let drachtio: RunningDrachtio;
  let relay: Relay;
  let edge: SipEdge;
  let pbx: ReturnType<typeof startKamailio>;
  let carol: Baresip;
  let dave: Baresip;
  const lines: string[] = [];

  beforeAll(async () => {
    topo = new Topology(`klq${process.pid % 1000}`);
    topo.destroy();
    topo.createPublicNet();
    const carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
    const daveNet = topo.addNattedClient('da', 4, 'symmetric');
    const pbxHost = topo.addPublicHost('pbx', 5);
    pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { config: 'kamailio-proxy.cfg' });
    drachtio = await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp,tcp`], adminPort: 8520 + (process.pid % 300) });
    relay = new Relay({ ...loadConfig({ env: {} }).media, interface: RELAY_IP, portMin: 35800, portMax: 35899 });
    const sip: SipConfig = { ...loadConfig({ env: {} }).sip, pbx: `sip:${pbxHost.ip}:5060`, advertisedAddress: `${RELAY_IP}:5060` };
    const logger = pino({ level: 'info' }, { write: (l: string) => void lines.push(l) });
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip, logger });
    const account = { edge: `${RELAY_IP}:5060`, domain: RELAY_IP, outbound: false } as const;
    carol = new Baresip(topo, carolNet.clientNs, { ...account, localIp: carolNet.privateIp, user: 'carol', password: 'pw-carol' });
    dave = new Baresip(topo, daveNet.clientNs, { ...account, localIp: daveNet.privateIp, user: 'dave', password: 'pw-dave' });
    await waitForAsync(async () => (await edge.store.all()).length === 2, 10000);
  }, 60000);
  afterAll(async () => {
    await edge?.close();
    await relay?.close();
    await drachtio?.stop();
    pbx?.stop();
    topo?.destroy();
    carol?.remove();
    dave?.remove();
  });

  it('refuses the looped call with 482 and says which setting is missing, leaving nothing behind', async () => {
    const closed = carol.count(CLOSED);
    carol.command(`/dial sip:dave@${RELAY_IP}`);
    await waitFor(() => carol.count(CLOSED) > closed, 10000).catch(() => {
      throw new Error(`carol's call did not end\n${carol.tail()}\n${pbx.log().slice(-2000)}`);
    });
    expect(dave.count(/Incoming call/)).toBe(0);
    expect(lines.join('')).toMatch(/looped our own call back.*configure sip\.pbxDrachtio/);
    await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 5000);
  }, 30000);
});
