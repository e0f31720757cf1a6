/**
 * The docker-compose test call (`docker compose --profile demo run --rm testcall`): the
 * caller (examples/softphone, SIP.js + the keylatch plugin) calls the callee (baresip) through
 * keylatch and the demo PBX, each playing its own tone. It prints whether each side heard the
 * other's tone, the time to first media, and the relay's latch state for each leg, then exits
 * 0 when all of that holds and 1 when not.
 *
 * The phones run in their own containers behind NAT routers; this program reaches them only
 * through files in the shared demo-run volume (the caller's command and event files, the
 * callee's recordings) and keylatch through its 127.0.0.1 endpoints.
 */
import { appendFileSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { readWav } from '../../plugins/sipjs/src';
import { STATUS_PATH, type LegStatus, type StatusSnapshot } from '../../src/control/status';
import { dominantTone, heardTone, type ToneFinding } from './tone';

const env = (name: string, fallback: string): string => process.env[name] || fallback;
const DEMO_DIR = env('DEMO_DIR', '/run/demo');
const CALLER = env('CALLER', 'alice');
const CALLEE = env('CALLEE', 'sip:bob@keylatch.demo');
const CALLEE_USER = /^sips?:([^@]+)@/.exec(CALLEE)?.[1] ?? 'bob';
const CALLER_HZ = Number(env('CALLER_TONE_HZ', '1000'));
const CALLEE_HZ = Number(env('CALLEE_TONE_HZ', '600'));
const TALK_MS = Number(env('TALK_SECONDS', '4')) * 1000;
/**
 * Set (seconds), each recording is judged by its last that many seconds before the final one,
 * not by its middle: what was heard late in a call, e.g. after its relay node was killed.
 */
const TAIL_SEC = Number(env('ANALYSE_TAIL_SECONDS', '0'));
const ADMIN_URL = env('KEYLATCH_ADMIN_URL', 'http://127.0.0.1:9465');
const METRICS_URL = env('KEYLATCH_METRICS_URL', 'http://127.0.0.1:9464');
const callerDir = path.join(DEMO_DIR, CALLER);
const calleeDir = path.join(DEMO_DIR, CALLEE_USER);

type Event = Record<string, unknown> & { event: string };

/** What the test call reports of a leg: the part of /status's legs that /metrics can also give. */
export type LegReport = Pick<LegStatus, 'tag' | 'policy' | 'latchState' | 'latched' | 'packetsIn' | 'packetsOut'>;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The caller's JSON-line events (its container tees them to a file), from line `from` on. */
function callerEvents(from = 0): Event[] {
  const file = path.join(callerDir, 'events.jsonl');
  if (!existsSync(file)) return [];
  const out: Event[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n').slice(from)) {
    try {
      const e = JSON.parse(line) as Event;
      if (typeof e.event === 'string') out.push(e);
    } catch {
      /* a partly written line, or not ours */
    }
  }
  return out;
}

const eventLines = (): number => {
  const file = path.join(callerDir, 'events.jsonl');
  return existsSync(file) ? readFileSync(file, 'utf8').split('\n').length - 1 : 0;
};

async function until<T>(what: string, timeoutMs: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(200);
  }
}

async function getText(url: string): Promise<{ status: number; body: string } | null> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: await res.text() };
  } catch {
    return null;
  }
}

/** keylatch's admin /status, or null when this keylatch has none (or it is not reachable). */
async function status(): Promise<StatusSnapshot | null> {
  const res = await getText(`${ADMIN_URL}${STATUS_PATH}`);
  if (!res || res.status !== 200) return null;
  try {
    return JSON.parse(res.body) as StatusSnapshot;
  } catch {
    return null;
  }
}

/** Legs read from Prometheus /metrics when there is no /status: policy, proof and packet counts. */
export function legsFromMetrics(text: string): LegReport[] {
  const legs = new Map<string, LegReport & { authenticated: boolean }>();
  for (const line of text.split('\n')) {
    const m = /^keylatch_leg_(packets_received|packets_sent|authenticated)\{call_id="([^"]*)",tag="([^"]*)",policy="([^"]*)"\} (\S+)$/.exec(line);
    if (!m) continue;
    const [, metric, callId, tag, policy, value] = m as unknown as [string, string, string, string, string, string];
    const key = `${callId} ${tag}`;
    const leg = legs.get(key) ?? { tag: tag || null, policy, latchState: '', latched: null, packetsIn: 0, packetsOut: 0, authenticated: false };
    if (metric === 'packets_received') leg.packetsIn = Number(value);
    if (metric === 'packets_sent') leg.packetsOut = Number(value);
    if (metric === 'authenticated') leg.authenticated = value === '1';
    legs.set(key, leg);
  }
  // /metrics has no latch state; the relay sends to a leg only once it has latched onto it.
  return [...legs.values()].map(({ authenticated, ...l }) => ({
    ...l,
    latchState: l.policy === 'key' ? (authenticated ? 'authenticated' : 'unproved') : l.packetsOut > 0 ? 'latched (sending)' : 'not latched',
  }));
}

