/**
 * npm run bench:direct — direct media through real NATs (network namespaces, root): for every
 * pair of NAT kinds, BENCH_CALLS calls (default 20) between two plugin clients (the SIP.js
 * plugin's media path, driven without SIP by bench/direct-client.ts) through keylatch's relay
 * as rendezvous. Prints, per pair: how many calls went direct, punching attempts, the time from
 * the answer to the first direct RTP packet at the later of the two sides, the time from the
 * rendezvous to both directions proved, the largest gap heard (the switch included), and what
 * the relay forwarded after the switch.
 *
 *   BENCH_CALLS=20
 */
import { loadConfig } from '../src/config/load';
import { Relay } from '../src/media/relay';
import type { MediaStats } from '../plugins/sipjs/src';
import { DEFAULT_PEER_PATH_TIMING } from '../src/direct/peer-path';
import { LiveEvents, RELAY_IP, Topology, netnsUnavailable, type NatKind } from '../test/helpers/netns';
import path from 'node:path';

const CALLS = Number(process.env.BENCH_CALLS ?? 20);
const CLIENT = path.join(__dirname, 'direct-client.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Client {
  name: string;
  kind: NatKind;
  publicIp: string;
  io: LiveEvents;
}

async function ask(c: Client, cmd: object, reply: string): Promise<Record<string, unknown>> {
  const n = c.io.of(reply).length;
  c.io.command(cmd);
  return c.io.next(reply, 5000, n);
}

const pct = (xs: number[], p: number): string => {
  if (xs.length === 0) return '-';
  const s = [...xs].sort((a, b) => a - b);
  return String(Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!));
};

