/**
 * baresip, a real softphone from Debian, as a test client in a namespace: it registers through
 * keylatch, auto-answers, plays a tone from a WAV file, and records what it hears (sndfile).
 * Commands go to its UDP console (cons module).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tone } from '../../src/codec/g711';
import { toneShare } from '../../src/codec/goertzel';
import type { Topology } from './netns';
import { hasCommand } from './tools';

export const baresipUnavailable = (): string | null => (hasCommand('baresip') ? null : 'baresip not installed (apt-get install baresip-core)');

const CONSOLE_PORT = 5555;

/** A mono 16-bit 8 kHz WAV of a tone (what a test phone plays). */
export function writeToneWav(file: string, seconds: number, hz: number): void {
  const pcm = Buffer.from(tone(hz, 8000 * seconds).buffer);
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

/** The 16-bit samples of a WAV file's data, skipping the first `skipSec` seconds. */
export function wavSamples(file: string, skipSec = 0): Int16Array {
  const buf = fs.readFileSync(file);
  const data = buf.indexOf('data');
  if (data < 0) return new Int16Array(0);
  const rate = buf.readUInt32LE(24);
  const start = data + 8 + Math.floor(skipSec * rate) * 2;
  const out = new Int16Array(Math.max(0, Math.floor((buf.length - start) / 2)));
  for (let i = 0; i < out.length; i++) out[i] = buf.readInt16LE(start + 2 * i);
  return out;
}

/**
 * The samples a recording gained since `fromBytes` (a size taken earlier: the file keeps growing
 * during the call, and its header's sizes are written only when it is closed).
 */
export function recordedSince(file: string, fromBytes: number): Int16Array {
  const buf = fs.readFileSync(file);
  const start = Math.max(44, fromBytes);
  const n = Math.max(0, Math.floor((buf.length - start) / 2));
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) out[i] = buf.readInt16LE(start + 2 * i);
  return out;
}

/** RMS of a WAV file's samples, skipping the first `skipSec` seconds. */
export function wavRms(file: string, skipSec = 0): number {
  const s = wavSamples(file, skipSec);
  let sum = 0;
  for (const v of s) sum += v * v;
  return s.length ? Math.sqrt(sum / s.length) : 0;
}

/** Share of a WAV file's energy at `hz` (see toneShare): whose tone a recording holds. */
export function wavToneShare(file: string, hz: number, skipSec = 0): number {
  return toneShare(wavSamples(file, skipSec), hz);
}

/**
 * The lowest share of `hz` over the WAV's chunks of `chunkSec`, past `skipSec`: whose tone a
 * recording holds throughout. A recording that skips what never arrived (a gap in the media)
 * joins two stretches of the tone at unrelated phases, and one Goertzel over both can cancel
 * itself out; chunk by chunk, only a chunk that straddles the join is affected.
 */
export function wavToneShareByChunk(file: string, hz: number, skipSec = 0, chunkSec = 1): number[] {
  const s = wavSamples(file, skipSec);
  const n = Math.floor(chunkSec * 8000);
  const out: number[] = [];
  for (let i = 0; i + n <= s.length; i += n) out.push(toneShare(s.subarray(i, i + n), hz));
  return out;
}

/** Whether a recording holds `hz` in each second past skipSec, but for one a skipped gap may split (see wavToneShareByChunk). */
export function wavHoldsTone(file: string, hz: number, skipSec = 0): { ok: boolean; chunks: number[] } {
  const chunks = wavToneShareByChunk(file, hz, skipSec);
  return { ok: chunks.length >= 2 && chunks.filter((c) => c < 0.5).length <= 1, chunks: chunks.map((c) => Number(c.toFixed(2))) };
}

/**
 * Whether the program that wrote a WAV file has closed it: libsndfile writes the RIFF and data
 * sizes only then. A call that is still up on that phone leaves them short of the file's size.
 */
export function wavClosed(file: string): boolean {
  const buf = fs.readFileSync(file);
  return buf.length > 44 && buf.readUInt32LE(4) === buf.length - 8;
}

export interface BaresipAccount {
  localIp: string;
  user: string;
  /** host:port of keylatch. */
  edge: string;
  /** The account's SIP domain (default keylatch.test); with `outbound: false` it must be keylatch's own address. */
  domain?: string;
  /** Send everything to `edge` as outbound proxy (default), or straight to the domain. */
  outbound?: boolean;
  transport?: 'udp' | 'tcp';
  /** Digest password, for a PBX that challenges. */
  password?: string;
  /** The tone it plays (default 440 Hz). */
  toneHz?: number;
  answermode?: 'auto' | 'manual';
}

export class Baresip {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kl-baresip-'));
  private log = '';
  private partial = '';
  /** Every line baresip printed, for counting events such as "Call established". */
  readonly lines: string[] = [];

  constructor(private readonly topo: Topology, private readonly ns: string, opts: BaresipAccount) {
    writeToneWav(path.join(this.dir, 'tone.wav'), 120, opts.toneHz ?? 440);
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
    const tp = opts.transport && opts.transport !== 'udp' ? `;transport=${opts.transport}` : '';
    const account = [
      `<sip:${opts.user}@${opts.domain ?? 'keylatch.test'}${tp}>`,
      ...(opts.outbound === false ? [] : [`outbound="sip:${opts.edge}${tp}"`]),
      ...(opts.password ? [`auth_pass=${opts.password}`] : []),
      'regint=60',
      `answermode=${opts.answermode ?? 'auto'}`,
      'audio_codecs=PCMU',
    ].join(';');
    fs.writeFileSync(path.join(this.dir, 'accounts'), `${account}\n`);
    const child = topo.spawnIn(ns, 'baresip', ['-f', this.dir, '-v']);
    const take = (d: Buffer): void => {
      this.log = (this.log + d.toString()).slice(-20000);
      this.partial += d.toString();
      const lines = this.partial.split('\n');
      this.partial = lines.pop()!;
      this.lines.push(...lines);
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
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

  /** How many lines so far match `re`: take a count before acting, then wait for it to grow. */
  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }

  tail(): string {
    return this.log.slice(-3000);
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
