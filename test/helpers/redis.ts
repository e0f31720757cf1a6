import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Redis from 'ioredis';
import { hasCommand } from './tools';

export function redisUnavailable(): string | null {
  return hasCommand('redis-server') ? null : 'redis-server not installed (apt-get install redis-server)';
}

/**
 * A private redis-server for one test file, persisting nothing: on loopback, or on `bind` (the
 * host's address on a test's public net, for edges in namespaces to share).
 */
export async function startRedis(opts: { bind?: string } = {}): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = 26000 + (process.pid % 1000);
  const bind = opts.bind ?? '127.0.0.1';
  const dir = mkdtempSync(path.join(tmpdir(), 'kl-redis-'));
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', bind, '--protected-mode', bind === '127.0.0.1' ? 'yes' : 'no', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  const url = `redis://${bind}:${port}`;
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => undefined);
  for (let i = 0; ; i++) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch {
      if (i > 50) throw new Error('redis-server did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  probe.disconnect();
  return {
    url,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