async function main(): Promise<void> {
  const why = netnsUnavailable();
  if (why) {
    console.error(`bench:direct needs network namespaces: ${why}`);
    process.exit(1);
  }
  const topo = new Topology(`klb${process.pid % 1000}`);
  topo.destroy();
  const relay = new Relay({ ...loadConfig({ env: {} }).media, interface: RELAY_IP, portMin: 37200, portMax: 37299 });
  try {
    topo.createPublicNet();
    const plan: Array<[string, NatKind, number]> = [
      ['pr1', 'port-preserving', 2], ['pr2', 'port-preserving', 3], ['ar1', 'address-restricted', 4],
      ['ar2', 'address-restricted', 5], ['sym1', 'symmetric', 6], ['sym2', 'symmetric', 7],
    ];
    const clients = new Map<string, Client>();
    for (const [name, kind, n] of plan) {
      const net = topo.addNattedClient(name, n, kind);
      const io = new LiveEvents(topo.spawnTs(net.clientNs, CLIENT, { ip: net.privateIp, toneHz: 400 + n * 100 }));
      clients.set(name, { name, kind, publicIp: net.publicIp, io });
    }
    await Promise.all([...clients.values()].map((c) => c.io.next('ready', 20000, 0)));
    const pairs: Array<[string, string]> = [['pr1', 'pr2'], ['pr1', 'ar1'], ['ar1', 'ar2'], ['ar1', 'sym1'], ['pr1', 'sym1'], ['sym1', 'sym2']];
    const rows: string[][] = [];
    let callNo = 0;
    for (const [xn, yn] of pairs) {
      const direct: number[] = [];
      const proved: number[] = [];
      const gaps: number[] = [];
      const switchGaps: number[] = [];
      let relayAfter = 0;
      let attempts = 0;
      let probes = 0;
      let wentDirect = 0;
      let birthdayTried = 0;
      let birthdayWon = 0;
      for (let i = 0; i < CALLS; i++) {
        // Alternate who calls, so both directions are in every row.
        const [x, y] = i % 2 === 0 ? [clients.get(xn)!, clients.get(yn)!] : [clients.get(yn)!, clients.get(xn)!];
        const callId = `bench-${callNo++}`;
        const legs = (ip: string) => ({ policy: 'key' as const, secure: true, signallingAddress: ip });
        const offer = (await ask(x, { cmd: 'offer' }, 'sdp')).sdp as string;
        const toY = await relay.offer({ callId, fromTag: 'x', sdp: offer, offerer: legs(x.publicIp), answerer: legs(y.publicIp) });
        const answer = (await ask(y, { cmd: 'answer', sdp: toY.sdp }, 'sdp')).sdp as string;
        const toX = await relay.answer({ callId, fromTag: 'x', toTag: 'y', sdp: answer });
        await ask(x, { cmd: 'apply', sdp: toX.sdp }, 'applied');
        const stats = async (): Promise<[MediaStats, MediaStats]> =>
          [(await ask(x, { cmd: 'stats' }, 'stats')) as unknown as MediaStats, (await ask(y, { cmd: 'stats' }, 'stats')) as unknown as MediaStats];
        const until = Date.now() + 6000; // a birthday attempt starts at 0.5 s and runs ~3.5 s
        let s = await stats();
        while (!(s[0].path.path === 'direct' && s[1].path.path === 'direct') && Date.now() < until) {
          await sleep(50);
          s = await stats();
        }
        const isDirect = s[0].path.path === 'direct' && s[1].path.path === 'direct';
        if (isDirect) {
          await sleep(150); // what was already on its way through the relay
          const before = relay.totals().packetsOut;
          await sleep(1000);
          relayAfter += relay.totals().packetsOut - before;
          s = await stats();
          wentDirect++;
          direct.push(Math.max(s[0].path.firstDirectRtpMs ?? Infinity, s[1].path.firstDirectRtpMs ?? Infinity));
          switchGaps.push(Math.max(s[0].path.gapAtSwitchMs ?? 0, s[1].path.gapAtSwitchMs ?? 0));
          proved.push(Math.max(s[0].path.firstDirectMs ?? Infinity, s[1].path.firstDirectMs ?? Infinity));
        } else {
          s = await stats();
        }
        gaps.push(Math.max(s[0].received.maxGapMs, s[1].received.maxGapMs));
        attempts += s[0].path.attempts + s[1].path.attempts;
        if (s[0].path.birthday.tried || s[1].path.birthday.tried) birthdayTried++;
        if (isDirect && (s[0].path.birthday.succeeded || s[1].path.birthday.succeeded)) birthdayWon++;
        probes += s[0].path.probesSent + s[1].path.probesSent;
        await Promise.all([ask(x, { cmd: 'close' }, 'closed'), ask(y, { cmd: 'close' }, 'closed')]);
        relay.delete({ callId });
      }
      const [x, y] = [clients.get(xn)!, clients.get(yn)!];
      rows.push([`${x.kind} ${xn} / ${y.kind} ${yn}`, String(CALLS), `${wentDirect}/${CALLS}`, (attempts / CALLS / 2).toFixed(1),
        pct(direct, 50), pct(direct, 90), pct(proved, 50), pct(proved, 90), pct(switchGaps, 50), pct(switchGaps, 100), pct(gaps, 100), String(relayAfter), String(Math.round(probes / CALLS / 2)), `${birthdayWon}/${birthdayTried}`]);
    }
    const head = ['pair', 'calls', 'direct', 'attempts', 'answer→direct RTP p50', 'p90', 'rendezvous→proved p50', 'p90', 'gap at switch p50', 'max', 'max gap in call', 'relay pkts after switch', 'probes/side', 'birthday won/tried'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    console.log(line(head));
    for (const r of rows) console.log(line(r));
    console.log('\nprobes/side counts every hello a side sent toward its peer (punching, birthday and consent); a birthday attempt is at most');
    console.log(`${DEFAULT_PEER_PATH_TIMING.birthdaySockets} extra sockets and ${DEFAULT_PEER_PATH_TIMING.birthdayProbes} random-port probes per side, once per pair.`);
    for (const c of clients.values()) c.io.command({ cmd: 'close' });
  } finally {
    await relay.close();
    topo.destroy();
  }
}

main().catch((err: Error) => {
  console.error(err);
  process.exit(1);
});
