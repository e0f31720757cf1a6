import { existsSync } from 'node:fs';
import path from 'node:path';

/** Finds a file of the package by walking up, since code runs both from src/ (tests) and dist/src/ (built). */
export function findUp(relative: string, from: string = __dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, relative);
    if (existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`${relative} not found above ${from}`);
  }
}
