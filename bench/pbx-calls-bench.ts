/**
 * npm run bench:pbx-calls — call setup time and time to first media for the setup users start
 * from: two stock baresip phones behind real NATs (carol port-preserving, dave --random-fully),
 * Kamailio as record-routing proxy with digest auth, keylatch with its PBX-facing
 * drachtio-server, the phones' domain being keylatch itself. Everything is measured on the
 * wire, by tshark on keylatch's own interface:
 *
 * - setup: the caller's first INVITE reaching keylatch → keylatch's 200 OK to the caller
 *   (includes the PBX's 407 challenge round and the callee's auto-answer);
 * - first media → caller / → callee: that 200 OK → the first RTP the relay sends to each.
 *
 * Needs root, iproute2, iptables, kamailio, baresip, tshark and drachtio-server.
 *
 *   BENCH_CALLS=10 (per direction)
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../src/config/load';
import type { SipConfig } from '../src/config/schema';
import { Relay } from '../src/media/relay';
import { startSipEdge } from '../src/sip/edge';
import { Baresip } from '../test/helpers/baresip';
import { startDrachtio } from '../test/helpers/drachtio';
import { startKamailio } from '../test/helpers/kamailio';
import { RELAY_IP, Topology, netnsUnavailable } from '../test/helpers/netns';
import { sleep, waitFor } from '../test/helpers/peers';
import { hasCommand } from '../test/helpers/tools';

const CALLS = Number(process.env.BENCH_CALLS ?? 10);
const PORTS = { min: 36600, max: 36699 };

type Packet = { t: number; src: string; dst: string; sport: number; dport: number; method: string; status: string; cseq: string; callId: string };

function readCapture(file: string): Packet[] {
  const out = spawnSync('tshark', ['-r', file, '-T', 'fields', '-E', 'separator=\t', '-e', 'frame.time_epoch', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'udp.srcport', '-e', 'udp.dstport',
    '-e', 'sip.Method', '-e', 'sip.Status-Code', '-e', 'sip.CSeq.method', '-e', 'sip.Call-ID'], { encoding: 'utf8', maxBuffer: 1 << 28 }).stdout;
  return out.split('\n').filter(Boolean).map((l) => {
    const [t, src, dst, sport, dport, method, status, cseq, callId] = l.split('\t');
    return { t: Number(t) * 1000, src: src!, dst: dst!, sport: Number(sport), dport: Number(dport), method: method ?? '', status: status ?? '', cseq: cseq ?? '', callId: callId ?? '' };
  });
}

const pct = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

async function main(): Promise<void> {
  const why = netnsUnavailable() ?? (['kamailio', 'baresip', 'tshark', 'drachtio'].find((c) => !hasCommand(c) && !(c === 'drachtio' && process.env.DRACHTIO_BIN)) ?? null);
  if (why) {
    console.error(`bench:pbx-calls cannot run here: ${why}`);
    process.exit(2);
  }
  const topo = new Topology(`klbp${process.pid % 1000}`);
  topo.destroy();
  topo.createPublicNet();
  const carolNet = topo.addNattedClient('ca', 3, 'port-preserving');
  const daveNet = topo.addNattedClient('da', 4, 'symmetric');
  const pbxHost = topo.addPublicHost('pbx', 5);
  const pbx = startKamailio(topo, pbxHost.ns, `${pbxHost.ip}:5060`, { config: 'kamailio-proxy.cfg' });
  const drachtio = [
    await startDrachtio({ contacts: [`sip:${RELAY_IP}:5060;transport=udp`], adminPort: 9722 }),
    await startDrachtio({ contacts: [`sip:${RELAY_IP}:5070;transport=udp`], adminPort: 9723 }),
  ];
  const relay = new Relay({ ...loadConfig({ env: {} }).media, interface: RELAY_IP, portMin: PORTS.min, portMax: PORTS.max });
  const sip: SipConfig = { ...loadConfig({ env: {} }).sip, pbx: `sip:${pbxHost.ip}:5060`, advertisedAddress: `${RELAY_IP}:5070` };
  const edge = await startSipEdge({ drachtio: drachtio[0]!.admin, pbxDrachtio: drachtio[1]!.admin, relay, sip });
  const phone = (user: string, net: typeof carolNet, hz: number): Baresip =>
    new Baresip(topo, net.clientNs, { localIp: net.privateIp, user, edge: `${RELAY_IP}:5060`, domain: RELAY_IP, outbound: false, password: `pw-${user}`, toneHz: hz });
  const phones = { carol: phone('carol', carolNet, 440), dave: phone('dave', daveNet, 1000) };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kl-bench-'));
  const pcap = path.join(dir, 'calls.pcap');
  const tshark = spawn('tshark', ['-i', topo.hostVeth, '-f', 'udp', '-w', pcap, '-q'], { stdio: 'ignore' });
  try {
    await waitFor(() => edge.calls.size === 0 && fs.existsSync(pcap), 5000, 50);
    const until = Date.now() + 15000;
    while ((await edge.store.all()).length < 2) {
      if (Date.now() > until) throw new Error('phones did not register');
      await sleep(100);
    }
    await sleep(1000);
    for (const [caller, callee] of [['carol', 'dave'], ['dave', 'carol']] as const) {
      for (let i = 0; i < CALLS; i++) {
        const up = phones[callee].count(/Call established/);
        phones[caller].command(`/dial sip:${callee}@${RELAY_IP}`);
        await waitFor(() => phones[callee].count(/Call established/) > up, 10000, 20);
        await sleep(1000);
        phones[caller].command('/hangup');
        await waitFor(() => relay.callCount === 0 && edge.calls.size === 0, 8000, 20);
        await sleep(300);
      }
    }
    await sleep(500);
  } finally {
    tshark.kill('SIGINT');
    await new Promise((r) => tshark.once('exit', r));
    await edge.close();
    await relay.close();
    for (const d of drachtio) await d.stop();
    pbx.stop();
    topo.destroy();
    Object.values(phones).forEach((p) => p.remove());
  }

  const packets = readCapture(pcap);
  fs.rmSync(dir, { recursive: true, force: true });
  const isRtp = (p: Packet): boolean => p.src === RELAY_IP && p.sport >= PORTS.min && p.sport <= PORTS.max && !p.method && !p.status;
  console.log(`${'caller → callee'.padStart(16)} ${'calls'.padStart(6)} ${'setup p50'.padStart(10)} ${'p90'.padStart(6)} ${'media→caller p50'.padStart(17)} ${'p90'.padStart(6)} ${'media→callee p50'.padStart(17)} ${'p90'.padStart(6)}`);
  for (const [caller, callee, callerIp, calleeIp] of [['carol', 'dave', carolNet.publicIp, daveNet.publicIp], ['dave', 'carol', daveNet.publicIp, carolNet.publicIp]] as const) {
    const invites = packets.filter((p) => p.method === 'INVITE' && p.src === callerIp && p.dport === 5060);
    const callIds = [...new Set(invites.map((p) => p.callId))];
    const setup: number[] = [];
    const toCaller: number[] = [];
    const toCallee: number[] = [];
    for (const id of callIds) {
      const first = invites.find((p) => p.callId === id)!;
      const ok = packets.find((p) => p.callId === id && p.status === '200' && p.cseq === 'INVITE' && p.dst === callerIp);
      if (!ok) continue;
      setup.push(ok.t - first.t);
      const media = (ip: string): number | undefined => packets.find((p) => p.t >= ok.t && isRtp(p) && p.dst === ip)?.t;
      const [a, b] = [media(callerIp), media(calleeIp)];
      if (a !== undefined) toCaller.push(a - ok.t);
      if (b !== undefined) toCallee.push(b - ok.t);
    }
    const f = (x: number): string => (Number.isFinite(x) ? x.toFixed(0) : '-');
    console.log(`${`${caller} → ${callee}`.padStart(16)} ${String(setup.length).padStart(6)} ${f(pct(setup, 50)).padStart(10)} ${f(pct(setup, 90)).padStart(6)} ${f(pct(toCaller, 50)).padStart(17)} ${f(pct(toCaller, 90)).padStart(6)} ${f(pct(toCallee, 50)).padStart(17)} ${f(pct(toCallee, 90)).padStart(6)}`);
  }
  console.log('ms; setup = first INVITE at keylatch → 200 OK to the caller; media = that 200 OK → first RTP the relay sends to each side');
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
