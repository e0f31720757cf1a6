/**
 * A fresh checkout in a temp directory, for the tests that build keylatch the way a new user or
 * the Dockerfile does. Only what git tracks is copied, so a file that is on this disk but was
 * never committed (or is ignored, like dist/ and build/) cannot make the build pass here.
 */
import { execFileSync, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export const ROOT = path.join(__dirname, '..', '..');

/** Why a fresh checkout cannot be made here, or null. */
export function checkoutUnavailable(): string | null {
  try {
    execFileSync('git', ['-C', ROOT, 'rev-parse', '--is-inside-work-tree'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'not a git checkout (or git missing): cannot tell which files a fresh clone has';
  }
}

/** The files a fresh clone has: tracked, with their content as it is now, minus deletions not yet committed. */
export function trackedFiles(): string[] {
  const out = execFileSync('git', ['-C', ROOT, 'ls-files', '-z'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return out.split('\0').filter((f) => f && existsSync(path.join(ROOT, f)) && !statSync(path.join(ROOT, f)).isDirectory());
}

export function tempDir(label: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), `keylatch-${label}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Copies `files` (paths relative to ROOT) into `dir`, keeping their paths. */
export function copyFiles(files: string[], dir: string): void {
  for (const f of files) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    cpSync(path.join(ROOT, f), path.join(dir, f));
  }
}

/**
 * What `npm ci` leaves behind for this package, without the network and the minute it takes:
 * the dependencies this checkout already installed (linked, never modified: no npm command that
 * writes node_modules may run in a copy), and the package's own install step, the node-gyp
 * build of the native fast path, run for real from the copy's sources.
 */
export async function emulateNpmCi(dir: string): Promise<Result> {
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  // npm's install step for a package with binding.gyp is `node-gyp rebuild`, with npm's own
  // node-gyp on PATH; the build:native script is that same command run the same way.
  return run('npm', ['run', '--silent', 'build:native'], { cwd: dir });
}

export interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; a command still running after timeoutMs is killed (code null). */
export function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Result> {
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout also ends what it started (npm, sh -c and their children).
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, opts.timeoutMs ?? 90_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The environment with every KEYLATCH_* setting removed, so only the checkout's own config counts. */
export function envWithoutKeylatch(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KEYLATCH_')));
  return { ...env, ...extra };
}
