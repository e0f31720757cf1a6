/**
 * docker-compose.scaled.yml, as docker-compose merges it over docker-compose.yml: two relay
 * nodes the edge's media.relays names, each with its own ng port and a media port range that
 * overlaps neither the other's nor the edge's own. Only the merged file is checked here (no
 * containers: the full podman run of test/compose/compose.test.ts takes the stack up).
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parse } from 'yaml';
import { flagsToOverrides } from '../../src/cli';
import { loadConfig } from '../../src/config/load';
import { parseNgUrl } from '../../src/relay-pool/nodes';
import { hasCommand } from '../helpers/tools';

const ROOT = path.join(__dirname, '..', '..');
const why = hasCommand('docker-compose') ? null : 'docker-compose not installed';
if (why) console.warn(`!!! SKIPPED the scaled compose file check: ${why}`);

interface Service {
  command?: string[];
  environment?: Record<string, string>;
  network_mode?: string;
  depends_on?: Record<string, unknown>;
}

(why ? describe.skip : describe)('docker-compose.scaled.yml', () => {
  let services: Record<string, Service>;

  beforeAll(() => {
    const out = execFileSync('docker-compose', ['-f', 'docker-compose.yml', '-f', 'docker-compose.scaled.yml', 'config'], {
      cwd: ROOT, encoding: 'utf8', env: { PATH: process.env.PATH, PUBLIC_IP: '203.0.113.10' }, timeout: 60000,
    });
    services = (parse(out) as { services: Record<string, Service> }).services;
  });

  it('adds two relay nodes that the edge puts its calls on, on ports of their own', () => {
    const edgeEnv = services.keylatch!.environment!;
    const edge = loadConfig({ env: edgeEnv });
    const relays = ['relay-1', 'relay-2'].map((name) => {
      const s = services[name]!;
      expect(s.network_mode).toBe('host');
      expect(s.command![0]).toBe('relay');
      const { overrides } = flagsToOverrides(s.command!.slice(1));
      const c = loadConfig({ env: { KEYLATCH_LOG__LEVEL: s.environment?.KEYLATCH_LOG__LEVEL }, overrides });
      return { ng: c.control.ng!, interface: c.media.interface, range: [c.media.portMin, c.media.portMax] as const };
    });
    // The edge's list is exactly the two nodes' ng listeners.
    expect(edge.media.relays.map((r) => { const { host, port } = parseNgUrl(r.url); return `${host}:${port}`; })).toEqual(relays.map((r) => r.ng));
    expect(edge.media.relays.every((r) => r.kind === 'keylatch' && r.weight === 1)).toBe(true);
    expect(relays.map((r) => r.interface)).toEqual(['203.0.113.10', '203.0.113.10']);
    // One address, so three port ranges that must not meet: the two nodes' and the edge's own.
    const ranges = [...relays.map((r) => r.range), [edge.media.portMin, edge.media.portMax] as const].sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0]).toBeGreaterThan(ranges[i - 1]![1]);
    expect(Object.keys(services.keylatch!.depends_on!)).toEqual(expect.arrayContaining(['relay-1', 'relay-2']));
  });
});
