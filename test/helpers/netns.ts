/**
 * Test hosts in network namespaces, joined by a bridge that stands for the public internet
 * (198.18.0.0/24). Nothing here routes or NATs toward the host's real interfaces: the host side
 * gets one veth with an address on the fake public net and no forwarding.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { waitFor } from './peers';
import { hasCommand } from './tools';

export const PUBLIC_PREFIX = '198.18.0';
export const RELAY_IP = `${PUBLIC_PREFIX}.1`;

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Why these tests cannot run here, or null if they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  for (const bin of ['ip', 'iptables', 'conntrack']) if (!hasCommand(bin)) return `${bin} not installed`;
  try {
    sh('ip', ['netns', 'add', `klprobe${process.pid}`]);
    sh('ip', ['netns', 'del', `klprobe${process.pid}`]);
  } catch (err) {
    return `cannot create network namespaces: ${(err as Error).message.split('\n')[0]}`;
  }
  return null;
}

/**
 * The NATs a test can put a client behind, in RFC 4787 terms:
 * - port-preserving: Linux MASQUERADE; endpoint-independent mapping (the port is kept),
 *   address-and-port-dependent filtering (only the exact peer a flow went to may answer);
 * - symmetric: MASQUERADE --random-fully; a new random port for every destination;
 * - address-restricted: the same mapping, but any port of an address the client has sent to
 *   may reach it (xt_recent remembers the destinations; a DNAT sends their packets inside).
 */
export type NatKind = 'port-preserving' | 'symmetric' | 'address-restricted';

export class Topology {
  private readonly namespaces: string[] = [];
  /** The host's own end of the public net, where the relay and edge listen (tshark captures here). */
  readonly hostVeth: string;
  private readonly children = new Set<ChildProcess>();
  private bridgePorts = 1;
  private hostRoute = false;
  readonly bridgeNs: string;

  constructor(readonly id = `kl${process.pid % 100000}`) {
    this.bridgeNs = `${id}-wan`;
    this.hostVeth = `${id}h`;
  }

  ns(name: string): string {
    return `${this.id}-${name}`;
  }

  exec(ns: string, cmd: string, args: string[]): string {
    return sh('ip', ['netns', 'exec', ns, cmd, ...args]);
  }

  private addNs(name: string): string {
    const ns = this.ns(name);
    sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    this.exec(ns, 'ip', ['link', 'set', 'lo', 'up']);
    return ns;
  }

  /** The public bridge, with the host (where the relay runs) on it as RELAY_IP. */
  createPublicNet(): void {
    this.addNs('wan');
    this.exec(this.bridgeNs, 'ip', ['link', 'add', 'br0', 'type', 'bridge']);
    this.exec(this.bridgeNs, 'ip', ['link', 'set', 'br0', 'up']);
    sh('ip', ['link', 'add', this.hostVeth, 'type', 'veth', 'peer', 'name', 'up0', 'netns', this.bridgeNs]);
    sh('ip', ['addr', 'add', `${RELAY_IP}/24`, 'dev', this.hostVeth]);
    sh('ip', ['link', 'set', this.hostVeth, 'up']);
    this.exec(this.bridgeNs, 'ip', ['link', 'set', 'up0', 'master', 'br0', 'up']);
    // The clients' LANs (198.19.0.0/16) exist only inside their namespaces. Should anything on
    // the host ever aim at them, it must die here, not follow the host's default route out.
    sh('ip', ['route', 'replace', 'unreachable', '198.19.0.0/16']);
    this.hostRoute = true;
  }

  /** A host plugged straight into the public net (the attacker). */
  addPublicHost(name: string, lastOctet: number): { ns: string; ip: string } {
    const ns = this.addNs(name);
    this.plugIntoBridge(ns, 'wan0', `${PUBLIC_PREFIX}.${lastOctet}`);
    return { ns, ip: `${PUBLIC_PREFIX}.${lastOctet}` };
  }

