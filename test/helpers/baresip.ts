/**
 * baresip, a real softphone from Debian, as a test client in a namespace: it registers through
 * keylatch, auto-answers, plays a tone from a WAV file, and records what it hears (sndfile).
 * Commands go to its UDP console (cons module).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tone } from '../../src/codec/g711';
import type { Topology } from './netns';
import { hasCommand } from './tools';

export const baresipUnavailable = (): string | null => (hasCommand('baresip') ? null : 'baresip not installed (apt-get install baresip-core)');

const CONSOLE_PORT = 5555;

/** A mono 16-bit 8 kHz WAV of a 440 Hz tone. */
function writeToneWav(file: string, seconds: number): void {
  const pcm = Buffer.from(tone(440, 8000 * seconds).buffer);
  const head = Buffer.alloc(44);
  head.write('RIFF', 0);
  head.writeUInt32LE(36 + pcm.length, 4);
  head.write('WAVEfmt ', 8);
  head.writeUInt32LE(16, 16);
  head.writeUInt16LE(1, 20);
  head.writeUInt16LE(1, 22);
  head.writeUInt32LE(8000, 24);
  head.writeUInt32LE(16000, 28);
  head.writeUInt16LE(2, 32);
  head.writeUInt16LE(16, 34);
  head.write('data', 36);
  head.writeUInt32LE(pcm.length, 40);
  fs.writeFileSync(file, Buffer.concat([head, pcm]));
}

/** RMS of the 16-bit samples of a WAV file's data, skipping the first `skipSec` seconds. */
export function wavRms(file: string, skipSec = 0): number {
  const buf = fs.readFileSync(file);
  const data = buf.indexOf('data');
  if (data < 0) return 0;
  const rate = buf.readUInt32LE(24);
  const start = data + 8 + Math.floor(skipSec * rate) * 2;
  let sum = 0;
  let n = 0;
  for (let i = start; i + 1 < buf.length; i += 2, n++) sum += buf.readInt16LE(i) ** 2;
  return n ? Math.sqrt(sum / n) : 0;
}

export class Baresip {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kl-baresip-'));
  private log = '';

  constructor(private readonly topo: Topology, private readonly ns: string, opts: { localIp: string; user: string; edge: string }) {
    writeToneWav(path.join(this.dir, 'tone.wav'), 120);
    fs.writeFileSync(path.join(this.dir, 'config'), [
      'poll_method epoll',
      `sip_listen ${opts.localIp}:5060`,
      `audio_source aufile,${path.join(this.dir, 'tone.wav')}`,
      'audio_player aubridge,play',
      'audio_alert aubridge,alert',
      'ausrc_srate 8000',
      'auplay_srate 8000',
      'module_path /usr/lib/baresip/modules',
      ...['g711', 'aufile', 'aubridge', 'sndfile', 'cons'].map((m) => `module ${m}.so`),
      'module_app account.so',
      'module_app menu.so',
      `cons_listen 127.0.0.1:${CONSOLE_PORT}`,
      `snd_path ${this.dir}`,
      '',
    ].join('\n'));
    fs.writeFileSync(path.join(this.dir, 'accounts'),
      `<sip:${opts.user}@keylatch.test>;outbound="sip:${opts.edge}";regint=60;answermode=auto;audio_codecs=PCMU\n`);
    const child = topo.spawnIn(ns, 'baresip', ['-f', this.dir, '-v']);
    child.stdout!.on('data', (d: Buffer) => (this.log = (this.log + d.toString()).slice(-20000)));
    child.stderr!.on('data', (d: Buffer) => (this.log = (this.log + d.toString()).slice(-20000)));
  }

  /** A console command, e.g. "/dial sip:alice@keylatch.test" or "/hangup". */
  command(line: string): void {
    this.topo.exec(this.ns, 'python3', ['-c',
      `import socket;socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(${JSON.stringify(`${line}\n`)}.encode(),('127.0.0.1',${CONSOLE_PORT}))`]);
  }

  /** What baresip heard, per call: the decoded recordings sndfile wrote. */
  recordings(): string[] {
    return fs.readdirSync(this.dir).filter((f) => f.startsWith('dump-') && f.includes('dec')).map((f) => path.join(this.dir, f)).sort();
  }

  tail(): string {
    return this.log.slice(-3000);
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
