/**
 * The real docker-compose.yml under podman, for the compose test. No Docker engine and no image
 * registry here, so: stand-in images under the public names (standins.sh), the stack's own
 * images built from its Dockerfiles with `podman build`, then docker-compose (which speaks the
 * Docker API) against a podman API service that runs inside a network namespace of the test's
 * own. Every bridge, iptables rule and host-networked container lives in that namespace;
 * nothing binds or routes to the host's interfaces. nsenter --net, not `ip netns exec`: the
 * latter remounts /sys, which hides the cgroup mount runc needs. test/compose/override.yml puts the
 * stack's networks on the fake public ranges.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { drachtioBinary } from '../helpers/drachtio';
import { hasCommand } from '../helpers/tools';

export const ROOT = path.join(__dirname, '..', '..');
const FILES = [path.join(ROOT, 'docker-compose.yml'), path.join(__dirname, 'override.yml')];
/** The scaled variant, merged over the two above: two relay containers the edge pools. */
export const SCALED_FILE = path.join(ROOT, 'docker-compose.scaled.yml');
export const PROJECT = 'klcompose';
/** keylatch's PUBLIC_IP inside the namespace, on an interface of its own as a host's address is. */
export const PUBLIC_IP = '203.0.113.10';
export const DEMO_PBX = '198.18.10.5';

/** Why the compose test cannot run here, or null. */
export function composeUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  for (const [bin, pkg] of [['podman', 'podman'], ['runc', 'runc'], ['docker-compose', 'docker-compose'], ['debootstrap', 'debootstrap'], ['ip', 'iproute2']]) {
    if (!hasCommand(bin!)) return `${bin} not installed (apt-get install ${pkg})`;
  }
  if (!drachtioBinary()) return 'drachtio-server not found (set DRACHTIO_BIN or put drachtio on PATH)';
  return null;
}

const run = (cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): string =>
  execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 600_000, env: opts.env ?? process.env, maxBuffer: 64 << 20 });

/** Stand-ins for the public images (cached by what they were built from). */
export function buildStandins(): void {
  const r = spawnSync('bash', [path.join(__dirname, 'standins.sh')], { encoding: 'utf8', timeout: 900_000, cwd: ROOT });
  if (r.status !== 0) throw new Error(`standins.sh exited ${r.status}:\n${(r.stderr ?? '').slice(-3000)}`);
}

interface ComposeService {
  build?: { context: string; dockerfile?: string };
  image?: string;
}

export class ComposeStack {
  readonly ns = `klc${process.pid % 100000}`;
  private readonly sock = `/run/klc-${process.pid}.sock`;
  readonly dir = mkdtempSync(path.join(tmpdir(), 'kl-compose-'));
  private service: ChildProcess | null = null;
  private serviceLog = '';
  private nsMade = false;
  readonly env: NodeJS.ProcessEnv;
  private readonly envFile = path.join(this.dir, 'env');

  /** `extraFiles`: compose files merged over docker-compose.yml and the test override, e.g. SCALED_FILE. */
  constructor(private readonly extraFiles: string[] = []) {
    const envFile = this.envFile;
    mkdirSync(path.join(this.dir, 'certs'));
    // What a user puts in .env; an explicit file, so a developer's own .env cannot leak in.
    writeFileSync(envFile, [`PUBLIC_IP=${PUBLIC_IP}`, `PBX_URI=sip:${DEMO_PBX}:5060`, 'DRACHTIO_SECRET=compose-test', `TLS_DIR=${path.join(this.dir, 'certs')}`, ''].join('\n'));
    this.env = { PATH: process.env.PATH, HOME: process.env.HOME, DOCKER_HOST: `unix://${this.sock}`, COMPOSE_PROJECT_NAME: PROJECT };
  }

  private composeArgs(args: string[]): string[] {
    return ['--project-directory', ROOT, '--env-file', this.envFile, ...[...FILES, ...this.extraFiles].flatMap((f) => ['-f', f]), '--profile', 'demo', ...args];
  }

  /** docker-compose's resolved configuration (the real file plus the test override). */
  config(): { services: Record<string, ComposeService> } {
    return parseYaml(run('docker-compose', this.composeArgs(['config']), { env: this.env })) as { services: Record<string, ComposeService> };
  }