  /** A NAT router on the public net and one client behind it on 198.19.<n>.0/24. */
  addNattedClient(name: string, n: number, kind: NatKind): { natNs: string; clientNs: string; publicIp: string; privateIp: string } {
    const natNs = this.addNs(`${name}nat`);
    const clientNs = this.addNs(name);
    const publicIp = `${PUBLIC_PREFIX}.${10 + n}`;
    const privateIp = `198.19.${n}.2`;
    this.plugIntoBridge(natNs, 'wan0', publicIp);
    this.exec(natNs, 'ip', ['link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', clientNs]);
    this.exec(natNs, 'ip', ['addr', 'add', `198.19.${n}.1/24`, 'dev', 'lan0']);
    this.exec(natNs, 'ip', ['link', 'set', 'lan0', 'up']);
    this.exec(clientNs, 'ip', ['addr', 'add', `${privateIp}/24`, 'dev', 'eth0']);
    this.exec(clientNs, 'ip', ['link', 'set', 'eth0', 'up']);
    this.exec(clientNs, 'ip', ['route', 'add', 'default', 'via', `198.19.${n}.1`]);
    this.exec(natNs, 'sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    // A router's firewall: nothing unsolicited from the internet is for the router itself. Without
    // this, Linux accepts an unanswered packet to an unused port of its own address and keeps a
    // conntrack entry for it for 30 s; the first hole-punching probe from a peer then occupies the
    // very tuple our client's own packet to that peer needs, and the client's port is remapped.
    // Home routers drop (or reject) such input, which leaves no entry behind.
    this.exec(natNs, 'iptables', ['-A', 'INPUT', '-i', 'wan0', '-m', 'conntrack', '--ctstate', 'NEW,INVALID', '-j', 'DROP']);
    const masq = ['-t', 'nat', '-A', 'POSTROUTING', '-o', 'wan0', '-j', 'MASQUERADE'];
    this.exec(natNs, 'iptables', kind === 'symmetric' ? [...masq, '--random-fully'] : masq);
    if (kind === 'address-restricted') {
      this.exec(natNs, 'iptables', ['-A', 'FORWARD', '-i', 'lan0', '-o', 'wan0', '-m', 'recent', '--name', 'peers', '--set', '--rdest']);
      this.exec(natNs, 'iptables', ['-t', 'nat', '-A', 'PREROUTING', '-i', 'wan0', '-p', 'udp', '-m', 'recent', '--name', 'peers', '--rcheck', '--rsource',
        '-j', 'DNAT', '--to-destination', privateIp]);
    }
    return { natNs, clientNs, publicIp, privateIp };
  }

  private plugIntoBridge(ns: string, ifname: string, ip: string): void {
    const peer = `port${this.bridgePorts++}`;
    this.exec(ns, 'ip', ['link', 'add', ifname, 'type', 'veth', 'peer', 'name', peer, 'netns', this.bridgeNs]);
    this.exec(ns, 'ip', ['addr', 'add', `${ip}/24`, 'dev', ifname]);
    this.exec(ns, 'ip', ['link', 'set', ifname, 'up']);
    this.exec(this.bridgeNs, 'ip', ['link', 'set', peer, 'master', 'br0', 'up']);
  }

  flushConntrack(ns: string): void {
    // conntrack exits 1 when the table was already empty; that is not a failure here.
    try {
      this.exec(ns, 'conntrack', ['-F']);
    } catch {
      /* empty table */
    }
  }

  /** Runs a TypeScript program of ours inside a namespace; it may read commands on stdin. */
  spawnTs(ns: string, script: string, arg: unknown): ChildProcess {
    return this.spawnIn(ns, process.execPath, ['-r', path.join(__dirname, 'ts-register.js'), script, JSON.stringify(arg)]);
  }

  /**
   * Runs any program inside a namespace, in a process group of its own, so that destroy()
   * also reaches whatever it forked (Kamailio's workers outlive a killed main process).
   */
  spawnIn(ns: string, cmd: string, args: string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Kills a child of spawnIn and everything it forked. */
  static killGroup(child: ChildProcess): void {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }

  destroy(): void {
    for (const c of this.children) Topology.killGroup(c);
    for (const ns of this.namespaces.reverse()) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch {
        /* already gone */
      }
    }
    try {
      sh('ip', ['link', 'del', this.hostVeth]);
    } catch {
      /* removed with its peer */
    }
    if (this.hostRoute) {
      try {
        sh('ip', ['route', 'del', 'unreachable', '198.19.0.0/16']);
      } catch {
        /* already gone */
      }
      this.hostRoute = false;
    }
  }
}

/** Calls `cb` with each JSON line a child prints; other output is ignored. */
function onJsonLine(child: ChildProcess, cb: (line: Record<string, unknown>) => void): void {
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        cb(JSON.parse(line) as Record<string, unknown>);
      } catch {
        /* not ours */
      }
    }
  });
}

/** A child's JSON-line events as they arrive, for tests that act on them mid-run. */
export class LiveEvents {
  readonly lines: Array<Record<string, unknown>> = [];
  readonly done: Promise<Array<Record<string, unknown>>>;

  constructor(private readonly child: ChildProcess) {
    onJsonLine(child, (l) => this.lines.push(l));
    this.done = jsonLines(child);
    this.done.catch(() => undefined);
  }

  of(event: string): Array<Record<string, unknown>> {
    return this.lines.filter((l) => l.event === event);
  }

  last(event: string): Record<string, unknown> | undefined {
    return this.of(event).at(-1);
  }

  command(cmd: object): void {
    this.child.stdin!.write(`${JSON.stringify(cmd)}\n`);
  }

  /** How many of each event so far. Take one before acting, so an event that comes before we wait is not missed. */
  mark(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const l of this.lines) counts.set(String(l.event), (counts.get(String(l.event)) ?? 0) + 1);
    return counts;
  }

  /** The first `event` after `since` (a mark, or a count of that event); `context` explains a timeout. */
  async next(event: string, timeoutMs: number, since: Map<string, number> | number, context = (): string => JSON.stringify(this.lines.slice(-6))): Promise<Record<string, unknown>> {
    const after = typeof since === 'number' ? since : (since.get(event) ?? 0);
    await waitFor(() => this.of(event).length > after, timeoutMs).catch(() => {
      throw new Error(`no '${event}' within ${timeoutMs} ms\n${context()}`);
    });
    return this.of(event)[after]!;
  }
}

/** Collects a child's JSON-line output; resolves with all lines when it exits. */
export function jsonLines(child: ChildProcess): Promise<Array<Record<string, unknown>>> {
  const lines: Array<Record<string, unknown>> = [];
  let err = '';
  onJsonLine(child, (l) => lines.push(l));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.on('exit', (code) => (code === 0 ? resolve(lines) : reject(new Error(`child exited ${code}: ${err.slice(-2000)}`))));
  });
}
