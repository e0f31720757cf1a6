/**
 * A minimal SIP phone over UDP for the namespace tests, run as a child process inside a
 * client namespace. It registers at start (and on SIGUSR1 or {"cmd":"register"}), answers
 * OPTIONS and INVITE, places calls on {"cmd":"call","to":...}, holds ({"cmd":"hold"}),
 * resumes and hangs up. While a call is up it sends a 1 kHz PCMU tone every 20 ms from one
 * RTP port and reports what it hears. Every event is a JSON line on stdout.
 */
import dgram from 'node:dgram';
import readline from 'node:readline';
import { decodeG711, encodeG711, rms, tone } from '../../src/codec/g711';

interface Args {
  localIp: string;
  port: number;
  edge: { address: string; port: number };
  user: string;
  durationMs: number;
  rtpPort?: number;
}
const args = JSON.parse(process.argv[2]!) as Args;
const rtpPort = args.rtpPort ?? 4000;
const out = (o: object): void => void process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
const socket = dgram.createSocket('udp4');
const media = dgram.createSocket('udp4');
const regCallId = `natphone-${process.pid}`;
const myTag = `np${process.pid}`;
let cseq = 0;

interface Dialog {
  callId: string;
  localTag: string;
  remoteTag: string;
  local: string; // our From/To header value
  remote: string;
  target: string; // the peer's Contact URI
  cseq: number;
  outgoing: boolean;
  remoteRtp: { address: string; port: number } | null;
  direction: 'sendrecv' | 'sendonly';
  /** Route headers for in-dialog requests: the Record-Route set a record-routing proxy built. */
  routes: string[];
}
let dialog: Dialog | null = null;
let pendingInvite: { callId: string; cseq: number; branch: string; to: string; sdp: string } | null = null;
const heard = { packets: 0, loudPackets: 0, lastRms: 0, sources: new Set<string>(), ssrcs: new Set<number>() };

const header = (msg: string, name: string): string => new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(msg)?.[1]?.trim() ?? '';
const uriOf = (v: string): string => (/<([^>]*)>/.exec(v)?.[1] ?? v.split(';')[0]!).trim();
const tagOf = (v: string): string => /;tag=([^;>\s]+)/.exec(v)?.[1] ?? '';
const bodyOf = (msg: string): string => msg.slice(msg.indexOf('\r\n\r\n') + 4);
const recordRouteLines = (msg: string): string[] => msg.split('\r\n').filter((l) => /^Record-Route:/i.test(l));
/** Every Record-Route entry in order (several per header line allowed). */
const recordRoutes = (msg: string): string[] => recordRouteLines(msg).flatMap((l) => l.slice(l.indexOf(':') + 1).split(',').map((r) => r.trim()));
const contact = `<sip:${args.user}@${args.localIp}:${args.port}>`;
const send = (text: string): void => void socket.send(text, args.edge.port, args.edge.address);

