/**
 * docker-compose.scaled.yml, as docker-compose merges it over docker-compose.yml: two relay
 * nodes the edge's media.relays names, each with its own ng port and a media port range that
 * overlaps neither the other's nor the edge's own. Then (below) the scaled stack itself, up
 * under podman, with a relay container killed mid-call.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parse } from 'yaml';
import { flagsToOverrides } from '../../src/cli';
import { loadConfig } from '../../src/config/load';
import { parseNgUrl } from '../../src/relay-pool/nodes';
import { hasCommand } from '../helpers/tools';
import { SCALED_FILE, composeSuiteLifecycle, composeUnavailable } from './stack';

const ROOT = path.join(__dirname, '..', '..');
const why = hasCommand('docker-compose') ? null : 'docker-compose not installed';
if (why) console.warn(`!!! SKIPPED the scaled compose file check: ${why}`);

interface Service {
  command?: string[];
  environment?: Record<string, string>;
  network_mode?: string;
  depends_on?: Record<string, unknown>;
}

(why ? describe.skip : describe)('docker-compose.scaled.yml', () => {
  let services: Record<string, Service>;

  beforeAll(() => {
    const out = execFileSync('docker-compose', ['-f', 'docker-compose.yml', '-f', 'docker-compose.scaled.yml', 'config'], {
      cwd: ROOT, encoding: 'utf8', env: { PATH: process.env.PATH, PUBLIC_IP: '203.0.113.10' }, timeout: 60000,
    });
    services = (parse(out) as { services: Record<string, Service> }).services;
  });

  it('adds two relay nodes that the edge puts its calls on, on ports of their own', () => {
    const edgeEnv = services.keylatch!.environment!;
    const edge = loadConfig({ env: edgeEnv });
    const relays = ['relay-1', 'relay-2'].map((name) => {
      const s = services[name]!;
      expect(s.network_mode).toBe('host');
      expect(s.command![0]).toBe('relay');
      const { overrides } = flagsToOverrides(s.command!.slice(1));
      const c = loadConfig({ env: { KEYLATCH_LOG__LEVEL: s.environment?.KEYLATCH_LOG__LEVEL }, overrides });
      return { ng: c.control.ng!, interface: c.media.interface, range: [c.media.portMin, c.media.portMax] as const };
    });
    // The edge's list is exactly the two nodes' ng listeners.
    expect(edge.media.relays.map((r) => { const { host, port } = parseNgUrl(r.url); return `${host}:${port}`; })).toEqual(relays.map((r) => r.ng));
    expect(edge.media.relays.every((r) => r.kind === 'keylatch' && r.weight === 1)).toBe(true);
    expect(relays.map((r) => r.interface)).toEqual(['203.0.113.10', '203.0.113.10']);
    // One address, so three port ranges that must not meet: the two nodes' and the edge's own.
    const ranges = [...relays.map((r) => r.range), [edge.media.portMin, edge.media.portMax] as const].sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0]).toBeGreaterThan(ranges[i - 1]![1]);
    expect(Object.keys(services.keylatch!.depends_on!)).toEqual(expect.arrayContaining(['relay-1', 'relay-2']));
  });
});

const whyStack = composeUnavailable();
if (whyStack) console.warn(`!!! SKIPPED the scaled compose stack under podman: ${whyStack}`);

/** How long the test call talks, s; the relay holding it is killed about KILL_AFTER_S in. */
const TALK_S = 16;
const KILL_AFTER_S = 4;
/** Each side's recording is judged by its last TAIL_S seconds: audio heard well after the kill. */
const TAIL_S = 4;

interface ScaledResult {
  pass: boolean;
  callerHeard: { heard: boolean; seconds?: number; finding: { peakHz: number; purity: number } | null };
  calleeHeard: { heard: boolean; seconds?: number; finding: { peakHz: number; purity: number } | null };
  legs: Array<{ policy: string; latchState: string; latched: string | null; packetsIn: number; packetsOut: number }>;
  legsOn: string[];
}

/**
 * docker-compose.yml + docker-compose.scaled.yml brought up for real under podman (as
 * compose.test.ts does the plain stack, inside a namespace of its own): the documented test
 * call, made to talk for TALK_S seconds, and meanwhile the relay container carrying it is
 * killed (`docker compose kill`, SIGKILL). The call must keep its audio both ways on the other
 * relay: both recordings hold the other's tone in their last seconds and nearly the whole call.
 */
