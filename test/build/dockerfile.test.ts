/**
 * Builds keylatch from exactly what the Dockerfile's build stage copies into the image, in the
 * order it copies it, then assembles the runtime stage from its COPY lines and runs the image's
 * ENTRYPOINT. No container engine is needed: a file the Dockerfile forgets is missing here too.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { ROOT, checkoutUnavailable, copyFiles, emulateNpmCi, envWithoutKeylatch, run, tempDir, trackedFiles } from './checkout';

interface Instruction {
  op: string;
  args: string;
}

/** The Dockerfile's instructions per stage (line continuations joined, comments dropped). */
function stages(dockerfile: string): Instruction[][] {
  const out: Instruction[][] = [];
  for (const line of dockerfile.replace(/\\\n/g, ' ').split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m || line.trim().startsWith('#')) continue;
    const ins = { op: m[1]!.toUpperCase(), args: m[2]!.trim() };
    if (ins.op === 'FROM') out.push([]);
    out[out.length - 1]?.push(ins);
  }
  return out;
}

/** COPY [--from=x] SRC... DEST, with DEST relative to the WORKDIR. */
function copyArgs(args: string): { from: string | null; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length) ?? null;
  const rest = words.filter((w) => !w.startsWith('--'));
  return { from, sources: rest.slice(0, -1), dest: rest[rest.length - 1]! };
}

/** Docker's COPY: a directory's contents go to DEST; files go into DEST when it ends in / or there are several. */
function copyInto(stageDir: string, source: string, dest: string, several: boolean): void {
  const target = path.join(stageDir, dest);
  const isDir = statSync(source).isDirectory();
  const to = !isDir && (several || dest.endsWith('/')) ? path.join(target, path.basename(source)) : target;
  mkdirSync(path.dirname(to), { recursive: true });
  cpSync(source, to, { recursive: true, verbatimSymlinks: true });
}

const why = checkoutUnavailable();
if (why) console.warn(`!!! SKIPPED Dockerfile build test: ${why}`);

(why ? describe.skip : describe)('the Dockerfile, followed without a container engine', () => {
  let context: ReturnType<typeof tempDir>;
  let build: ReturnType<typeof tempDir>;
  let image: ReturnType<typeof tempDir>;
  const [buildStage, runtimeStage] = stages(readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
  beforeAll(() => {
    context = tempDir('docker-context'); // what `docker build .` sees on a fresh clone
    copyFiles(trackedFiles(), context.dir);
    build = tempDir('docker-build');
    image = tempDir('docker-image');
  });
  afterAll(() => {
    context?.remove();
    build?.remove();
    image?.remove();
  });

  it('has a build stage and a runtime stage', () => {
    expect(buildStage?.[0]?.args).toMatch(/ AS build$/i);
    expect(runtimeStage).toBeDefined();
  });

  it('builds from the files its build stage copies alone', async () => {
    const ran: string[] = [];
    for (const ins of buildStage!) {
      if (ins.op === 'COPY') {
        const { sources, dest } = copyArgs(ins.args);
        for (const s of sources) {
          expect({ copied: s, inContext: existsSync(path.join(context.dir, s)) }).toEqual({ copied: s, inContext: true });
          copyInto(build.dir, path.join(context.dir, s), dest, sources.length > 1);
        }
      } else if (ins.op === 'RUN') {
        // apt-get and npm prune change the system or the shared node_modules: not run here.
        for (const step of ins.args.split('&&').map((s) => s.trim())) {
          if (step === 'npm ci') {
            const r = await emulateNpmCi(build.dir);
            expect({ step, code: r.code, stderr: r.stderr.slice(-2000) }).toEqual({ step: expect.any(String), code: 0, stderr: expect.any(String) });
            ran.push(step);
          } else if (/^npm run [\w:-]+$/.test(step)) {
            const r = await run('sh', ['-c', step], { cwd: build.dir, env: envWithoutKeylatch() });
            expect({ step, code: r.code, output: (r.stdout + r.stderr).slice(-3000) }).toEqual({ step, code: 0, output: expect.any(String) });
            ran.push(step);
          }
        }
      }
    }
    expect(ran).toEqual(['npm ci', 'npm run build']);
  }, 120_000);

  it('assembles a runtime stage whose ENTRYPOINT runs', async () => {
    for (const ins of runtimeStage!.filter((i) => i.op === 'COPY')) {
      const { from, sources, dest } = copyArgs(ins.args);
      for (const s of sources) {
        const source = from === 'build' ? path.join(build.dir, path.relative('/app', s)) : path.join(context.dir, s);
        expect({ copied: s, from, exists: existsSync(source) }).toEqual({ copied: s, from, exists: true });
        if (path.basename(s) === 'node_modules') symlinkSync(path.join(ROOT, 'node_modules'), path.join(image.dir, dest), 'dir');
        else copyInto(image.dir, source, dest, sources.length > 1);
      }
    }
    const entry = runtimeStage!.find((i) => i.op === 'ENTRYPOINT');
    const argv = JSON.parse(entry!.args) as string[];
    expect(argv[0]).toBe('node');
    const r = await run(process.execPath, [...argv.slice(1), '--help'], { cwd: image.dir, env: envWithoutKeylatch() });
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: expect.any(String) });
    expect(r.stdout).toMatch(/^usage: keylatch /m);
    // The image's default command: it must load config and the native addon, then name what it lacks.
    const cmd = JSON.parse(runtimeStage!.find((i) => i.op === 'CMD')!.args) as string[];
    const edge = await run(process.execPath, [...argv.slice(1), ...cmd], { cwd: image.dir, env: envWithoutKeylatch(), timeoutMs: 30_000 });
    expect(edge.code).toBe(2);
    expect(edge.stderr).toMatch(/^keylatch: invalid configuration: sip\.pbx: required for keylatch edge \(set KEYLATCH_SIP__PBX=/m);
  }, 60_000);
});