/** The callee is registered: in keylatch's bindings, or by its own log when there is no /status. */
async function calleeRegistered(): Promise<string | undefined> {
  const s = await status();
  if (s?.bindings) {
    const b = s.bindings.shown.find((x) => x.aor.includes(`:${CALLEE_USER}@`));
    return b ? `${b.transport} from ${b.source}` : undefined;
  }
  const log = path.join(calleeDir, 'log');
  return existsSync(log) && /200 OK.*binding/.test(readFileSync(log, 'utf8')) ? 'baresip: 200 OK' : undefined;
}

/** What the callee heard: baresip's newest decoder recording (sndfile) made since `since`. */
function calleeRecording(since: number): string | undefined {
  if (!existsSync(calleeDir)) return undefined;
  const dumps = readdirSync(calleeDir)
    .filter((f) => f.startsWith('dump-') && f.includes('dec') && f.endsWith('.wav'))
    .map((f) => path.join(calleeDir, f))
    .filter((f) => statSync(f).mtimeMs >= since - 1000)
    .sort((a, b) => statSync(a).mtimeMs - statSync(b).mtimeMs);
  return dumps.at(-1);
}

function describeTone(f: ToneFinding | null, expect: number): string {
  if (!f) return 'no recording';
  return `${f.peakHz} Hz (expected ${expect}), purity ${f.purity.toFixed(2)}, rms ${Math.round(f.rms)}`;
}

/**
 * The tone a recording holds (its middle, or with ANALYSE_TAIL_SECONDS its tail) and how many
 * seconds it holds: recorders keep what arrived, so a call whose audio stopped records less.
 */
function analyse(file: string | undefined, expect: number): { finding: ToneFinding | null; heard: boolean; seconds?: number; error?: string } {
  if (!file || !existsSync(file)) return { finding: null, heard: false, error: 'no recording' };
  try {
    const samples = readWav(file);
    const rate = 8000;
    const block = TAIL_SEC > 0 ? samples.subarray(Math.max(0, samples.length - (TAIL_SEC + 1) * rate), Math.max(0, samples.length - rate)) : samples;
    const finding = dominantTone(block, rate, TAIL_SEC > 0 ? TAIL_SEC : 2);
    return { finding, heard: heardTone(finding, expect), seconds: Math.round((samples.length / rate) * 10) / 10 };
  } catch (e) {
    return { finding: null, heard: false, error: (e as Error).message };
  }
}

