import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, envOverrides, loadConfig } from '../../src/config/load';
import { flagsToOverrides } from '../../src/cli';

describe('configuration', () => {
  it('loads config/default.yaml as a valid configuration', () => {
    const c = loadConfig({ env: {} });
    expect(c.media.portMin).toBe(30000);
    expect(c.media.allowLoopbackPeers).toBe(false);
    expect(c.media.guarded.learnWindowMs).toBe(3000);
  });

  it('takes environment overrides, typed, by nested snake-case names', () => {
    expect(envOverrides({ KEYLATCH_MEDIA__PORT_MIN: '40000', KEYLATCH_MEDIA__KEY__NONCE_TTL_MS: '2000', OTHER: 'x' })).toEqual({
      media: { portMin: 40000, key: { nonceTtlMs: 2000 } },
    });
    const c = loadConfig({ env: { KEYLATCH_MEDIA__PORT_MIN: '40000', KEYLATCH_MEDIA__PORT_MAX: '40100' } });
    expect(c.media.portMin).toBe(40000);
  });

  it('layers a YAML file over the defaults', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'kl-'));
    const file = path.join(dir, 'site.yaml');
    writeFileSync(file, 'media:\n  interface: 198.18.0.1\n');
    try {
      expect(loadConfig({ file, env: {} }).media.interface).toBe('198.18.0.1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each([
    [{ KEYLATCH_MEDIA__INTERFACE: 'not-an-ip' }, 'media.interface'],
    [{ KEYLATCH_MEDIA__PORT_MIN: '70000' }, 'media.portMin'],
    [{ KEYLATCH_MEDIA__PORT_MIN: '39999', KEYLATCH_MEDIA__PORT_MAX: '30000' }, 'media.portMin'],
    [{ KEYLATCH_LOG__LEVEL: 'loud' }, 'log.level'],
    [{ KEYLATCH_CONTROL__NG: 'localhost' }, 'control.ng'],
    [{ KEYLATCH_MEDIA__KEY__CONSENT_TIMEOUT_MS: '100' }, 'media.key.consentTimeoutMs'],
  ])('fails with a message naming the key for %j', (env, key) => {
    expect(() => loadConfig({ env })).toThrow(ConfigError);
    expect(() => loadConfig({ env })).toThrow(key);
  });

  it('maps relay command-line flags onto the same validated tree', () => {
    const { overrides } = flagsToOverrides(['--ng', '127.0.0.1:22222', '--interface', '198.18.0.1', '--ports', '20000-20999']);
    const c = loadConfig({ env: {}, overrides });
    expect(c.control.ng).toBe('127.0.0.1:22222');
    expect(c.media).toMatchObject({ interface: '198.18.0.1', portMin: 20000, portMax: 20999 });
    expect(() => flagsToOverrides(['--ports', '20000'])).toThrow(/MIN-MAX/);
    expect(() => flagsToOverrides(['--bogus'])).toThrow();
  });

  it('takes the relay worker count from --workers or the environment, "auto" by default', () => {
    expect(loadConfig({ env: {} }).media.workers).toBe('auto');
    expect(loadConfig({ env: { KEYLATCH_MEDIA__WORKERS: '3' } }).media.workers).toBe(3);
    expect(loadConfig({ env: {}, overrides: flagsToOverrides(['--workers', '2']).overrides }).media.workers).toBe(2);
    expect(loadConfig({ env: {}, overrides: flagsToOverrides(['--workers', 'auto']).overrides }).media.workers).toBe('auto');
    expect(() => flagsToOverrides(['--workers', 'many'])).toThrow(/--workers/);
    expect(() => loadConfig({ env: { KEYLATCH_MEDIA__WORKERS: '0' } })).toThrow('media.workers');
    expect(() => loadConfig({ env: { KEYLATCH_MEDIA__SEND_BATCHING: 'sometimes' } })).toThrow('media.sendBatching');
  });
});