(whyStack ? describe.skip : describe)('the scaled compose stack under podman: a relay container killed mid-call', () => {
  const { stack: running, lap } = composeSuiteLifecycle('scaled compose test', [SCALED_FILE]);

  /** `keylatch <args>` in the keylatch container, as an operator runs it (docker compose exec). */
  const cli = async (args: string[]): Promise<string> => {
    const { code, out } = await running().compose(['exec', '-T', 'keylatch', 'node', 'dist/src/cli.js', ...args], 60_000);
    if (code !== 0) throw new Error(`keylatch ${args.join(' ')} exited ${code}: ${out.slice(-2000)}`);
    return out;
  };
  const relays = async (): Promise<Array<{ id: string; state: string; calls: number }>> => JSON.parse((await cli(['relays', '--json'])).trim().split('\n').at(-1)!) as Array<{ id: string; state: string; calls: number }>;

  it('keeps the call\'s audio both ways when the relay container carrying it is killed', async () => {
    const t = Date.now();
    const call = running().compose(['run', '--rm', '-e', `TALK_SECONDS=${TALK_S}`, '-e', `ANALYSE_TAIL_SECONDS=${TAIL_S}`, 'testcall'], 300_000);
    // The call is up once a node holds it; then it talks a while before the kill.
    let holder: { id: string } | undefined;
    for (const end = Date.now() + 180_000; !holder && Date.now() < end; ) {
      holder = await relays().then((r) => r.find((n) => n.calls > 0)).catch(() => undefined);
      if (!holder) await new Promise((r) => setTimeout(r, 500));
    }
    if (!holder) throw new Error(`no relay node took the test call\n${(await Promise.race([call, Promise.resolve({ out: '(still running)' })])).out.slice(-3000)}\n${await running().logs()}`);
    lap('stack up and the call placed', t);
    await new Promise((r) => setTimeout(r, KILL_AFTER_S * 1000));
    const statusBefore = await cli(['status']);
    const service = holder.id.endsWith(':2223') ? 'relay-1' : 'relay-2';
    const killedAt = Date.now();
    const kill = await running().compose(['kill', service], 60_000);
    expect(kill.code).toBe(0);
    const { code, out } = await call;
    lap(`testcall (talking ${TALK_S} s, ${service} killed ${((killedAt - t) / 1000).toFixed(1)} s after the start)`, t);
    const after = await relays();
    const moved = (await running().compose(['logs', '--no-color', 'keylatch'], 60_000)).out.split('\n').filter((l) => /call moved to another relay node/.test(l));
    const movedAfter = moved.map((l) => `${(JSON.parse(l.slice(l.indexOf('{'))) as { time: number }).time - killedAt} ms`);
    console.log(`${out.split('\n').filter((l) => l.startsWith('testcall:')).join('\n')}\nrelays after the kill: ${JSON.stringify(after)}\n` +
      `keylatch moved the call ${movedAfter.join(', ')} after the kill:\n${moved.join('\n')}\nkeylatch status before the kill:\n${statusBefore}`);
    expect(moved).toHaveLength(1);
    const line = out.split('\n').find((l) => l.startsWith('TESTCALL '));
    if (code !== 0 || !line) throw new Error(`testcall exited ${code}\n${out.slice(-4000)}\n---- stack logs ----\n${await running().logs()}`);
    const result = JSON.parse(line.slice('TESTCALL '.length)) as ScaledResult;
    expect(result.pass).toBe(true);
    // The status read after the kill finds the legs on the surviving node only.
    const survivor = service === 'relay-1' ? 'ng://127.0.0.1:2224' : 'ng://127.0.0.1:2223';
    expect(result.legsOn).toEqual([survivor]);
    expect(after.find((n) => n.id === holder.id)!.state).toBe('down');
    expect(result.legs.map((l) => l.policy).sort()).toEqual(['guarded', 'key']);
    expect(result.legs.find((l) => l.policy === 'key')!.latchState).toMatch(/authenticated/);
    // Each side heard the other's tone late in the call, and nearly the whole call: a recording
    // keeps only what arrived, so audio that stopped at the kill would leave it seconds short.
    expect(result.callerHeard.finding!.peakHz).toBeGreaterThanOrEqual(590);
    expect(result.callerHeard.finding!.peakHz).toBeLessThanOrEqual(610);
    expect(result.calleeHeard.finding!.peakHz).toBeGreaterThanOrEqual(990);
    expect(result.calleeHeard.finding!.peakHz).toBeLessThanOrEqual(1010);
    for (const side of [result.callerHeard, result.calleeHeard]) expect(side.seconds!).toBeGreaterThan(TALK_S - 3);
    expect(statusBefore).toContain('Calls on relay nodes: 2');
  }, 600_000);
});
