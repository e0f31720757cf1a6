/**
 * The pods of deploy/kubernetes run as written on one test "node": a network namespace on the
 * fake public net standing for a node's host network, with both roles' labels (the claim that
 * one node can carry both). Each container gets its manifest's arguments and only its resolved
 * environment; the pods' ConfigMap and Secret volumes are written to files; the probes run from
 * the node's namespace, as the kubelet runs them from the host's. Then the host, as a phone or a
 * signalling node, reaches the SIP/TLS listeners and the relay's ng port on the node's address.
 *
 * Stand-ins, since no cluster or image is available: the host's drachtio-server, redis-server
 * and Node run the containers' commands (keylatch from src/ through ts-register, as the image
 * runs dist/); drachtio-server is given a config file as its image has one; the node's
 * /etc/hosts resolves keylatch-redis to the node's loopback, where Redis runs, for cluster DNS.
 */
import { readFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { spawnSync } from 'node:child_process';
import { Client } from 'rtpengine-client';
import { drachtioBinary, selfSignedCert } from '../helpers/drachtio';
import { RELAY_IP, Topology, netnsUnavailable } from '../helpers/netns';
import { redisUnavailable } from '../helpers/redis';
import { hasCommand } from '../helpers/tools';
import { asUser, materializeMounts, probeOnce, runAs, startIn, waitStarted, withEnv } from './kubelet';
import { KUBE_DIR, ROOT, allContainers, loadFile, loadKustomized, resolveEnv, workloads, type Container, type KubeObject, type Probe, type Workload } from './manifests';

const why = netnsUnavailable() ?? (drachtioBinary() ? null : 'drachtio-server not found (DRACHTIO_BIN or PATH)') ?? redisUnavailable() ?? (hasCommand('openssl') ? null : 'openssl not installed');
if (why) console.warn(`!!! SKIPPED test/deploy/pods.test.ts: ${why}`);

/** The host binary that stands in for each image's entry point. */
function entryPoint(c: Container, args: string[], drachtioConf: string): string[] {
  if (c.image.startsWith('keylatch')) return [process.execPath, '-r', path.join(ROOT, 'test/helpers/ts-register.js'), path.join(ROOT, 'src/cli.ts'), ...args];
  // The image's entrypoint runs its arguments; it ships /etc/drachtio.conf.xml, which the host's binary lacks.
  if (c.image.startsWith('drachtio/') && args[0] === 'drachtio') return [drachtioBinary()!, '-f', drachtioConf, ...args.slice(1)];
  if (c.command) return [...c.command, ...args];
  throw new Error(`${c.name}: no stand-in for image ${c.image}`);
}

(why ? describe.skip : describe)('deploy/kubernetes: the pods on a host-network node', () => {
  const topo = new Topology();
  const running: Array<{ pod: string; c: Container; pid: number; user: ReturnType<typeof runAs>; env: Record<string, string>; mapPaths: (p: string) => string; alive: () => boolean; log: () => string }> = [];
  let node: { ns: string; ip: string };
  let dir = '';
  let etcNetns = '';
  let cert: { cert: string; key: string };
  let pods: Workload[] = [];

  beforeAll(() => {
    topo.createPublicNet();
    node = topo.addPublicHost('node', 50);
    // `ip netns exec` mounts /etc/netns/NAME/hosts over /etc/hosts: cluster DNS for keylatch-redis.
    etcNetns = path.join('/etc/netns', node.ns);
    mkdirSync(etcNetns, { recursive: true });
    writeFileSync(path.join(etcNetns, 'hosts'), '127.0.0.1 localhost keylatch-redis\n');
    dir = mkdtempSync(path.join(tmpdir(), 'keylatch-pods-'));
    cert = selfSignedCert(node.ip);
    pods = workloads(loadKustomized());
  });

  afterAll(() => {
    topo.destroy();
    if (etcNetns) rmSync(etcNetns, { recursive: true, force: true });
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (cert) rmSync(path.dirname(cert.cert), { recursive: true, force: true });
  });

  it('every container starts in order and passes its startup, liveness and readiness probes', async () => {
    // The Secrets as an operator creates them: the example values, and a real certificate for the node's address.
    const objects: KubeObject[] = [...loadKustomized(), ...loadFile(path.join(KUBE_DIR, 'secrets.example.yaml'))].map((m) =>
      m.obj.metadata.name === 'keylatch-tls' ? { ...m.obj, data: undefined, stringData: { 'tls.crt': readFileSync(cert.cert, 'utf8'), 'tls.key': readFileSync(cert.key, 'utf8') } } : m.obj,
    );
    // What the image's /etc/drachtio.conf.xml holds: a secret the pods must override.
    const drachtioConf = path.join(dir, 'drachtio.conf.xml');
    writeFileSync(drachtioConf, '<drachtio>\n  <admin port="9022" secret="cymru">127.0.0.1</admin>\n  <logging><console/><loglevel>info</loglevel></logging>\n</drachtio>\n');
    const fields = { 'status.hostIP': node.ip, 'status.podIP': node.ip, 'metadata.namespace': 'keylatch' };
    const start = async (w: Workload, c: Container): Promise<void> => {
      const env = resolveEnv(c, fields, objects);
      const mapPaths = materializeMounts(c, w.pod, objects, path.join(dir, w.name));
      // Kubernetes expands $(VAR) in command and args from the container's environment.
      const expandVars = (a: string): string => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name: string) => env[name] ?? all);
      const args = (c.args ?? []).map(expandVars).map(mapPaths);
      const cmd = c.command ? { ...c, command: c.command.map(expandVars).map(mapPaths) } : c;
      const user = runAs(c, w.pod);
      const { child, log } = startIn(topo, node.ns, user, env, entryPoint(cmd, args, drachtioConf));
      let exited = false;
      child.on('exit', () => (exited = true));
      running.push({ pod: w.name, c, pid: child.pid!, user, env, mapPaths, alive: () => !exited, log });
      if (!(await waitStarted(node.ns, node.ip, c, env, user, () => !exited))) throw new Error(`${w.name}/${c.name} did not start:\n${log().slice(-3000)}`);
    };
    // Redis first (a StatefulSet the DaemonSets need), then each pod: native sidecars in order, each
    // started before the next (the kubelet waits for a sidecar's startup probe), then its containers.
    const order = ['keylatch-redis', 'keylatch-sip', 'keylatch-rtp'];
    for (const name of order) {
      const w = pods.find((p) => p.name === name)!;
      for (const c of allContainers(w.pod)) await start(w, c);
    }
    expect(running.map((r) => `${r.pod}/${r.c.name}`)).toEqual(order.flatMap((n) => allContainers(pods.find((p) => p.name === n)!.pod).map((c) => `${n}/${c.name}`)));
    for (const r of running) {
      for (const kind of ['livenessProbe', 'readinessProbe'] as const) {
        const p = r.c[kind] as Probe | undefined;
        if (!p) continue;
        const ok = await probeOnce(node.ns, node.ip, r.c, p, r.env, r.user);
        expect({ container: `${r.pod}/${r.c.name}`, probe: kind, ok, log: ok ? '' : r.log().slice(-2000) }).toEqual({ container: `${r.pod}/${r.c.name}`, probe: kind, ok: true, log: '' });
      }
      expect({ container: `${r.pod}/${r.c.name}`, alive: r.alive() }).toEqual({ container: `${r.pod}/${r.c.name}`, alive: true });
      // `ip netns exec`, setpriv and env each exec the next: the pid is the container's process, running as its securityContext says.
      const uid = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${r.pid}/status`, 'utf8'))?.[1];
      expect({ container: `${r.pod}/${r.c.name}`, uid: Number(uid) }).toEqual({ container: `${r.pod}/${r.c.name}`, uid: r.user?.uid ?? 0 });
    }
  }, 240_000);

  it('`keylatch status` in the edge container (as docs/kubernetes.md runs it) shows drachtio-server on the node address and Redis', () => {
    const edge = running.find((r) => r.pod === 'keylatch-sip' && r.c.image.startsWith('keylatch'))!;
    // The command after `kubectl ... exec ds/keylatch-sip -c edge --` in the guide, with the image's node dist/src/cli.js as src/cli.ts.
    const documented = /kubectl -n keylatch exec ds\/keylatch-sip -c edge -- node dist\/src\/cli\.js (.+)/.exec(readFileSync(path.join(ROOT, 'docs/kubernetes.md'), 'utf8'));
    expect(documented).not.toBeNull();
    const args = documented![1]!.trim().split(/\s+/).map(edge.mapPaths);
    // kubectl exec runs as the container's user, in its environment.
    const argv = [...asUser(edge.user), ...withEnv(edge.env, [process.execPath, '-r', path.join(ROOT, 'test/helpers/ts-register.js'), path.join(ROOT, 'src/cli.ts'), ...args])];
    const out = spawnSync('ip', ['netns', 'exec', node.ns, ...argv], { encoding: 'utf8', timeout: 30_000 });
    expect({ status: out.status, stderr: out.stderr }).toEqual({ status: 0, stderr: '' });
    for (const listener of [`udp/${node.ip}:5060`, `tcp/${node.ip}:5060`, `tls/${node.ip}:5061`, `wss/${node.ip}:5063`]) expect(out.stdout).toContain(listener);
    expect(out.stdout).toContain('redis://:***@keylatch-redis:6379');
    expect(out.stdout).not.toContain(edge.env.REDIS_PASSWORD!);
  }, 60_000);

  it.each([5061, 5063])('a phone gets the TLS Secret\'s certificate on %i at the node address', async (port) => {
    const presented = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: node.ip, port, rejectUnauthorized: false }, () => {
        resolve(s.getPeerX509Certificate()?.fingerprint256 ?? '');
        s.destroy();
      });
      s.on('error', reject);
      s.setTimeout(5000, () => reject(new Error(`no TLS handshake on ${node.ip}:${port}`)));
    });
    expect(presented).toBe(new X509Certificate(readFileSync(cert.cert)).fingerprint256);
  });

  it('an ng client reaches the relay on the node address', async () => {
    const client = new Client({ localPort: 0, localAddress: RELAY_IP, timeout: 3000 });
    try {
      expect(await client.ping({ host: node.ip, port: 22222 })).toMatchObject({ result: 'pong' });
    } finally {
      client.close();
    }
  });
});
