/**
 * The example softphone (examples/softphone, SIP.js + the keylatch plugin) run as a real
 * process inside a test namespace, read through its --json event lines.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { MediaStats } from '../../plugins/sipjs/src';
import { LiveEvents, type Topology } from './netns';

const SOFTPHONE = path.join(__dirname, '..', '..', 'examples', 'softphone', 'softphone.ts');
const TS_REGISTER = path.join(__dirname, 'ts-register.js');

export class Softphone {
  readonly events: LiveEvents;
  private readonly child: ChildProcess;
  private stderr = '';

  constructor(topo: Topology, ns: string, args: string[]) {
    this.child = topo.spawnIn(ns, process.execPath, ['-r', TS_REGISTER, SOFTPHONE, '--json', ...args]);
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    this.events = new LiveEvents(this.child);
  }

  /** SIGSTOP freezes it mid-call (it stops sending anything, without a BYE); SIGCONT lets it go on. */
  signal(sig: 'SIGSTOP' | 'SIGCONT'): void {
    this.child.kill(sig);
  }

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  of(event: string): Array<Record<string, unknown>> {
    return this.events.of(event);
  }

  mark(): Map<string, number> {
    return this.events.mark();
  }

  next(event: string, timeoutMs: number, since: Map<string, number> | number): Promise<Record<string, unknown>> {
    return this.events.next(event, timeoutMs, since, () => `softphone: ${this.tail()}`);
  }

  async stats(): Promise<MediaStats> {
    const n = this.of('stats').length;
    this.send('stats');
    return (await this.next('stats', 2000, n)) as unknown as MediaStats;
  }

  tail(): string {
    return `${JSON.stringify(this.events.lines.slice(-8))}\nstderr: ${this.stderr.slice(-1500)}`;
  }
}
