/**
 * The README's first command, run as a new user would on a fresh clone: every step before the
 * edge itself must exit 0, and the edge it then starts must load and name each setting it is
 * missing. (keylatch edge against a real drachtio-server is test/control/cli.test.ts.)
 */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { ROOT, checkoutUnavailable, copyFiles, emulateNpmCi, envWithoutKeylatch, run, tempDir, trackedFiles } from './checkout';

/** The first line of the README's first sh block, split into its `&&` steps (comments dropped). */
function readmeFirstCommand(readme: string): string[] {
  const block = /```sh\n([\s\S]*?)```/.exec(readme);
  if (!block) throw new Error('README has no ```sh block');
  const first = block[1]!.split('\n')[0]!.replace(/\s+#.*$/, '').trim();
  return first.split('&&').map((s) => s.trim());
}

const why = checkoutUnavailable();
if (why) console.warn(`!!! SKIPPED README first command test: ${why}`);

(why ? describe.skip : describe)("the README's first command on a fresh clone", () => {
  const steps = readmeFirstCommand(readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  let copy: ReturnType<typeof tempDir>;
  beforeAll(() => {
    copy = tempDir('fresh-clone');
    copyFiles(trackedFiles(), copy.dir);
  });
  afterAll(() => copy?.remove());

  it('is install, build, then keylatch edge', () => {
    expect(steps[0]).toBe('npm ci');
    expect(steps[steps.length - 1]).toMatch(/^npx keylatch edge\b/);
  });

  it('builds: every step before the edge exits 0 and leaves the bin the package names', async () => {
    const install = await emulateNpmCi(copy.dir);
    expect({ step: 'npm ci (node-gyp part)', code: install.code, stderr: install.stderr.slice(-2000) }).toEqual({ step: expect.any(String), code: 0, stderr: expect.any(String) });
    for (const step of steps.slice(1, -1)) {
      const r = await run('sh', ['-c', step], { cwd: copy.dir, env: envWithoutKeylatch() });
      expect({ step, code: r.code, output: (r.stdout + r.stderr).slice(-3000) }).toEqual({ step, code: 0, output: expect.any(String) });
    }
    const pkg = JSON.parse(readFileSync(path.join(copy.dir, 'package.json'), 'utf8')) as { bin: Record<string, string>; main: string };
    // npm ci links node_modules/.bin/keylatch to the bin before the build writes it, so the
    // build must leave it executable: otherwise `npx keylatch` is "Permission denied".
    expect((statSync(path.join(copy.dir, pkg.bin.keylatch!)).mode & 0o111) !== 0).toBe(true);
    const help = await run(process.execPath, [path.join(copy.dir, pkg.bin.keylatch!), '--help'], { cwd: copy.dir, env: envWithoutKeylatch() });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: keylatch /m);
    expect(help.stdout).toMatch(/keylatch edge/);
    const main = await run(process.execPath, ['-e', `const k = require(${JSON.stringify(path.join(copy.dir, pkg.main))}); if (typeof k.loadConfig !== 'function') process.exit(3)`], { cwd: copy.dir });
    expect(main.code).toBe(0);
  }, 120_000);

  it('then starts keylatch edge, which names every setting it still needs, one line each', async () => {
    const edge = steps[steps.length - 1]!;
    // npx must find keylatch in the checkout itself: never fetch a package of that name instead.
    const r = await run('sh', ['-c', edge], { cwd: copy.dir, env: envWithoutKeylatch({ npm_config_offline: 'true', npm_config_yes: 'false' }), timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n');
    for (const [key, env] of [['sip.drachtio.secret', 'KEYLATCH_SIP__DRACHTIO__SECRET'], ['sip.pbx', 'KEYLATCH_SIP__PBX'], ['sip.advertisedAddress', 'KEYLATCH_SIP__ADVERTISED_ADDRESS']]) {
      expect(lines.filter((l) => l.includes(`${key}: required for keylatch edge`) && l.includes(`${env}=`))).toHaveLength(1);
    }
  }, 60_000);
});
