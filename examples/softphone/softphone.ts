/**
 * A small softphone on SIP.js and the keylatch plugin: it registers over WSS (or TLS), places or answers
 * a call, plays a WAV file or a tone, records what it hears, and prints live stats.
 * Lines on stdin drive it: call <uri> | answer | hangup | hold | resume | dtmf <digits> | stats | quit.
 * With --json every event is one JSON line, which is how the tests read it.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { Invitation, Inviter, Registerer, RegistererState, SessionState, UserAgent, type Session } from 'sip.js';
import {
  ConnectionTransport,
  KEYLATCH_CONTACT_PARAMS,
  NodeTlsTransport,
  NodeWebSocketTransport,
  keylatchSessionDescriptionHandlerFactory,
  mediaOf,
  type MediaSession,
} from '../../plugins/sipjs/src';

const { values: opt } = parseArgs({
  options: {
    server: { type: 'string' },
    aor: { type: 'string' },
    user: { type: 'string' },
    password: { type: 'string' },
    ca: { type: 'string' },
    bind: { type: 'string', default: '0.0.0.0' },
    'sdp-address': { type: 'string' },
    'require-key': { type: 'boolean', default: false },
    // Keep media on the relay even when keylatch names the other client (no direct media).
    'relay-only': { type: 'boolean', default: false },
    // In a keylatch room: take every speaker's stream and mix here instead of at the relay.
    'room-forward': { type: 'boolean', default: false },
    call: { type: 'string' },
    answer: { type: 'boolean', default: false },
    reject: { type: 'string' },
    play: { type: 'string' },
    tone: { type: 'string' },
    record: { type: 'string' },
    'stats-ms': { type: 'string', default: '1000' },
    json: { type: 'boolean', default: false },
  },
});

function say(event: string, data: Record<string, unknown> = {}): void {
  if (opt.json) process.stdout.write(`${JSON.stringify({ event, at: Date.now(), ...data })}\n`);
  else process.stdout.write(`${new Date().toISOString().slice(11, 23)} ${event} ${Object.keys(data).length ? JSON.stringify(data) : ''}\n`);
}

if (!opt.server || !opt.aor) {
  process.stderr.write('usage: softphone --server wss://host:port|tls://host:port --aor sip:me@domain [--user u --password p] [--ca ca.pem]\n' +
    '                 [--call sip:them@domain | --answer | --reject 486] [--play f.wav | --tone 1000] [--record out.wav] [--relay-only] [--room-forward] [--json]\n');
  process.exit(2);
}

let current: Session | null = null;
let statsTimer: NodeJS.Timeout | null = null;
let registerer: Registerer | null = null;
let stopping = false;

function wireMedia(media: MediaSession): void {
  media.on('authenticated', (mapping) => say('media-authenticated', { mapping }));
  media.on('mapping', (socket, mapping, changed) => {
    if (!changed) return;
    say('mapping-changed', { socket, mapping });
    // Our NAT rebound, and the signalling flow may have gone with it: a probe closes a dead
    // connection at once, and onDisconnect then opens a new flow and registers it.
    if (socket === 'rtp' && ua.transport instanceof ConnectionTransport) ua.transport.probe();
  });
  media.on('first-media', (ms) => say('first-media', { ms }));
  media.on('path', (path, peer, reason) => say('media-path', { path, peer, reason, switches: media.stats().path.switches }));
  media.on('dtmf', (digit, durationMs) => say('dtmf', { digit, durationMs }));
  media.on('failed', (error) => say('media-failed', { code: error.code, message: error.message }));
  try {
    if (opt.play) media.play({ wav: opt.play }, { loop: true });
    else if (opt.tone) media.play({ toneHz: Number(opt.tone) }, { loop: true });
    if (opt.record) media.record(opt.record);
  } catch (e) {
    say('error', { message: (e as Error).message });
  }
}

function track(session: Session, direction: 'out' | 'in'): void {
  current = session;
  session.stateChange.addListener((state) => {
    if (state === SessionState.Established) {
      say('established', { direction });
      statsTimer = setInterval(() => printStats(), Number(opt['stats-ms']));
    }
    if (state === SessionState.Terminated) {
      printStats();
      if (statsTimer) clearInterval(statsTimer);
      if (current === session) current = null;
      say('ended', { direction });
    }
  });
}

function printStats(): void {
  const media = current ? mediaOf(current) : undefined;
  if (media) say('stats', { ...media.stats() });
}

const overTls = opt.server.startsWith('tls:');
const ua = new UserAgent({
  uri: UserAgent.makeURI(opt.aor),
  transportConstructor: overTls ? NodeTlsTransport : NodeWebSocketTransport,
  contactParams: { transport: overTls ? 'tls' : 'ws' },
  transportOptions: { server: opt.server, tls: opt.ca ? { ca: readFileSync(opt.ca) } : {}, keepAliveIntervalMs: 10000 },
  authorizationUsername: opt.user,
  authorizationPassword: opt.password,
  logBuiltinEnabled: false,
  sessionDescriptionHandlerFactory: keylatchSessionDescriptionHandlerFactory({
    bindAddress: opt.bind,
    sdpAddress: opt['sdp-address'] ?? (opt.bind === '0.0.0.0' ? '127.0.0.1' : opt.bind),
    requireKey: opt['require-key'],
    direct: !opt['relay-only'],
    roomForward: opt['room-forward'],
    onMedia: wireMedia,
  }),
  delegate: {
    onInvite(invitation: Invitation): void {
      say('incoming', { from: invitation.remoteIdentity.uri.toString() });
      if (opt.reject) {
        invitation.reject({ statusCode: Number(opt.reject) }).then(() => say('rejected', { status: Number(opt.reject) }), (e: Error) => say('error', { message: e.message }));
        return;
      }
      track(invitation, 'in');
      if (opt.answer) accept(invitation);
    },
    onDisconnect(error?: Error): void {
      say('disconnected', { message: error?.message ?? null });
      // A NAT rebinding or a restart of the edge closes the WebSocket: open a new flow and
      // register it, so calls find us again. Media is unaffected; it has its own path.
      if (error && !stopping) void reconnect(1);
    },
  },
});

function accept(invitation: Invitation): void {
  invitation.accept().catch((e: Error) => say('error', { message: e.message }));
}

function call(target: string): void {
  const uri = UserAgent.makeURI(target);
  if (!uri) return say('error', { message: `not a SIP URI: ${target}` });
  const inviter = new Inviter(ua, uri);
  track(inviter, 'out');
  inviter
    .invite({ requestDelegate: { onReject: (r) => say('call-refused', { status: r.message.statusCode, reason: r.message.reasonPhrase }) } })
    .catch((e: Error) => say('error', { message: e.message }));
}

function hold(on: boolean): void {
  if (!current || current.state !== SessionState.Established) return say('error', { message: 'no established call' });
  current
    .invite({ sessionDescriptionHandlerOptions: { hold: on } as object, requestDelegate: { onAccept: () => say(on ? 'held' : 'resumed') } })
    .catch((e: Error) => say('error', { message: e.message }));
}

function hangup(): void {
  const s = current;
  if (!s) return;
  if (s instanceof Inviter && s.state !== SessionState.Established) void s.cancel().catch(() => undefined);
  else if (s instanceof Invitation && s.state !== SessionState.Established) void s.reject().catch(() => undefined);
  else void s.bye().catch(() => undefined);
}

function register(): void {
  registerer
    ?.register({
      requestDelegate: {
        onAccept: () => say('registered'),
        onReject: (r) => say('register-failed', { status: r.message.statusCode }),
      },
    })
    .catch((e: Error) => say('error', { message: e.message }));
}

async function reconnect(attempt: number): Promise<void> {
  await new Promise((r) => setTimeout(r, Math.min(200 * attempt, 5000)));
  try {
    await ua.reconnect();
    say('reconnected', { attempt });
    register();
  } catch {
    if (!stopping) void reconnect(attempt + 1);
  }
}

async function main(): Promise<void> {
  await ua.start();
  say('connected', { server: opt.server });
  const registration = new Registerer(ua, { expires: 300, extraContactHeaderParams: KEYLATCH_CONTACT_PARAMS });
  registerer = registration;
  registration.stateChange.addListener((s) => s !== RegistererState.Registered && say('registration', { state: s }));
  register();
  if (opt.call) call(opt.call);
  const commands = createInterface({ input: process.stdin });
  commands.on('line', (line) => {
    const [cmd, arg] = line.trim().split(/\s+/, 2);
    if (cmd === 'call' && arg) call(arg);
    else if (cmd === 'answer' && current instanceof Invitation) accept(current);
    else if (cmd === 'hangup') hangup();
    else if (cmd === 'hold' || cmd === 'resume') hold(cmd === 'hold');
    else if (cmd === 'dtmf' && arg && current) void mediaOf(current)?.sendDtmf(arg).then((ok) => say('dtmf-sent', { digits: arg, ok }));
    else if (cmd === 'stats') printStats();
    else if (cmd === 'register') register();
    else if (cmd === 'quit') void quit(registration);
    else if (cmd) say('error', { message: `unknown command: ${line}` });
  });
  commands.on('close', () => void quit(registration));
}

async function quit(registration: Registerer): Promise<void> {
  stopping = true;
  hangup();
  await registration.unregister().catch(() => undefined);
  await ua.stop().catch(() => undefined);
  say('stopped');
  process.exit(0);
}

process.on('unhandledRejection', (e) => say('error', { message: String(e) }));
main().catch((e: Error) => {
  say('error', { message: e.message });
  process.exit(1);
});
