import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** A bench C program (bench/NAME.c) compiled with cc -O2 into .bench-out, rebuilt when its source is newer; libs go last on the link line. */
export function buildC(name: string, libs: string[] = []): string {
  const source = path.join(__dirname, `${name}.c`);
  const binary = path.join(__dirname, '..', '.bench-out', name);
  const fresh = (() => {
    try {
      return statSync(binary).mtimeMs >= statSync(source).mtimeMs;
    } catch {
      return false;
    }
  })();
  if (!fresh) {
    mkdirSync(path.dirname(binary), { recursive: true });
    execFileSync('cc', ['-O2', '-Wall', '-o', binary, source, ...libs], { stdio: 'inherit' });
  }
  return binary;
}
