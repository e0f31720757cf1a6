/**
 * Just enough of a kubelet to run a host-network pod from deploy/kubernetes on a test "node" (a
 * network namespace): ConfigMap and Secret volumes written to a directory, each container
 * started with only its own resolved environment, and its probes run from inside the node's
 * network namespace, as the kubelet runs them from the host's.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Topology } from '../helpers/netns';
import { objectData, type Container, type KubeObject, type PodSpec, type Probe } from './manifests';

/** The uid, gid and supplementary groups a container runs as: its securityContext over the pod's, fsGroup added; null for the image's (root here). */
export function runAs(c: Container, pod: PodSpec): { uid: number; gid: number; groups: number[] } | null {
  const uid = c.securityContext?.runAsUser ?? pod.securityContext?.runAsUser;
  if (uid === undefined) return null;
  const fsGroup = pod.securityContext?.fsGroup;
  return { uid, gid: c.securityContext?.runAsGroup ?? pod.securityContext?.runAsGroup ?? 0, groups: fsGroup === undefined ? [] : [fsGroup] };
}

/** `setpriv` before a command, so it runs as `runAs` says. */
export function asUser(user: ReturnType<typeof runAs>): string[] {
  if (!user) return [];
  return ['setpriv', '--reuid', String(user.uid), '--regid', String(user.gid), ...(user.groups.length ? ['--groups', user.groups.join(',')] : ['--clear-groups'])];
}

/**
 * Writes the volumes a container mounts under `root` (ConfigMap and Secret items readable by
 * all, as defaultMode 0644 makes them; emptyDirs world-writable; a volumeClaimTemplate's volume
 * group-owned by the pod's fsGroup); returns what rewrites a container's paths in an argument to
 * those directories.
 */
export function materializeMounts(c: Container, pod: PodSpec, objects: KubeObject[], root: string): (p: string) => string {
  const mounts: Array<{ at: string; dir: string }> = [];
  mkdirSync(root, { recursive: true });
  for (let d = root; d !== path.dirname(d) && d.startsWith(tmpdir()); d = path.dirname(d)) if (d !== tmpdir()) chmodSync(d, 0o755);
  for (const m of c.volumeMounts ?? []) {
    const vol = pod.volumes?.find((v) => v.name === m.name);
    const src = vol?.configMap ? { kind: 'ConfigMap', name: vol.configMap.name, items: vol.configMap.items } : vol?.secret ? { kind: 'Secret', name: vol.secret.secretName, items: vol.secret.items } : null;
    if (!src) {
      // An emptyDir, or a volumeClaimTemplate's volume: an empty directory of its own.
      const dir = path.join(root, c.name, m.name);
      mkdirSync(dir, { recursive: true });
      const fsGroup = pod.securityContext?.fsGroup;
      if (vol?.emptyDir || fsGroup === undefined) chmodSync(dir, 0o1777);
      else {
        chownSync(dir, 0, fsGroup);
        chmodSync(dir, 0o2775);
      }
      mounts.push({ at: m.mountPath, dir });
      continue;
    }
    const o = objects.find((x) => x.kind === src.kind && x.metadata.name === src.name);
    if (!o) throw new Error(`${c.name}: volume ${m.name} refers to a missing ${src.kind} ${src.name}`);
    const data = objectData(o);
    const dir = path.join(root, c.name, m.name);
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    for (const { key, path: file } of src.items ?? Object.keys(data).map((k) => ({ key: k, path: k }))) writeFileSync(path.join(dir, file), data[key] ?? '');
    mounts.push({ at: m.mountPath, dir });
  }
  // Every mount path inside an argument (a file name, or a path in a shell script, up to a
  // quote, a space or a printf escape) moves to its directory, in one pass: a moved path is not
  // moved again by a shorter mount path.
  if (!mounts.length) return (arg) => arg;
  const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const alternatives = [...mounts].sort((a, b) => b.at.length - a.at.length).map((m) => escape(m.at)).join('|');
  const re = new RegExp(`(^|[\\s'"=])(${alternatives})(?=/|$|[\\s'"\\\\])`, 'g');
  return (arg) => arg.replace(re, (_all, before: string, at: string) => before + mounts.find((m) => m.at === at)!.dir);
}

