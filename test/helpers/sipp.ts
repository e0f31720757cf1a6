import { spawn } from 'node:child_process';
import path from 'node:path';
import { hasCommand } from './tools';

export const SCENARIOS = path.join(__dirname, '..', 'sip', 'scenarios');

export function sippUnavailable(): string | null {
  return hasCommand('sipp') ? null : 'sipp not installed (apt-get install sip-tester)';
}

/** Runs a sipp scenario to completion (or until `signal` aborts it); resolves with its exit code and output. */
export function runSipp(args: string[], opts: { netns?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<{ code: number; out: string }> {
  const full = [...args, '-timeout', `${Math.ceil((opts.timeoutMs ?? 10000) / 1000)}s`, '-timeout_error', '-nostdin'];
  const child = opts.netns ? spawn('ip', ['netns', 'exec', opts.netns, 'sipp', ...full]) : spawn('sipp', full);
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // sipp's own -timeout does not always fire under overload: never let it outlive its caller's patience.
  const killer = setTimeout(() => child.kill('SIGKILL'), (opts.timeoutMs ?? 10000) + 5000);
  // A peer whose counterpart already failed would otherwise hold its port until its timeout.
  opts.signal?.addEventListener('abort', () => child.kill('SIGKILL'), { once: true });
  return new Promise((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(killer);
      resolve({ code: code ?? -1, out });
    }),
  );
}
