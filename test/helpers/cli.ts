/** The real `keylatch` CLI (src/cli.ts) as a child process, as an operator runs it. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { waitFor } from './peers';

const root = path.join(__dirname, '..', '..');

/** Starts `keylatch ARGS` with `env` on top of this process's environment. */
export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  return spawn(process.execPath, ['-r', path.join(root, 'test/helpers/ts-register.js'), path.join(root, 'src/cli.ts'), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Runs `keylatch ARGS` to its end: exit code, stdout and stderr. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  const child = spawnCli(args, env);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const [code] = (await once(child, 'exit')) as [number];
  return { code, out, err };
}

/** One pino line of `keylatch`'s stdout: an edge process's carry its index, its supervisor's do not. */
export interface CliLogLine {
  msg: string;
  edgeProcess?: number;
  pid?: number;
  [k: string]: unknown;
}

/** The supervisor of `keylatch edge --processes N` saying the whole edge is up (each process says its own line). */
export const edgeIsUp = (l: CliLogLine): boolean => l.msg === 'keylatch edge started' && l.edgeProcess === undefined;

/** A `keylatch` left running, read as it logs. */
export interface LoggedCli {
  child: ChildProcess;
  /** Every JSON line of its stdout so far, in order. */
  lines: CliLogLine[];
  /** Its stderr so far: the banner for the terminal, and any error. */
  stderr(): string;
  /** Resolves once a line passes `test`; throws with stderr's tail if it ends first or `timeoutMs` passes. */
  until(test: (l: CliLogLine) => boolean, timeoutMs: number, what: string): Promise<void>;
  /** SIGTERM, and its exit (nothing, if it has ended). */
  stop(): Promise<void>;
}

/** Starts `keylatch ARGS` and parses its log lines as they come; `onLine` sees each the moment it is read. */
export function spawnCliLogged(args: string[], env: NodeJS.ProcessEnv = {}, onLine?: (l: CliLogLine) => void): LoggedCli {
  const child = spawnCli(args, env);
  const lines: CliLogLine[] = [];
  let stderr = '';
  let partial = '';
  child.stdout!.on('data', (d: Buffer) => {
    const all = (partial + d.toString()).split('\n');
    partial = all.pop()!;
    for (const l of all) {
      let line: CliLogLine;
      try {
        line = JSON.parse(l) as CliLogLine;
      } catch {
        continue; // not a log line
      }
      lines.push(line);
      onLine?.(line);
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const ended = (): boolean => child.exitCode !== null || child.signalCode !== null;
  return {
    child,
    lines,
    stderr: () => stderr,
    async until(test, timeoutMs, what) {
      await waitFor(() => lines.some(test) || ended(), timeoutMs, 50).catch(() => undefined);
      if (ended() || !lines.some(test)) throw new Error(`keylatch ${args.join(' ')} did not ${what}:\n${stderr.slice(-3000)}`);
    },
    async stop() {
      if (ended()) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}
