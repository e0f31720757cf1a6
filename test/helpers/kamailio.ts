/** Kamailio from Debian as the PBX stand-in: a real registrar and proxy in a namespace. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Topology } from './netns';
import { hasCommand } from './tools';

export const kamailioUnavailable = (): string | null => (hasCommand('kamailio') ? null : 'kamailio not installed (apt-get install kamailio)');

const PBX_CONFIGS = path.join(__dirname, '..', 'nat', 'pbx');

/**
 * config: a file in test/nat/pbx (default kamailio.cfg, the topology-hiding, B2BUA-like PBX);
 * each of `defines` goes to -A (e.g. 'ROLE_PBX', 'X="str"').
 */
export function startKamailio(topo: Topology, ns: string, listen: string, opts: { path?: boolean; config?: string; defines?: string[] } = {}): { child: ChildProcess; log: () => string; stop: () => void } {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kl-kamailio-'));
  const args = ['-f', path.join(PBX_CONFIGS, opts.config ?? 'kamailio.cfg'), '-DD', '-E', '-m', '32', '-M', '8', '-Y', runDir, '-P', path.join(runDir, 'pid'), '-l', `udp:${listen}`, '-l', `tcp:${listen}`];
  if (opts.path) args.push('-A', 'WITH_PATH');
  for (const d of opts.defines ?? []) args.push('-A', d);
  const child = topo.spawnIn(ns, 'kamailio', args);
  let log = '';
  // stdout carries the "Listening on" banner; stderr the log.
  for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-20000)));
  const stop = (): void => {
    Topology.killGroup(child);
    fs.rmSync(runDir, { recursive: true, force: true });
  };
  return { child, log: () => log, stop };
}

/** Why a Kamailio module is missing (Debian ships rtpengine.so and nathelper.so in the kamailio package), or null. */
export function kamailioModuleUnavailable(name: string): string | null {
  const dirs = ['/usr/lib/x86_64-linux-gnu/kamailio/modules', '/usr/lib/aarch64-linux-gnu/kamailio/modules', '/usr/lib/kamailio/modules', '/usr/local/lib64/kamailio/modules'];
  return dirs.some((d) => fs.existsSync(path.join(d, `${name}.so`))) ? null : `Kamailio module ${name}.so not found (apt-get install kamailio)`;
}
