/**
 * Which process holds a UDP socket, read from /proc: the relay-worker tests use it to find the
 * worker a call's ports live in. Each process's own net/udp is read, so a process in another
 * network namespace is seen in its namespace.
 */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/** The inodes of the UDP sockets bound to a local port, as `pid`'s network namespace lists them. */
function udpInodes(pid: number, port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  return readFileSync(`/proc/${pid}/net/udp`, 'utf8').split('\n').slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hex}`))
    .map((f) => f[9]!);
}

/** Does this process hold the socket bound to this port? */
export function holdsPort(pid: number, port: number): boolean {
  const inodes = new Set(udpInodes(pid, port).map((i) => `socket:[${i}]`));
  return readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try {
      return inodes.has(readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      return false;
    }
  });
}

/** The direct children of a process. */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}
