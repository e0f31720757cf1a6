/**
 * `keylatch edge` with sip.processes 2 on a real drachtio-server and a shared Redis: the
 * supervisor forks two edge processes, both connect, drachtio-server hands REGISTERs and
 * INVITEs to them in turn. Phones register the moment the supervisor says the edge is up, and
 * every one is answered 200 (drachtio-server answers 503 itself while no process has routed
 * REGISTER, which is what they got when the supervisor said so at fork time). A phone registers (the new registration on one process, its refresh
 * answered from the shared binding on the other), then the PBX calls it twice: each process
 * carries one call, so one of them is a call through a process that never saw the REGISTER.
 */
import path from 'node:path';
import Redis from 'ioredis';
import { edgeIsUp, spawnCliLogged, type CliLogLine, type LoggedCli } from '../helpers/cli';
import { startDrachtio, type RunningDrachtio } from '../helpers/drachtio';
import { waitFor } from '../helpers/peers';
import { redisUnavailable, startRedis } from '../helpers/redis';
import { skipSipSuite } from '../helpers/sip-edge';
import { SCENARIOS, runSipp } from '../helpers/sipp';

const noRedis = redisUnavailable();
if (noRedis) console.warn(`!!! SKIPPED edge processes: ${noRedis}`);
const skip = skipSipSuite('edge processes') || noRedis !== null;

