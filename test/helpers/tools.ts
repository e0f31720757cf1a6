import { execFileSync } from 'node:child_process';

/** Is this program on PATH? */
export function hasCommand(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