  /**
   * Builds every service's image from its Dockerfile under the name docker-compose looks for
   * (<project>_<service>), with the host's network for apt and npm; the namespace has none.
   * podman's layer cache makes a rebuild of unchanged inputs quick.
   */
  buildImages(log: (line: string) => void): void {
    for (const [name, svc] of Object.entries(this.config().services)) {
      if (!svc.build) continue;
      const started = Date.now();
      const dockerfile = path.join(svc.build.context, svc.build.dockerfile ?? 'Dockerfile');
      const r = spawnSync('podman', ['build', '--pull=never', '--network', 'host', '-t', `localhost/${PROJECT}_${name}:latest`, '-f', dockerfile, svc.build.context], { encoding: 'utf8', timeout: 900_000, maxBuffer: 64 << 20 });
      if (r.status !== 0) throw new Error(`podman build of ${name} (${dockerfile}) exited ${r.status}:\n${(r.stdout + r.stderr).slice(-4000)}`);
      log(`image ${name}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  }

  /** The namespace (loopback, and PUBLIC_IP on a dummy interface) and podman's API inside it. */
  async start(): Promise<void> {
    this.destroyNs();
    run('ip', ['netns', 'add', this.ns]);
    this.nsMade = true;
    run('ip', ['-n', this.ns, 'link', 'set', 'lo', 'up']);
    // The host's own interface: one end of a veth pair whose other end leads nowhere.
    run('ip', ['-n', this.ns, 'link', 'add', 'pub0', 'type', 'veth', 'peer', 'name', 'pub1']);
    run('ip', ['-n', this.ns, 'addr', 'add', `${PUBLIC_IP}/24`, 'dev', 'pub0']);
    run('ip', ['-n', this.ns, 'link', 'set', 'pub0', 'up']);
    run('ip', ['-n', this.ns, 'link', 'set', 'pub1', 'up']);
    rmSync(this.sock, { force: true });
    this.service = spawn('nsenter', [`--net=/run/netns/${this.ns}`, 'podman', 'system', 'service', '--time=0', `unix://${this.sock}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer): void => void (this.serviceLog = (this.serviceLog + d.toString()).slice(-20000));
    this.service.stdout!.on('data', keep);
    this.service.stderr!.on('data', keep);
    for (let i = 0; !existsSync(this.sock); i++) {
      if (i > 100 || this.service.exitCode !== null) throw new Error(`podman system service did not start:\n${this.serviceLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** docker-compose inside the namespace; resolves with its exit code and output. */
  compose(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
    return new Promise((resolve) => {
      const child = spawn('nsenter', [`--net=/run/netns/${this.ns}`, 'docker-compose', ...this.composeArgs(args)], { stdio: ['ignore', 'pipe', 'pipe'], env: this.env, cwd: this.dir });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
  }

  async logs(): Promise<string> {
    return (await this.compose(['logs', '--no-color', '--tail', '60'], 60_000)).out;
  }

  private destroyNs(): void {
    spawnSync('ip', ['netns', 'del', this.ns], { stdio: 'ignore' });
  }

  /** Everything the stack made: containers, networks, volumes, the API service, the namespace. */
  async destroy(): Promise<void> {
    if (this.service && this.service.exitCode === null) {
      await this.compose(['down', '--volumes', '--remove-orphans', '--timeout', '3'], 120_000);
      this.service.kill('SIGTERM');
      await new Promise((r) => this.service!.once('exit', r));
    }
    if (this.nsMade) this.destroyNs();
    rmSync(this.sock, { force: true });
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The lifecycle every compose suite shares, as beforeAll/afterAll: the stand-in images, the
 * stack's images, the stack up, and at the end down, with each step's time printed under
 * `name`. `stack()` is the running stack inside the suite's tests; `lap` adds their own timings.
 */
export function composeSuiteLifecycle(name: string, extraFiles: string[] = []): { stack: () => ComposeStack; lap: (what: string, since: number) => void } {
  let stack: ComposeStack | undefined;
  const t0 = Date.now();
  const timings: string[] = [];
  const lap = (what: string, since: number): void => void timings.push(`${what}: ${((Date.now() - since) / 1000).toFixed(1)} s`);
  beforeAll(async () => {
    let t = Date.now();
    buildStandins();
    lap('stand-in images', t);
    stack = new ComposeStack(extraFiles);
    t = Date.now();
    stack.buildImages((line) => timings.push(line));
    lap('stack images', t);
    await stack.start();
  }, 1_500_000);
  afterAll(async () => {
    const t = Date.now();
    await stack?.destroy();
    lap('teardown', t);
    lap(`whole ${name}`, t0);
    console.log(`${name} timings:\n  ${timings.join('\n  ')}`);
  }, 180_000);
  return {
    stack: () => {
      if (!stack) throw new Error(`${name}: the stack is not up`);
      return stack;
    },
    lap,
  };
}
