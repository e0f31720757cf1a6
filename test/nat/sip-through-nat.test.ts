/**
 * Signalling through a real NAT: a phone behind a symmetric NAT (MASQUERADE --random-fully)
 * whose UDP mappings die after 5 s idle. keylatch's keepalives must hold its flow open so a
 * PBX call still arrives after 8 s idle; after a conntrack flush, the phone's next REGISTER
 * comes from a new mapping and the binding, and the next call, must follow it.
 */
import path from 'node:path';
import { loadConfig } from '../../src/config/load';
import { Relay } from '../../src/media/relay';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { skipUnlessDrachtio, startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { LiveEvents, RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { waitFor } from '../helpers/peers';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';

const PHONE = path.join(__dirname, 'nat-phone.ts');
const why = netnsUnavailable() ?? sippUnavailable();
if (why) console.warn(`!!! SKIPPED SIP-through-NAT tests: ${why}`);
const skip = skipUnlessDrachtio('SIP-through-NAT tests') || why !== null;

(skip ? describe.skip : describe)('SIP through a symmetric NAT', () => {
  let topo: Topology;
  let phone: ReturnType<Topology['addNattedClient']>;
  let pbx: ReturnType<Topology['addPublicHost']>;
  let drachtio: RunningDrachtio;
  let relay: Relay;
  let edge: SipEdge;

  beforeAll(async () => {
    topo = new Topology(`kls${process.pid % 10000}`);
    topo.destroy();
    topo.createPublicNet();
    phone = topo.addNattedClient('ph', 2, 'symmetric');
    pbx = topo.addPublicHost('pbx', 5);
    // Mappings die after 5 s idle: only keepalives can keep the phone reachable.
    topo.exec(phone.natNs, 'sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout=5', 'net.netfilter.nf_conntrack_udp_timeout_stream=5']);
    drachtio = await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp`], adminPort: 7022 + (process.pid % 500) });
    relay = new Relay({ ...loadConfig({ env: {} }).media, interface: RELAY_IP, portMin: 35200, portMax: 35299 });
    const sip = {
      ...loadConfig({ env: {} }).sip,
      pbx: `sip:${pbx.ip}:5060`,
      advertisedAddress: `${RELAY_IP}:5060`,
      keepalive: { ...loadConfig({ env: {} }).sip.keepalive, intervalSec: 2, timeoutMs: 1000, maxFailures: 3 },
    };
    edge = await startSipEdge({ drachtio: drachtio.admin, relay, sip });
  }, 30000);
  afterAll(async () => {
    await edge?.close();
    await relay?.close();
    await drachtio?.stop();
    topo?.destroy();
  });

  const bindingOf = async () => (await edge.store.byAor('sip:bob@keylatch.test'))[0];

  /** The PBX calls the phone's binding; resolves with sipp's result. */
  const pbxCalls = async (bindingId: string) =>
    runSipp(['-sf', path.join(SCENARIOS, 'pbx-call.xml'), '-i', pbx.ip, '-p', '5062', '-m', '1', '-s', bindingId, '-key', 'mport', '4000', '-d', '200', `${RELAY_IP}:5060`],
      { netns: pbx.ns, timeoutMs: 10000 });

  it('keeps the phone reachable through 8 s of idle with 5 s NAT mappings, then follows a rebinding', async () => {
    const registrar = runSipp(['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml'), '-i', pbx.ip, '-p', '5060', '-m', '1'], { netns: pbx.ns, timeoutMs: 10000 });
    const child = topo.spawnTs(phone.clientNs, PHONE, { localIp: phone.privateIp, port: 5060, edge: { address: RELAY_IP, port: 5060 }, user: 'bob', durationMs: 40000 });
    const events = new LiveEvents(child);
    try {
      expect((await registrar).code).toBe(0);
      await waitFor(() => events.of('registered').length > 0, 5000);
      const first = (await bindingOf())!;
      expect(first.source.address).toBe(phone.publicIp);

      await new Promise((r) => setTimeout(r, 8000)); // idle: only keylatch's keepalives cross the NAT
      const call1 = await pbxCalls(first.id);
      expect({ pbx: call1.code, out: call1.code === 0 ? '' : call1.out.slice(-1500) }).toEqual({ pbx: 0, out: '' });
      expect(events.of('invite')).toHaveLength(1);
      expect(events.last('invite')!.ruri).toBe(`sip:bob@${phone.privateIp}:5060`);

      topo.flushConntrack(phone.natNs);
      child.kill('SIGUSR1'); // the phone refreshes its registration, now from a new mapping
      await waitFor(() => events.of('registered').length === 2, 5000);
      const second = (await bindingOf())!;
      expect(second.id).toBe(first.id);
      expect(second.source.port).not.toBe(first.source.port); // --random-fully: a new external port
      const call2 = await pbxCalls(second.id);
      expect({ pbx: call2.code, out: call2.code === 0 ? '' : call2.out.slice(-1500) }).toEqual({ pbx: 0, out: '' });
      expect(events.of('invite')).toHaveLength(2);
    } finally {
      child.kill('SIGKILL');
      await events.done.catch(() => undefined);
    }
  }, 60000);
});
