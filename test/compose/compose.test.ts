/**
 * docker-compose.yml as users run it, here under podman: the default stack (two
 * drachtio-servers, keylatch built from the Dockerfile, Redis) and the demo profile (Kamailio,
 * two NAT routers, the SIP.js phone with the plugin, baresip), then the documented test call,
 * `docker compose --profile demo run --rm testcall`, which must exit 0 having heard a tone each
 * way. See stack.ts for how it stays inside a namespace of its own.
 */
import { composeSuiteLifecycle, composeUnavailable } from './stack';

const why = composeUnavailable();
if (why) console.warn(`!!! SKIPPED docker-compose test call: ${why}`);

interface TestcallResult {
  pass: boolean;
  firstMediaMs: number;
  callerHeard: { heard: boolean; finding: { peakHz: number; purity: number } | null };
  calleeHeard: { heard: boolean; finding: { peakHz: number; purity: number } | null };
  callerMapping: { address: string; port: number } | null;
  legs: Array<{ policy: string; latchState: string; latched: string | null; packetsIn: number; packetsOut: number }>;
  legsFrom: string;
  legsFromStatus: boolean;
}

(why ? describe.skip : describe)('docker-compose test call under podman', () => {
  const { stack: running, lap } = composeSuiteLifecycle('compose test');

  it('places a call through keylatch and hears a tone each way (exit 0)', async () => {
    const t = Date.now();
    const { code, out } = await running().compose(['run', '--rm', 'testcall'], 240_000);
    lap('docker-compose --profile demo run --rm testcall', t);
    const report = out.split('\n').filter((l) => l.startsWith('testcall:')).join('\n');
    console.log(report);
    const line = out.split('\n').find((l) => l.startsWith('TESTCALL '));
    if (code !== 0 || !line) throw new Error(`testcall exited ${code}\n${out.slice(-4000)}\n---- stack logs ----\n${await running().logs()}`);
    const result = JSON.parse(line.slice('TESTCALL '.length)) as TestcallResult;
    expect(result.pass).toBe(true);
    expect(result.callerHeard.finding!.peakHz).toBeGreaterThanOrEqual(590);
    expect(result.callerHeard.finding!.peakHz).toBeLessThanOrEqual(610);
    expect(result.calleeHeard.finding!.peakHz).toBeGreaterThanOrEqual(990);
    expect(result.calleeHeard.finding!.peakHz).toBeLessThanOrEqual(1010);
    expect(result.firstMediaMs).toBeGreaterThanOrEqual(0);
    expect(result.legs.map((l) => l.policy).sort()).toEqual(['guarded', 'key']);
    for (const leg of result.legs) expect(leg.packetsIn).toBeGreaterThan(50);
    // alice's media reached the relay from nat-a's public side: it really crossed the NAT.
    expect(result.callerMapping?.address).toBe('198.18.10.11');
    // Where keylatch has /status, each leg is latched on its NAT router's public side.
    if (result.legsFromStatus) {
      expect(result.legs.find((l) => l.policy === 'key')!.latched).toMatch(/^198\.18\.10\.11:\d+$/);
      expect(result.legs.find((l) => l.policy === 'guarded')!.latched).toMatch(/^198\.18\.10\.12:\d+$/);
    }
  }, 300_000);
});
