/**
 * The softphone README's single-host guide ("Against a local keylatch"), run as written: the
 * shell block is read from the README, and each command runs unchanged, the long-running ones
 * in the background, inside a network namespace of its own so that its fixed 127.0.0.1 ports
 * meet nothing else on this machine. It passes only if alice's call reaches bob through
 * Kamailio and keylatch with her key proved and her tone in bob's recording.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { wavClosed, wavToneShare } from '../helpers/baresip';
import { skipUnlessDrachtio } from '../helpers/drachtio';
import { kamailioUnavailable } from '../helpers/kamailio';
import { netnsUnavailable } from '../helpers/netns';
import { waitFor } from '../helpers/peers';

const ROOT = path.join(__dirname, '..', '..');
const README = path.join(ROOT, 'examples', 'softphone', 'README.md');
const why = netnsUnavailable() ?? kamailioUnavailable();
if (why) console.warn(`!!! SKIPPED softphone guide test: ${why}`);
const skip = skipUnlessDrachtio('softphone guide test') || why !== null;

/** The guide's commands: the sh block under "Against a local keylatch", continuations joined, comments dropped. */
function guideCommands(): string[] {
  const text = fs.readFileSync(README, 'utf8');
  const section = text.slice(text.indexOf('## Against a local keylatch'));
  const block = /```sh\n([\s\S]*?)```/.exec(section)![1]!;
  return block.replace(/\\\n\s*/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

class Step {
  out = '';
  readonly child: ChildProcess;
  constructor(ns: string, readonly command: string) {
    this.child = spawn('ip', ['netns', 'exec', ns, 'bash', '-c', command], { cwd: ROOT, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.out += d.toString()));
  }
  kill(): void {
    try {
      process.kill(-this.child.pid!, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

(skip ? describe.skip : describe)('the softphone README, single-host guide', () => {
  const ns = `klguide${process.pid % 10000}`;
  const made = ['key.pem', 'cert.pem', 'bob.wav'].map((f) => path.join(ROOT, f));
  const steps: Step[] = [];
  const portOpen = (port: number): boolean => spawnSync('ip', ['netns', 'exec', ns, 'bash', '-c', `echo > /dev/tcp/127.0.0.1/${port}`], { stdio: 'ignore' }).status === 0;

  beforeAll(() => {
    if (made.some((f) => fs.existsSync(f))) throw new Error(`refusing to overwrite ${made.join(', ')} in the checkout`);
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'ignore' });
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  }, 120000);
  afterAll(() => {
    for (const s of steps) s.kill();
    spawnSync('ip', ['netns', 'del', ns]);
    for (const f of made) fs.rmSync(f, { force: true });
  });

  it('alice calls bob through Kamailio and keylatch: key proved, first media, her tone in his recording', async () => {
    const [cert, kamailio, drachtioPhones, drachtioPbx, edge, bob, alice, ...rest] = guideCommands();
    expect(rest).toEqual([]);
    expect(spawnSync('ip', ['netns', 'exec', ns, 'bash', '-c', cert!], { cwd: ROOT, stdio: 'ignore' }).status).toBe(0);
    const context = (): string => steps.map((s) => `--- ${s.command.slice(0, 60)}\n${s.out.slice(-1500)}`).join('\n');
    const start = (cmd: string): Step => {
      const s = new Step(ns, cmd);
      steps.push(s);
      return s;
    };
    start(kamailio!);
    start(drachtioPhones!);
    start(drachtioPbx!);
    await waitFor(() => portOpen(9022) && portOpen(9023) && portOpen(5063), 10000, 100).catch(() => {
      throw new Error(`servers did not start\n${context()}`);
    });
    const edgeStep = start(edge!);
    await waitFor(() => (edgeStep.out.match(/connected to drachtio-server/g) ?? []).length === 2, 15000, 100).catch(() => {
      throw new Error(`edge did not connect\n${context()}`);
    });
    const bobStep = start(bob!);
    await waitFor(() => / registered/.test(bobStep.out), 20000, 100).catch(() => {
      throw new Error(`bob did not register\n${context()}`);
    });
    const aliceStep = start(alice!);
    await waitFor(() => / first-media /.test(aliceStep.out), 20000, 100).catch(() => {
      throw new Error(`alice got no media\n${context()}`);
    });
    expect(aliceStep.out).toMatch(/ established/);
    expect(aliceStep.out).toMatch(/ media-authenticated /);
    await new Promise((r) => setTimeout(r, 2000));
    aliceStep.child.stdin!.write('hangup\n');
    const bobWav = made[2]!;
    await waitFor(() => fs.existsSync(bobWav) && wavClosed(bobWav), 10000, 100).catch(() => {
      throw new Error(`bob's recording was not closed\n${context()}`);
    });
    expect(wavToneShare(bobWav, 1000, 0.5)).toBeGreaterThan(0.5);
  }, 120000);
});
