/**
 * drachtio-server for integration tests. Found through DRACHTIO_BIN or on PATH; never built
 * or shipped by this project. Started with a generated config (it reads one even when given
 * everything on the command line) and stopped after the suite.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hasCommand } from './tools';

export function drachtioBinary(): string | null {
  if (process.env.DRACHTIO_BIN) return process.env.DRACHTIO_BIN;
  return hasCommand('drachtio') ? 'drachtio' : null;
}

export function skipUnlessDrachtio(suite: string): boolean {
  if (drachtioBinary()) return false;
  console.warn(`!!! SKIPPED ${suite}: drachtio-server not found (set DRACHTIO_BIN or put drachtio on PATH)`);
  return true;
}

export interface RunningDrachtio {
  admin: { host: string; port: number; secret: string };
  /** The process id: of `ip netns exec` when run in a namespace. */
  pid: number;
  stop(): Promise<void>;
  log(): string;
}

async function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** A throwaway certificate whose subjectAltName is `ip`, so Node's TLS clients can verify it against that address. */
export function selfSignedCert(ip = '127.0.0.1'): { cert: string; key: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'kl-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${ip}`, '-addext', `subjectAltName=IP:${ip}`], { stdio: 'ignore' });
  return { cert, key };
}

/** contacts: e.g. ['sip:127.0.0.1:5090;transport=udp,tcp']. netns: run inside a test namespace. */
/** loglevel: drachtio-server logs every SIP message at info (the tests read that log); bench:sip keeps it quieter. */
export async function startDrachtio(opts: { contacts: string[]; adminPort: number; adminHost?: string; netns?: string; tls?: { cert: string; key: string }; loglevel?: 'info' | 'notice' | 'warning' | 'error' }): Promise<RunningDrachtio> {
  const bin = drachtioBinary();
  if (!bin) throw new Error('drachtio-server not found');
  const dir = mkdtempSync(path.join(tmpdir(), 'kl-drachtio-'));
  const secret = `s${process.pid}${Date.now()}`;
  const adminHost = opts.adminHost ?? '127.0.0.1';
  const conf = path.join(dir, 'drachtio.conf.xml');
  writeFileSync(conf, `<drachtio>
  <admin port="${opts.adminPort}" secret="${secret}">${adminHost}</admin>
  <sip><contacts></contacts></sip>
  <cdrs>false</cdrs>
  <logging><console/><sofia-loglevel>0</sofia-loglevel><loglevel>${opts.loglevel ?? 'info'}</loglevel></logging>
</drachtio>
`);
  const args = ['-f', conf, '--stdout', ...opts.contacts.flatMap((c) => ['--contact', c])];
  // sofia-sip will not open a TLS listener without a CA/chain file; a self-signed cert is its own.
  if (opts.tls) args.push('--cert-file', opts.tls.cert, '--key-file', opts.tls.key, '--chain-file', opts.tls.cert);
  const child: ChildProcess = opts.netns ? spawn('ip', ['netns', 'exec', opts.netns, bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-200_000)));
  child.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-200_000)));
  let exited = false;
  child.on('exit', () => {
    exited = true;
    rmSync(dir, { recursive: true, force: true });
    // A throwaway certificate from selfSignedCert() lives exactly as long as its server.
    if (opts.tls && path.basename(path.dirname(opts.tls.cert)).startsWith('kl-tls-')) rmSync(path.dirname(opts.tls.cert), { recursive: true, force: true });
  });
  for (let i = 0; !(await portOpen(adminHost, opts.adminPort)); i++) {
    if (exited || i > 100) throw new Error(`drachtio-server did not start:\n${log.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    admin: { host: adminHost, port: opts.adminPort, secret },
    pid: child.pid!,
    log: () => log,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}