function sdp(direction: string): string {
  return [
    'v=0', `o=- ${process.pid} ${Date.now()} IN IP4 ${args.localIp}`, 's=-', `c=IN IP4 ${args.localIp}`, 't=0 0',
    `m=audio ${rtpPort} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000', `a=${direction}`, '',
  ].join('\r\n');
}

function remoteRtpOf(body: string): { address: string; port: number } | null {
  const c = /^c=IN IP4 (\S+)/m.exec(body)?.[1];
  const m = /^m=audio (\d+)/m.exec(body)?.[1];
  return c && m && c !== '0.0.0.0' ? { address: c, port: Number(m) } : null;
}

function request(method: string, ruri: string, headers: string[], body = '', routes: string[] = []): string {
  const lines = [`${method} ${ruri} SIP/2.0`, `Via: SIP/2.0/UDP ${args.localIp}:${args.port};branch=z9hG4bK${Date.now()}${++cseq};rport`, 'Max-Forwards: 70', ...routes.map((r) => `Route: ${r}`), ...headers];
  if (body) lines.push('Content-Type: application/sdp');
  return `${lines.join('\r\n')}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

function register(): void {
  send(request('REGISTER', 'sip:keylatch.test', [
    `From: <sip:${args.user}@keylatch.test>;tag=${myTag}`, `To: <sip:${args.user}@keylatch.test>`, `Call-ID: ${regCallId}`,
    `CSeq: ${cseq + 1} REGISTER`, `Contact: ${contact}`, 'Expires: 3600',
  ]));
}

function inDialog(method: string, body = ''): void {
  if (!dialog) return;
  dialog.cseq++;
  const [from, to] = [`${dialog.local};tag=${dialog.localTag}`, `${dialog.remote};tag=${dialog.remoteTag}`];
  send(request(method, dialog.target, [`From: ${from}`, `To: ${to}`, `Call-ID: ${dialog.callId}`, `CSeq: ${dialog.cseq} ${method}`, `Contact: ${contact}`], body, dialog.routes));
}

function call(to: string): void {
  const callId = `npcall-${process.pid}-${Date.now()}`;
  const body = sdp('sendrecv');
  const text = request('INVITE', to, [`From: <sip:${args.user}@keylatch.test>;tag=${myTag}`, `To: <${to}>`, `Call-ID: ${callId}`, `CSeq: 1 INVITE`, `Contact: ${contact}`], body);
  pendingInvite = { callId, cseq: 1, branch: '', to, sdp: body };
  send(text);
}

function reply(req: string, status: string, body = ''): void {
  const to = header(req, 'To');
  const lines = [
    `SIP/2.0 ${status}`, ...req.split('\r\n').filter((l) => /^Via:/i.test(l)), `From: ${header(req, 'From')}`,
    `To: ${tagOf(to) ? to : `${to};tag=${myTag}`}`, `Call-ID: ${header(req, 'Call-ID')}`, `CSeq: ${header(req, 'CSeq')}`, `Contact: ${contact}`,
    ...recordRouteLines(req), // a UAS copies the Record-Route set into its responses
  ];
  if (body) lines.push('Content-Type: application/sdp');
  socket.send(`${lines.join('\r\n')}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, lastFrom[0], lastFrom[1]);
}

let lastFrom: [number, string] = [args.edge.port, args.edge.address];

function onResponse(msg: string, status: number): void {
  const method = header(msg, 'CSeq').split(/\s+/)[1];
  if (method === 'REGISTER' && status === 200) return out({ event: 'registered', contact: header(msg, 'Contact') });
  if (method !== 'INVITE') return;
  if (status < 200) return out({ event: 'progress', status });
  const callId = header(msg, 'Call-ID');
  const ack = (d: Dialog): void => {
    const [from, to] = [`${d.local};tag=${d.localTag}`, `${d.remote};tag=${d.remoteTag}`];
    send(request('ACK', d.target, [`From: ${from}`, `To: ${to}`, `Call-ID: ${d.callId}`, `CSeq: ${header(msg, 'CSeq').split(/\s+/)[0]} ACK`], '', d.routes));
  };
  if (pendingInvite && callId === pendingInvite.callId) {
    const d: Dialog = {
      callId, localTag: myTag, remoteTag: tagOf(header(msg, 'To')), local: `<sip:${args.user}@keylatch.test>`, remote: `<${pendingInvite.to}>`,
      target: uriOf(header(msg, 'Contact')) || pendingInvite.to, cseq: 1, outgoing: true, remoteRtp: null, direction: 'sendrecv',
      routes: recordRoutes(msg).reverse(), // the caller's route set is the Record-Route of the answer, backwards
    };
    pendingInvite = null;
    ack(d);
    if (status >= 300) return out({ event: 'call-failed', status });
    dialog = d;
    dialog.remoteRtp = remoteRtpOf(bodyOf(msg));
    return out({ event: 'answered', remoteRtp: dialog.remoteRtp });
  }
  if (dialog && callId === dialog.callId) {
    ack(dialog);
    if (status === 200 && bodyOf(msg).startsWith('v=0')) dialog.remoteRtp = remoteRtpOf(bodyOf(msg));
    out({ event: 'reinvite-answered', status, remoteRtp: dialog.remoteRtp });
  }
}

function onRequest(msg: string, verb: string, ruri: string): void {
  if (verb === 'OPTIONS') return reply(msg, '200 OK');
  if (verb === 'ACK') return;
  if (verb === 'INVITE') {
    const existing = dialog && header(msg, 'Call-ID') === dialog.callId;
    out({ event: existing ? 'reinvite' : 'invite', ruri, sdp: bodyOf(msg) });
    if (!existing) {
      dialog = {
        callId: header(msg, 'Call-ID'), localTag: myTag, remoteTag: tagOf(header(msg, 'From')), local: header(msg, 'To').replace(/;tag=[^;]*/, ''),
        remote: header(msg, 'From').replace(/;tag=[^;]*/, ''), target: uriOf(header(msg, 'Contact')), cseq: 100, outgoing: false, remoteRtp: null, direction: 'sendrecv',
        routes: recordRoutes(msg),
      };
    }
    dialog!.remoteRtp = remoteRtpOf(bodyOf(msg));
    return reply(msg, '200 OK', sdp(dialog!.direction));
  }
  if (verb === 'BYE') {
    out({ event: 'bye', heard: summary() });
    dialog = null;
    return reply(msg, '200 OK');
  }
  reply(msg, '501 Not Implemented');
}

socket.on('message', (buf, r) => {
  lastFrom = [r.port, r.address];
  const msg = buf.toString();
  const first = msg.slice(0, msg.indexOf('\r\n'));
  const status = /^SIP\/2\.0 (\d{3})/.exec(first);
  if (status) return onResponse(msg, Number(status[1]));
  const m = /^([A-Z]+) (\S+) SIP\/2\.0$/.exec(first);
  if (m) onRequest(msg, m[1]!, m[2]!);
});

media.on('message', (buf, r) => {
  if (buf.length < 12 || buf[0]! >> 6 !== 2) return;
  heard.packets++;
  heard.sources.add(`${r.address}:${r.port}`);
  heard.ssrcs.add(buf.readUInt32BE(8));
  heard.lastRms = rms(decodeG711('PCMU', buf.subarray(12)));
  if (heard.lastRms > 1000) heard.loudPackets++;
});

const summary = () => ({ packets: heard.packets, loudPackets: heard.loudPackets, lastRms: Math.round(heard.lastRms), sources: [...heard.sources], ssrcs: [...heard.ssrcs] });

let seq = 0;
const ssrc = (process.pid * 2654435761) >>> 0;
setInterval(() => {
  if (!dialog?.remoteRtp) return;
  const header12 = Buffer.alloc(12);
  header12[0] = 0x80;
  header12.writeUInt16BE(seq & 0xffff, 2);
  header12.writeUInt32BE((seq * 160) >>> 0, 4);
  header12.writeUInt32BE(ssrc, 8);
  seq++;
  media.send(Buffer.concat([header12, encodeG711('PCMU', tone(1000, 160, seq * 160))]), dialog.remoteRtp.port, dialog.remoteRtp.address);
}, 20).unref();

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as { cmd: string; to?: string };
  if (cmd.cmd === 'register') register();
  else if (cmd.cmd === 'call') call(cmd.to!);
  else if (cmd.cmd === 'hold' || cmd.cmd === 'resume') {
    if (dialog) dialog.direction = cmd.cmd === 'hold' ? 'sendonly' : 'sendrecv';
    inDialog('INVITE', sdp(dialog?.direction ?? 'sendrecv'));
  } else if (cmd.cmd === 'bye') {
    inDialog('BYE');
    out({ event: 'hung-up', heard: summary() });
    dialog = null;
  } else if (cmd.cmd === 'stats') out({ event: 'stats', heard: summary() });
});

process.on('SIGUSR1', register);
media.bind(rtpPort, args.localIp);
socket.bind(args.port, args.localIp, () => {
  register();
  setTimeout(() => {
    out({ event: 'done' });
    process.exit(0);
  }, args.durationMs);
});
