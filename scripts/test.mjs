#!/usr/bin/env node
// The one test command (README, CI): typecheck, lint, then jest. Its last line is
// "N passed, N failed[, N skipped]", where a failed typecheck or lint counts as one failure.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const bin = (name) => path.join('node_modules', '.bin', name);
const run = (label, cmd, args) => {
  console.log(`\n== ${label}: ${cmd} ${args.join(' ')}`);
  return spawnSync(cmd, args, { stdio: 'inherit' }).status === 0;
};

let failed = 0;
if (!run('typecheck', bin('tsc'), ['--noEmit', '-p', 'tsconfig.json'])) failed++;
if (!run('lint', bin('eslint'), ['.'])) failed++;

const report = path.join(mkdtempSync(path.join(tmpdir(), 'keylatch-jest-')), 'report.json');
run('jest', bin('jest'), ['--runInBand', '--forceExit', '--json', `--outputFile=${report}`, ...process.argv.slice(2)]);
let passed = 0;
let skipped = 0;
try {
  const r = JSON.parse(readFileSync(report, 'utf8'));
  passed = r.numPassedTests;
  failed += r.numFailedTests + r.numRuntimeErrorTestSuites;
  skipped = r.numPendingTests + r.numTodoTests;
  if (r.numTotalTests === 0) failed++;
} catch {
  failed++;
} finally {
  rmSync(path.dirname(report), { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed === 0 ? 0 : 1);
