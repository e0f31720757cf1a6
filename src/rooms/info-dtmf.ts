/**
 * DTMF sent in SIP INFO inside a room call (docs/rooms.md): the two bodies phones use,
 *   application/dtmf-relay   "Signal=5\r\nDuration=160"  (Cisco's; Duration in ms, optional)
 *   application/dtmf         "5"
 * A key is reported as the room's DTMF event (as RFC 4733 events from the media are) and never
 * mixed. Anything else is named here so the dialog can answer 400 (a DTMF type with a body we
 * cannot read) or 415 (a type we do not take); an empty INFO is a keepalive and answers 200.
 */
import { DTMF_KEYS } from './room';

export const INFO_DTMF_TYPES = ['application/dtmf-relay', 'application/dtmf'] as const;

/** Far above any real DTMF body: more is not a key press, whatever it says. */
const MAX_BODY = 512;
/** A key held longer than a minute is not a key press either. */
const MAX_DURATION_MS = 60000;

export type InfoDtmf =
  | { kind: 'key'; key: string; durationMs: number | null }
  | { kind: 'empty' }
  | { kind: 'malformed'; why: string }
  | { kind: 'unsupported' };

export function parseInfoDtmf(contentType: string | undefined, body: string | undefined): InfoDtmf {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  const text = (body ?? '').trim();
  if (!type && !text) return { kind: 'empty' };
  if (!(INFO_DTMF_TYPES as readonly string[]).includes(type)) return { kind: 'unsupported' };
  if (!text) return { kind: 'malformed', why: `empty ${type} body` };
  if (text.length > MAX_BODY) return { kind: 'malformed', why: `${type} body too long` };
  if (type === 'application/dtmf') {
    const key = keyOf(text);
    return key ? { kind: 'key', key, durationMs: null } : { kind: 'malformed', why: 'application/dtmf body is not one key (0-9, *, #, A-D)' };
  }
  const fields = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    if (!line.trim()) continue;
    const m = /^\s*([A-Za-z-]+)\s*=\s*(\S+)\s*$/.exec(line);
    if (!m) return { kind: 'malformed', why: 'dtmf-relay lines are Name=Value' };
    fields.set(m[1]!.toLowerCase(), m[2]!);
  }
  const signal = fields.get('signal');
  if (signal === undefined) return { kind: 'malformed', why: 'dtmf-relay without Signal=' };
  const key = keyOf(signal);
  if (!key) return { kind: 'malformed', why: 'dtmf-relay Signal is not a key (0-9, *, #, A-D, or 10-15)' };
  const duration = fields.get('duration');
  if (duration !== undefined && !(/^\d{1,6}$/.test(duration) && Number(duration) <= MAX_DURATION_MS)) return { kind: 'malformed', why: 'dtmf-relay Duration is not milliseconds' };
  return { kind: 'key', key, durationMs: duration === undefined ? null : Number(duration) };
}

/** "5", "*", "b", or an RFC 4733 event code as some phones send it ("10" is *, "11" is #, 12-15 A-D). */
function keyOf(v: string): string | null {
  const up = v.toUpperCase();
  if (up.length === 1 && DTMF_KEYS.includes(up)) return up;
  return /^1[0-5]$/.test(v) ? DTMF_KEYS[Number(v)]! : null;
}