/** A process in the node's namespace with exactly `env` (plus PATH, as an image's ENV gives it); its output kept for failure messages. */
export function startIn(topo: Topology, ns: string, user: ReturnType<typeof runAs>, env: Record<string, string>, argv: string[]): { child: ChildProcess; log: () => string } {
  const [cmd, ...args] = [...asUser(user), ...withEnv(env, argv)];
  const child = topo.spawnIn(ns, cmd!, args);
  let log = '';
  const keep = (d: Buffer): void => {
    log = (log + d.toString()).slice(-20_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  return { child, log: () => log };
}

/** `env -i` before a command: exactly the container's variables, plus PATH and HOME as an image's ENV gives them. */
export function withEnv(env: Record<string, string>, argv: string[]): string[] {
  const vars = { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp', ...env };
  return ['env', '-i', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), ...argv];
}

function run(argv: string[], env: Record<string, string>, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(argv[0]!, argv.slice(1), { env: { PATH: process.env.PATH, ...env }, timeout: timeoutMs }, (err) => resolve(!err));
  });
}

const HTTP_GET = 'fetch(process.argv[1], { signal: AbortSignal.timeout(Number(process.argv[2])) }).then((r) => process.exit(r.status >= 200 && r.status < 400 ? 0 : 1), () => process.exit(1))';
const TCP_CONNECT = "const s = require('net').connect(Number(process.argv[2]), process.argv[1], () => process.exit(0)); s.on('error', () => process.exit(1)); setTimeout(() => process.exit(1), Number(process.argv[3]))";

/** One run of a probe as the kubelet does it: HTTP 200-399, a TCP connect, or an exec exiting 0. */
export function probeOnce(ns: string, podIp: string, c: Container, p: Probe, env: Record<string, string>, runAsOf: ReturnType<typeof runAs> = null): Promise<boolean> {
  const timeoutMs = ((p as { timeoutSeconds?: number }).timeoutSeconds ?? 1) * 1000;
  const portOf = (port: number | string): number => (typeof port === 'number' ? port : (c.ports?.find((x) => x.name === port)?.containerPort ?? NaN));
  // The probe's own deadline covers the request; starting node in the namespace gets 10 s more on a loaded box.
  if (p.httpGet) {
    const url = `http://${p.httpGet.host ?? podIp}:${portOf(p.httpGet.port)}${p.httpGet.path ?? '/'}`;
    return run(['ip', 'netns', 'exec', ns, process.execPath, '-e', HTTP_GET, url, String(timeoutMs)], {}, timeoutMs + 10_000);
  }
  if (p.tcpSocket) return run(['ip', 'netns', 'exec', ns, process.execPath, '-e', TCP_CONNECT, p.tcpSocket.host ?? podIp, String(portOf(p.tcpSocket.port)), String(timeoutMs)], {}, timeoutMs + 10_000);
  if (p.exec) return run(['ip', 'netns', 'exec', ns, ...asUser(runAsOf), ...withEnv(env, p.exec.command)], {}, timeoutMs + 10_000);
  throw new Error(`${c.name}: a probe of a kind this kubelet does not run`);
}

/** Runs the startup probe (or, without one, the readiness probe) every periodSeconds until it passes; false after failureThreshold tries. */
export async function waitStarted(ns: string, podIp: string, c: Container, env: Record<string, string>, user: ReturnType<typeof runAs>, alive: () => boolean): Promise<boolean> {
  const p = (c.startupProbe ?? c.readinessProbe) as (Probe & { periodSeconds?: number; failureThreshold?: number }) | undefined;
  if (!p) return true;
  for (let i = 0; i < (p.failureThreshold ?? 3); i++) {
    if (!alive()) return false;
    if (await probeOnce(ns, podIp, c, p, env, user)) return true;
    await new Promise((r) => setTimeout(r, (p.periodSeconds ?? 10) * 1000));
  }
  return false;
}
