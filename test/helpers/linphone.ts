/**
 * linphonec (liblinphone 5 from Debian's linphone-cli) as a test phone in a namespace: it
 * registers through keylatch, plays a tone from a WAV file and records what it hears ("soundcard
 * use files"), and sends its DTMF as SIP INFO (linphonerc [sip] use_info=1, use_rfc2833=0),
 * which the baresip Debian ships (1.0.0) cannot: its ;dtmfmode=info came with 1.1.0.
 *
 * Two quirks of linphonec decide how it is driven:
 * - --pipe: without it linphonec reads commands through readline, which on a pipe blocks in
 *   read() and never runs the core (no REGISTER, no call). With it a thread reads stdin and the
 *   main loop iterates the core every 20 ms. That thread keeps only the last line it read, so
 *   each command waits for the prompt the previous one ends with.
 * - The database directory must exist: without ~/.local/share/linphone the core stays in its
 *   Startup state, with no SIP socket at all.
 * 'quit' hangs in --pipe mode (its socket thread waits in accept()), so stop() kills it.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeToneWav } from './baresip';
import { Topology } from './netns';
import { waitFor } from './peers';
import { hasCommand } from './tools';

export const linphoneUnavailable = (): string | null => (hasCommand('linphonec') ? null : 'linphonec not installed (apt-get install linphone-cli)');

const PROMPT = 'linphonec> ';

export interface LinphoneAccount {
  localIp: string;
  user: string;
  /** host:port of keylatch: its outbound proxy (registrations and calls). */
  edge: string;
  /** The account's SIP domain (default keylatch.test). */
  domain?: string;
  /** The tone it plays (default 440 Hz). */
  toneHz?: number;
}

export class Linphone {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kl-linphone-'));
  /** What it hears in its calls (written while a call is up). */
  readonly recording = path.join(this.dir, 'heard.wav');
  private log = '';
  private partial = '';
  /** Every line linphonec printed (the prompt stripped), for counting events. */
  readonly lines: string[] = [];
  private prompts = 0;
  private readonly child: ChildProcess;
  /** Commands go one at a time: linphonec's stdin thread keeps only the latest line. */
  private queue: Promise<void> = Promise.resolve();

  constructor(topo: Topology, ns: string, opts: LinphoneAccount) {
    writeToneWav(path.join(this.dir, 'tone.wav'), 120, opts.toneHz ?? 440);
    fs.mkdirSync(path.join(this.dir, '.local', 'share', 'linphone'), { recursive: true });
    const rc = path.join(this.dir, 'linphonerc');
    fs.writeFileSync(rc, [
      '[sip]',
      'sip_port=5060',
      'sip_tcp_port=0',
      'sip_tls_port=0',
      'use_ipv6=0',
      // DTMF as SIP INFO (application/dtmf-relay), never as RFC 4733 events or in-band tones.
      'use_info=1',
      'use_rfc2833=0',
      'default_proxy=0',
      '[rtp]',
      'audio_rtp_port=7078',
      '[sound]',
      'echocancellation=0',
      '[proxy_0]',
      `reg_proxy=<sip:${opts.edge};transport=udp>`,
      `reg_identity=sip:${opts.user}@${opts.domain ?? 'keylatch.test'}`,
      'reg_expires=60',
      'reg_sendregister=1',
      'publish=0',
      '',
    ].join('\n'));
    this.child = topo.spawnIn(ns, 'env', [`HOME=${this.dir}`, 'linphonec', '-c', rc, '-d', '0', '--pipe']);
    const take = (d: Buffer): void => {
      const text = d.toString();
      this.log = (this.log + text).slice(-20000);
      this.prompts += text.split(PROMPT).length - 1;
      this.partial += text.split(PROMPT).join('');
      const lines = this.partial.split('\n');
      this.partial = lines.pop()!;
      this.lines.push(...lines);
    };
    this.child.stdout!.on('data', take);
    this.child.stderr!.on('data', take);
  }

  /**
   * A console command ("call sip:...", "terminate"), or a line of keys ("159#"), which
   * linphonec sends as DTMF one by one, a second apart. Resolves once linphonec took it.
   */
  command(line: string, timeoutMs = 15000): Promise<void> {
    const run = async (): Promise<void> => {
      // The first prompt comes when linphonec is ready to read.
      await waitFor(() => this.prompts > 0, timeoutMs);
      const before = this.prompts;
      this.child.stdin!.write(`${line}\n`);
      await waitFor(() => this.prompts > before, timeoutMs).catch(() => {
        throw new Error(`linphonec did not take '${line}'\n${this.tail()}`);
      });
    };
    this.queue = this.queue.then(run, run);
    return this.queue;
  }

  /** Sets up file mode: it plays its tone into every call and records what it hears. */
  async useFiles(): Promise<void> {
    await this.command('soundcard use files');
    await this.command(`play ${path.join(this.dir, 'tone.wav')}`);
    await this.command(`record ${this.recording}`);
  }

  /** How many lines so far match `re`: take a count before acting, then wait for it to grow. */
  count(re: RegExp): number {
    return this.lines.filter((l) => re.test(l)).length;
  }

  tail(): string {
    return this.log.slice(-3000);
  }

  stop(): void {
    Topology.killGroup(this.child);
  }

  remove(): void {
    this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
