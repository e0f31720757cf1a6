/**
 * sip.processes: several edge processes behind one drachtio-server, what Kamailio users know as
 * `children`. Each process is a full edge with its own drachtio-srf connection. drachtio-server
 * hands a new request (one outside any dialog) to the apps that routed its method in turn, per
 * method, and keeps every dialog on the app whose transaction created it, so a call's re-INVITEs,
 * ACKs and BYEs stay on the process that owns both its legs (client-controller.cpp,
 * selectClientForRequestOutsideDialog and m_mapDialogs). What the processes must share or split:
 *  - bindings: a REGISTER, its refresh and a call for the phone may each reach another process,
 *    so the store is Redis (the schema refuses `memory`);
 *  - the in-process relay's ports: each process takes its own slice of media.portMin-portMax;
 *  - keepalives: each binding's flow is kept alive by exactly one process (ownsFlow);
 *  - listeners: metrics.listen and admin.listen are served on their port + the process index;
 *  - rooms: each room lives in one owner process (roomOwner, src/rooms/room-owner.ts); a join
 *    that reaches another process keeps its dialog there and its media in the owner's relay,
 *    asked over a loopback control channel on rooms.siblingPort + index (src/rooms/sibling-rooms.ts).
 * A supervisor (this module) forks the processes and restarts one that dies; they stop when it does.
 * It says the edge is up only once every process has told it (reportReady) that it can answer:
 * until a process has connected to drachtio-server and its routes are in place, drachtio-server
 * itself answers that method 503, without Retry-After ("No connected clients found to handle
 * incoming register request"), and a phone pointed at the edge at once would be refused.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Config } from './config/schema';
import { joinHostPort, splitHostPort } from './host-port';
import type { Logger } from './log';

/** Which of how many edge processes this one is. */
export interface EdgeShare {
  index: number;
  count: number;
}

/** Set by the supervisor on each child: "index/count". */
export const SHARE_ENV = 'KEYLATCH_EDGE_PROCESS';

export const SOLE: EdgeShare = { index: 0, count: 1 };

/**
 * Set by the supervisor on each child: a secret fresh for each start of the supervisor, which
 * only its processes know. Their room control channel (src/rooms/sibling-rooms.ts) signs every
 * message with it and seals leg keys under it.
 */
export const SIBLING_SECRET_ENV = 'KEYLATCH_EDGE_SIBLING_SECRET';

/** The secret the supervisor gave this process, when it is one of several; null when it runs alone. */
export function siblingSecretOf(share: EdgeShare, env: NodeJS.ProcessEnv): string | null {
  if (share.count === 1) return null;
  const secret = env[SIBLING_SECRET_ENV];
  if (!secret) throw new Error(`edge process ${share.index} has no ${SIBLING_SECRET_ENV}: start it with keylatch edge, whose supervisor sets it`);
  return secret;
}

export function shareFromEnv(env: NodeJS.ProcessEnv): EdgeShare | null {
  const m = /^(\d+)\/(\d+)$/.exec(env[SHARE_ENV] ?? '');
  if (!m) return null;
  const share = { index: Number(m[1]), count: Number(m[2]) };
  return share.index < share.count ? share : null;
}

/** This process's media port slice: even-aligned, so an RTP/RTCP pair never straddles two processes. */
export function portSlice(portMin: number, portMax: number, share: EdgeShare): { portMin: number; portMax: number } {
  if (share.count === 1) return { portMin, portMax };
  const base = portMin + (portMin % 2);
  const size = Math.floor((portMax - base + 1) / share.count / 2) * 2;
  const min = base + share.index * size;
  return { portMin: min, portMax: share.index === share.count - 1 ? portMax : min + size - 1 };
}

/** The other processes' slices: the edge's own media ports that this process's relay never holds. */
export function siblingSlices(portMin: number, portMax: number, share: EdgeShare): Array<{ portMin: number; portMax: number }> {
  return Array.from({ length: share.count }, (_, index) => index).filter((i) => i !== share.index).map((index) => portSlice(portMin, portMax, { index, count: share.count }));
}

const shiftPort = (hostPort: string | null, by: number): string | null => {
  if (hostPort === null || by === 0) return hostPort;
  const { host, port } = splitHostPort(hostPort);
  return joinHostPort(host, port + by);
};

/** The configuration one edge process runs with: its port slice and its own listener ports. */
export function configForShare(config: Config, share: EdgeShare): Config {
  if (share.count === 1) return config;
  return {
    ...config,
    media: { ...config.media, ...portSlice(config.media.portMin, config.media.portMax, share) },
    metrics: { listen: shiftPort(config.metrics.listen, share.index) },
    admin: { listen: shiftPort(config.admin.listen, share.index) },
  };
}

/** FNV-1a: stable across processes and restarts, unlike anything keyed on memory. */
export function stableHash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Whether this process keeps a binding's flow alive: every binding has exactly one such process. */
export const ownsFlow = (bindingId: string, share: EdgeShare): boolean => share.count === 1 || stableHash(bindingId) % share.count === share.index;

const RESTART_MIN_MS = 500;
const RESTART_MAX_MS = 30_000;
/** A process that ran this long before dying was not crash-looping: its next restart is quick again. */
const STABLE_MS = 60_000;
const STOP_GRACE_MS = 10_000;