(skip ? describe.skip : describe)('several edge processes on one drachtio-server', () => {
  const sipPort = 27060 + (process.pid % 500);
  const pbxPort = 27660 + (process.pid % 300);
  const phonePort = 28060 + (process.pid % 500);
  let drachtio: RunningDrachtio;
  let redis: { url: string; stop: () => Promise<void> };
  let edge: LoggedCli;
  let lines: CliLogLine[] = [];
  const logged = (msg: string): CliLogLine[] => lines.filter((l) => l.msg === msg);
  const AT_START = 20;
  let atStart: Promise<{ code: number; out: string }>;
  let pbxAtStart: Promise<{ code: number; out: string }>;
  const stopPbxAtStart = new AbortController();
  let atStartMs = 0;

  beforeAll(async () => {
    drachtio = await startDrachtio({ contacts: [`sip:127.0.0.1:${sipPort};transport=udp`], adminPort: 27022 + (process.pid % 500), loglevel: 'notice' });
    redis = await startRedis();
    const env = {
      KEYLATCH_LOG__LEVEL: 'debug',
      KEYLATCH_SIP__DRACHTIO__HOST: drachtio.admin.host, KEYLATCH_SIP__DRACHTIO__PORT: String(drachtio.admin.port), KEYLATCH_SIP__DRACHTIO__SECRET: drachtio.admin.secret,
      KEYLATCH_SIP__PBX: `sip:127.0.0.2:${pbxPort}`, KEYLATCH_SIP__ADVERTISED_ADDRESS: `127.0.0.1:${sipPort}`, KEYLATCH_SIP__BINDING_STORE: redis.url,
      KEYLATCH_MEDIA__INTERFACE: '127.0.0.1', KEYLATCH_MEDIA__ALLOW_LOOPBACK_PEERS: 'true', KEYLATCH_MEDIA__PORT_MIN: '47000', KEYLATCH_MEDIA__PORT_MAX: '47399',
    };
    // The PBX for the phones that register at start-up, listening before the edge starts.
    pbxAtStart = runSipp(['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', String(AT_START)], { timeoutMs: 45_000, signal: stopPbxAtStart.signal });
    let up: () => void = () => undefined;
    const upSeen = new Promise<void>((resolve) => (up = resolve));
    // Sent the moment the line is read, not at the next poll.
    atStart = upSeen.then(async () => {
      const t0 = Date.now();
      const r = await runSipp(['-sf', path.join(SCENARIOS, 'phone-register-at-start.xml'), '-nr', '-recv_timeout', '5000', '-i', '127.0.0.1', '-p', String(phonePort),
        '-m', String(AT_START), '-r', '200', `127.0.0.1:${sipPort}`], { timeoutMs: 15_000 });
      atStartMs = Date.now() - t0;
      return r;
    });
    edge = spawnCliLogged(['edge', '--processes', '2'], env, (line) => {
      if (edgeIsUp(line)) up();
    });
    lines = edge.lines;
    await edge.until(edgeIsUp, 30_000, 'say it was up');
  }, 50_000);

  afterAll(async () => {
    await edge?.stop();
    await redis?.stop();
    await drachtio?.stop();
  });

  it('answers every REGISTER sent the moment it says it is up, on both processes', async () => {
    const phones = await atStart;
    console.log(`${AT_START} REGISTERs sent when keylatch edge --processes 2 said it was up: sipp ${phones.code === 0 ? 'passed' : 'FAILED'} in ${atStartMs} ms`);
    // Refused phones never reach the PBX: it must not hold its port for the next test.
    if (phones.code !== 0) stopPbxAtStart.abort();
    const upstream = await pbxAtStart;
    expect({ phones: phones.code, out: phones.code === 0 ? '' : phones.out.slice(-2500) }).toEqual({ phones: 0, out: '' });
    expect({ pbx: upstream.code, out: upstream.code === 0 ? '' : upstream.out.slice(-1500) }).toEqual({ pbx: 0, out: '' });
    // It said so only after both processes were connected with their routes in place...
    const upAt = lines.findIndex(edgeIsUp);
    const connectedBefore = lines.slice(0, upAt).filter((l) => l.msg === 'connected to drachtio-server').map((l) => l.edgeProcess);
    expect(new Set(connectedBefore)).toEqual(new Set([0, 1]));
    // ...and both served from the first REGISTER on.
    const servedBy = new Set(logged('registered').filter((l) => String(l.aor).startsWith('sip:start')).map((l) => l.edgeProcess));
    expect(servedBy).toEqual(new Set([0, 1]));
    expect(lines.filter((l) => l.msg === 'edge process ready').map((l) => l.edgeProcess).sort()).toEqual([0, 1]);
    // One banner for the person at the terminal, the supervisor's, naming both processes.
    expect(edge.stderr().split('keylatch edge is up')).toHaveLength(2);
    expect(edge.stderr()).toMatch(/edge processes\s+2 \(pids \d+, \d+\)/);
  }, 30_000);

  it('shares a registration between the processes and carries a call through each', async () => {
    const pbx = runSipp(['-sf', path.join(SCENARIOS, 'pbx-register-ok.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '1'], { timeoutMs: 15_000 });
    await new Promise((r) => setTimeout(r, 300));
    const phone = await runSipp(['-sf', path.join(SCENARIOS, 'phone-register-twice.xml'), '-i', '127.0.0.1', '-p', String(phonePort), '-m', '1', `127.0.0.1:${sipPort}`], { timeoutMs: 10_000 });
    const upstream = await pbx;
    expect({ phone: phone.code, out: phone.code === 0 ? '' : phone.out.slice(-2000) }).toEqual({ phone: 0, out: '' });
    expect({ pbx: upstream.code, out: upstream.code === 0 ? '' : upstream.out.slice(-2000) }).toEqual({ pbx: 0, out: '' });
    // Only the new registration reached the PBX (its sipp took one REGISTER and was gone): the
    // refresh, on the other process, was answered from the binding in Redis.
    const registered = logged('registered').filter((l) => l.aor === 'sip:bob@keylatch.test');
    expect(registered).toHaveLength(1);
    const registeredOn = registered[0]!.edgeProcess;

    const r = new Redis(redis.url);
    const [bindingId] = await r.smembers('keylatch:aor:sip:bob@keylatch.test');
    r.disconnect();
    expect(bindingId).toBeDefined();

    const answering = runSipp(['-sf', path.join(SCENARIOS, 'phone-answer.xml'), '-i', '127.0.0.1', '-p', String(phonePort), '-m', '2', '-key', 'mport', '7010'], { timeoutMs: 25_000 });
    await new Promise((res) => setTimeout(res, 300));
    const calling = await runSipp(['-sf', path.join(SCENARIOS, 'pbx-call.xml'), '-i', '127.0.0.2', '-p', String(pbxPort), '-m', '2', '-l', '1', '-s', bindingId!,
      '-key', 'mport', '7012', '-d', '500', `127.0.0.1:${sipPort}`], { timeoutMs: 20_000 });
    const answered = await answering;
    expect({ pbx: calling.code, out: calling.code === 0 ? '' : calling.out.slice(-2000) }).toEqual({ pbx: 0, out: '' });
    expect({ phone: answered.code, out: answered.code === 0 ? '' : answered.out.slice(-2000) }).toEqual({ phone: 0, out: '' });
    const connected = logged('call connected').map((l) => l.edgeProcess);
    expect(connected.sort()).toEqual([0, 1]);
    expect(connected.some((p) => p !== registeredOn)).toBe(true);
  }, 60_000);

  it('restarts an edge process that dies, and the new one serves', async () => {
    const victim = logged('connected to drachtio-server').find((l) => l.edgeProcess === 1)!;
    const before = logged('connected to drachtio-server').length;
    process.kill(victim.pid!, 'SIGKILL');
    await waitFor(() => logged('connected to drachtio-server').length > before, 15_000);
    const again = logged('connected to drachtio-server').at(-1)!;
    expect(again.edgeProcess).toBe(1);
    expect(again.pid).not.toBe(victim.pid);
    // The supervisor hears from the new process too (the pid it forked, not the one it lost).
    await waitFor(() => logged('edge process ready').some((l) => l.edgeProcess === 1 && l.pid === again.pid), 5000);
  }, 30_000);
});
