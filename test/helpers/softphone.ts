/**
 * The example softphone (examples/softphone, SIP.js + the keylatch plugin) run as a real
 * process inside a test namespace, read through its --json event lines.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { MediaStats } from '../../plugins/sipjs/src';
import { LiveEvents, type Topology } from './netns';
import { waitFor } from './peers';

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

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  of(event: string): Array<Record<string, unknown>> {
    return this.events.of(event);
  }

  /** How many of each event so far. Take one before acting, so an event that comes before we wait is not missed. */
  mark(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const l of this.events.lines) counts.set(String(l.event), (counts.get(String(l.event)) ?? 0) + 1);
    return counts;
  }

  /** The first `event` after `since` (a mark, or a count of that event). */
  async next(event: string, timeoutMs: number, since: Map<string, number> | number): Promise<Record<string, unknown>> {
    const after = typeof since === 'number' ? since : (since.get(event) ?? 0);
    await waitFor(() => this.of(event).length > after, timeoutMs).catch(() => {
      throw new Error(`softphone: no '${event}' within ${timeoutMs} ms\n${this.tail()}`);
    });
    return this.of(event)[after]!;
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
