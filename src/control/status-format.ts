/** The human view of a status snapshot: aligned tables that fit a terminal, for `keylatch status`. */
import type { RoomInfo } from '../rooms/room';
import type { StatusSnapshot } from './status';

/** Left-aligned columns, two spaces apart; every cell is already a string. */
export function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)];
}

/** "4s ago", "3m10s ago", "never". */
export function ago(ms: number, now: number): string {
  if (!ms) return 'never';
  return `${duration(Math.max(0, now - ms))} ago`;
}

export function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** The start-up summary's key/value lines, aligned (stderr at start-up, and the top of `keylatch status`). */
export function summaryLines(summary: Record<string, string>): string[] {
  const width = Math.max(0, ...Object.keys(summary).map((k) => k.length));
  return Object.entries(summary).map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
}

/** Calls on pooled relay nodes: per call its node, per leg what the node reports. */
function pooledLines(p: NonNullable<StatusSnapshot['pooledCalls']>, now: number): string[] {
  const out = [`Calls on relay nodes: ${p.total}${p.shown.length < p.total ? ` (first ${p.shown.length} shown)` : ''}`];
  const rows = p.shown.flatMap((c) => {
    const first = [c.callId, `${c.relay}${c.hairpin ? ' (hairpin)' : ''}`];
    if (!c.legs) return [[...first, '-', '-', c.error ?? 'no answer', '-', '-', '-', '-']];
    return c.legs.map((l, i) => [
      ...(i === 0 ? first : ['', '']),
      l.tag || '(none yet)',
      l.policy ?? '-',
      (l.latchState ?? '-') + (c.timedOut && i === 0 ? ' (media timed out)' : ''),
      l.latched ?? '-',
      String(l.packetsIn),
      l.packetsOut === null ? '-' : String(l.packetsOut),
      l.lastSeen ? ago(l.lastSeen, now) : 'never',
    ]);
  });
  if (rows.length) out.push(...table(['CALL-ID', 'RELAY', 'LEG TAG', 'POLICY', 'LATCH', 'LATCHED ON', 'PKTS IN', 'PKTS OUT', 'LAST MEDIA'], rows).map((l) => `  ${l}`));
  return out;
}

export function formatStatus(s: StatusSnapshot): string {
  const out = [`keylatch ${s.service}, up ${duration(s.uptimeSec * 1000)}`, ...summaryLines(s.summary), ''];
  if (s.bindings) {
    const b = s.bindings;
    out.push(`Bindings: ${b.total}${b.shown.length < b.total ? ` (first ${b.shown.length} shown, soonest to expire first)` : ''}`);
    if (b.shown.length) {
      out.push(...table(
        ['AOR', 'TRANSPORT', 'SOURCE', 'NAT TESTS', 'KEEPALIVE', 'LAST SEEN', 'EXPIRES'],
        b.shown.map((x) => [
          x.aor,
          x.transport + (x.keylatch ? '+key' : ''),
          x.source,
          x.natted ? x.natTests.join(',') || 'natted' : '-',
          x.keepaliveIntervalMs === null ? '-' : duration(x.keepaliveIntervalMs),
          ago(x.lastSeen, s.now),
          x.expires > s.now ? `in ${duration(x.expires - s.now)}` : 'lapsed',
        ]),
      ).map((l) => `  ${l}`));
    }
    out.push('');
  }
  if (s.pooledCalls) out.push(...pooledLines(s.pooledCalls, s.now), '');
  const direct = s.calls.filter((c) => c.legs.length > 0 && c.legs.every((l) => l.mediaPath === 'direct')).length;
  // With a pool these are only the calls on the edge's own relay: a bare "Calls: 0" under the
  // pooled calls read as if the edge carried none.
  out.push(`${s.pooledCalls ? "Calls on the edge's own relay" : 'Calls'}: ${s.calls.length}${direct ? ` (${direct} with media direct between their clients)` : ''}`);
  if (s.calls.length) {
    const rows = s.calls.flatMap((c) => c.legs.map((l, i) => [
      i === 0 ? c.callId : '',
      l.tag ?? '(none yet)',
      l.policy,
      l.latchState,
      l.latched ?? '-',
      l.mediaPath,
      String(l.packetsIn),
      String(l.packetsOut),
      l.packetsIn === 0 ? 'never' : ago(l.lastSeen, s.now),
    ]));
    out.push(...table(['CALL-ID', 'LEG TAG', 'POLICY', 'LATCH', 'LATCHED ON', 'MEDIA', 'PKTS IN', 'PKTS OUT', 'LAST MEDIA'], rows).map((l) => `  ${l}`));
  }
  if (s.rooms) out.push('', ...roomLines(s.rooms));
  return `${out.join('\n')}\n`;
}

/** Rooms and their participants, one row each (`keylatch status` and `keylatch rooms`). */
export function roomLines(rooms: RoomInfo[]): string[] {
  const rows = rooms.flatMap((r) => r.participants.map((p, i) => [
    i === 0 ? r.name + (r.broadcast ? ' (broadcast)' : '') : '',
    p.id,
    p.who,
    `${p.role}/${p.mode}`,
    `${p.policy}:${p.latchState}`,
    p.latched ?? '-',
    p.muted ? 'muted' : p.talking ? 'talking' : '-',
    String(p.counters?.packetsIn ?? 0),
    String((p.counters?.sent ?? 0) + (p.counters?.forwarded ?? 0)),
  ]));
  return [`Rooms: ${rooms.length}`, ...(rows.length ? table(['ROOM', 'PARTICIPANT', 'WHO', 'ROLE/GETS', 'LATCH', 'LATCHED ON', 'STATE', 'PKTS IN', 'PKTS OUT'], rows).map((l) => `  ${l}`) : [])];
}