/** What an edge process sends its supervisor once it can answer: connected, routes confirmed by drachtio-server. */
export interface ReadyMessage {
  type: 'keylatch-edge-ready';
  /** The process's start-up summary (the lines `keylatch edge is up` prints). */
  summary: Record<string, string>;
}

const isReadyMessage = (m: unknown): m is ReadyMessage =>
  typeof m === 'object' && m !== null && (m as ReadyMessage).type === 'keylatch-edge-ready' && typeof (m as ReadyMessage).summary === 'object';

/** In an edge process: tells the supervisor (over the IPC channel it forked this process with) that it can answer. */
export function reportReady(summary: Record<string, string>): void {
  const message: ReadyMessage = { type: 'keylatch-edge-ready', summary };
  process.send?.(message);
}

/**
 * One start-up summary for all the processes: a line the same in all of them once, a line that
 * differs (each process's relay port slice, its admin and metrics ports) with every value.
 */
export function combinedSummary(summaries: Array<Record<string, string>>, pids: Array<number | null>): Record<string, string> {
  const out: Record<string, string> = { 'edge processes': `${summaries.length} (pids ${pids.map((p) => p ?? '-').join(', ')}) on one drachtio-server` };
  for (const key of Object.keys(summaries[0] ?? {})) out[key] = [...new Set(summaries.map((s) => s[key] ?? ''))].join('; ');
  return out;
}

/**
 * An edge process ended before the edge was ever up: its own message (on the shared stderr)
 * says why. The supervisor then stops, with the process's exit code, as one edge process would:
 * a missing setting or an unreachable drachtio-server is not cured by starting it again, and an
 * orchestrator restarting the whole edge says so plainly instead of a loop of restarts.
 */
export class EdgeProcessFailedStart extends Error {
  override name = 'EdgeProcessFailedStart';
  constructor(readonly index: number, readonly code: number | null, readonly signal: NodeJS.Signals | null) {
    super(`edge process ${index} ended before the edge was up (${signal ?? `exit code ${code}`}): its message above says why`);
  }
}

export interface EdgeSupervisor {
  /** Pids of the running processes, by index (null while one is being restarted). */
  pids(): Array<number | null>;
  /**
   * Resolves, with each process's summary by index, once every process has reported ready
   * (reportReady) at least once. A process restarted later logs its own 'edge process ready'.
   * Rejects (EdgeProcessFailedStart) if one ends before that; the others are then stopped.
   */
  ready: Promise<Array<Record<string, string>>>;
  stop(): Promise<void>;
}

/**
 * Forks `count` edge processes running this same script with `argv`, each told its share in
 * SHARE_ENV, and restarts any that dies (backing off while one keeps dying at start-up).
 */
export function superviseEdgeProcesses(count: number, argv: string[], log: Logger): EdgeSupervisor {
  const children: Array<ChildProcess | null> = new Array<ChildProcess | null>(count).fill(null);
  const delay = new Array<number>(count).fill(RESTART_MIN_MS);
  const summaries = new Array<Record<string, string> | null>(count).fill(null);
  let allReady: (s: Array<Record<string, string>>) => void = () => undefined;
  let failedStart: (e: Error) => void = () => undefined;
  const ready = new Promise<Array<Record<string, string>>>((resolve, reject) => [allReady, failedStart] = [resolve, reject]);
  let up = false;
  let stopping = false;
  const siblingSecret = randomBytes(32).toString('base64url');
  const start = (index: number): void => {
    const startedAt = Date.now();
    // An IPC channel, so a child notices its supervisor's death (the channel closes) and exits,
    // and can say when it is ready.
    const child = fork(process.argv[1]!, ['edge', ...argv], { env: { ...process.env, [SHARE_ENV]: `${index}/${count}`, [SIBLING_SECRET_ENV]: siblingSecret }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children[index] = child;
    log.info({ edgeProcess: index, pid: child.pid }, 'edge process started');
    child.on('message', (m: unknown) => {
      if (!isReadyMessage(m) || children[index] !== child) return;
      summaries[index] = m.summary;
      log.info({ edgeProcess: index, pid: child.pid, afterMs: Date.now() - startedAt }, 'edge process ready');
      if (!up && summaries.every((s) => s !== null)) {
        up = true;
        allReady(summaries as Array<Record<string, string>>);
      }
    });
    child.on('exit', (code, signal) => {
      children[index] = null;
      // Until every process is up at once, one that died is not up.
      summaries[index] = null;
      if (stopping) return;
      if (!up) {
        failedStart(new EdgeProcessFailedStart(index, code, signal));
        void supervisor.stop();
        return;
      }
      if (Date.now() - startedAt > STABLE_MS) delay[index] = RESTART_MIN_MS;
      log.error({ edgeProcess: index, code, signal, restartInMs: delay[index] }, 'edge process died: restarting it');
      setTimeout(() => !stopping && start(index), delay[index]).unref();
      delay[index] = Math.min(delay[index]! * 2, RESTART_MAX_MS);
    });
  };
  const supervisor: EdgeSupervisor = {
    pids: () => children.map((c) => c?.pid ?? null),
    ready,
    async stop() {
      stopping = true;
      await Promise.all(children.map((c) => {
        if (!c || c.exitCode !== null) return Promise.resolve();
        return new Promise<void>((resolve) => {
          const kill = setTimeout(() => c.kill('SIGKILL'), STOP_GRACE_MS);
          c.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          c.kill('SIGTERM');
        });
      }));
    },
  };
  for (let i = 0; i < count; i++) start(i);
  return supervisor;
}