async function main(): Promise<number> {
  const say = (line: string): void => void process.stdout.write(`testcall: ${line}\n`);
  if (process.env.PBX_URI && process.env.DEMO_PBX && !process.env.PBX_URI.includes(process.env.DEMO_PBX)) {
    say(`warning: keylatch's PBX is ${process.env.PBX_URI}, not the demo PBX ${process.env.DEMO_PBX}; the call goes there`);
  }
  await until(`${CALLER} registered`, 60000, () => callerEvents().find((e) => e.event === 'registered'));
  say(`${CALLER} registered (SIP.js + keylatch plugin)`);
  const callee = await until(`${CALLEE_USER} registered`, 60000, calleeRegistered);
  say(`${CALLEE_USER} registered (${callee})`);

  const from = eventLines();
  const started = Date.now();
  appendFileSync(path.join(callerDir, 'commands'), `call ${CALLEE}\n`);
  say(`${CALLER} calls ${CALLEE}`);
  const next = (event: string, ms: number): Promise<Event> =>
    until(`${CALLER}: ${event}`, ms, () => {
      const evs = callerEvents(from);
      const failed = evs.find((e) => e.event === 'call-refused' || e.event === 'media-failed' || (e.event === 'ended' && event !== 'ended'));
      if (failed) throw new Error(`${CALLER}: ${JSON.stringify(failed)}`);
      return evs.find((e) => e.event === event);
    });
  const established = await next('established', 20000);
  say(`established after ${Number(established.at) - started} ms`);
  const firstMedia = await next('first-media', 10000);
  const auth = await next('media-authenticated', 10000).catch(() => null);
  await sleep(TALK_MS);

  // The relay's view, mid-call: /status when this keylatch has it, else /metrics.
  let source = `${ADMIN_URL}${STATUS_PATH}`;
  let legs: LegReport[] = [];
  const s = await status();
  const legsFromStatus = s !== null;
  // Calls on pooled relay nodes (media.relays) are listed apart, legs as their node reports
  // them; both halves of a hairpinned conversation name the one relay call they share.
  const pooled = [...new Map((s?.pooledCalls?.shown ?? []).map((c) => [c.relayCallId, c])).values()];
  const legsOn = [...new Set(pooled.map((c) => c.relay))];
  if (s) legs = [...s.calls.flatMap((c) => c.legs), ...pooled.flatMap((c) => (c.legs ?? []).map((l) => ({ ...l, policy: l.policy ?? 'guarded', latchState: l.latchState ?? '-', packetsOut: l.packetsOut ?? 0 })))];
  else {
    source = `${METRICS_URL}/metrics (keylatch's admin endpoint did not answer; latch state inferred)`;
    const m = await getText(`${METRICS_URL}/metrics`);
    legs = m?.status === 200 ? legsFromMetrics(m.body) : [];
  }

  const ended = callerEvents(from).filter((e) => e.event === 'ended').length;
  appendFileSync(path.join(callerDir, 'commands'), 'hangup\n');
  await until(`${CALLER}: ended`, 10000, () => (callerEvents(from).filter((e) => e.event === 'ended').length > ended ? true : undefined));
  await sleep(1000); // baresip closes its recording when the BYE reaches it

  const callerHeard = analyse(path.join(callerDir, 'heard.wav'), CALLEE_HZ);
  const calleeHeard = analyse(calleeRecording(started), CALLER_HZ);
  const keyLeg = legs.find((l) => l.policy === 'key');
  const guardedLeg = legs.find((l) => l.policy === 'guarded');
  const latchOk = legs.length >= 2 && legs.every((l) => l.packetsIn > 0 && l.packetsOut > 0) && !!keyLeg && /authenticated/.test(keyLeg.latchState) && !!guardedLeg;
  const pass = callerHeard.heard && calleeHeard.heard && latchOk;

  say('---- result ----');
  const recorded = (h: { seconds?: number }): string => (h.seconds === undefined ? '' : `; ${h.seconds} s recorded${TAIL_SEC > 0 ? `, judged by its last ${TAIL_SEC} s` : ''}`);
  say(`${CALLER} heard ${CALLEE_USER}: ${callerHeard.heard ? 'yes' : 'NO'} - ${callerHeard.error ?? describeTone(callerHeard.finding, CALLEE_HZ)}${recorded(callerHeard)}`);
  say(`${CALLEE_USER} heard ${CALLER}: ${calleeHeard.heard ? 'yes' : 'NO'} - ${calleeHeard.error ?? describeTone(calleeHeard.finding, CALLER_HZ)}${recorded(calleeHeard)}`);
  say(`time to first media: ${String(firstMedia.ms)} ms (${CALLER}, from the answer to the first packet heard)`);
  if (auth) say(`${CALLER}'s key proved; relay saw her at ${JSON.stringify((auth.mapping as { rtp?: unknown }).rtp ?? auth.mapping)}`);
  say(`relay legs, from ${source}${legsOn.length ? ` (on relay node ${legsOn.join(', ')})` : ''}:`);
  if (!legs.length) say('  none');
  for (const l of legs) say(`  ${l.policy.padEnd(7)} ${l.latchState.padEnd(18)} latched=${l.latched ?? '-'} in=${l.packetsIn} out=${l.packetsOut} tag=${l.tag ?? '-'}`);
  say(pass ? 'PASS: audio both ways through keylatch' : 'FAIL');
  const callerMapping = (auth?.mapping as { rtp?: unknown } | undefined)?.rtp ?? null;
  process.stdout.write(`TESTCALL ${JSON.stringify({ pass, callerHeard, calleeHeard, firstMediaMs: firstMedia.ms, callerMapping, legs, legsFrom: source, legsFromStatus, legsOn })}\n`);
  return pass ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e: Error) => {
      process.stdout.write(`testcall: FAIL: ${e.message}\n`);
      process.exit(1);
    },
  );
}
