/**
 * A minimal SIP phone over UDP for the namespace tests (sipp cannot both register and accept
 * a new call): REGISTER at start and on SIGUSR1, answer OPTIONS and INVITE with 200, BYE too.
 * Reports each event as a JSON line.
 */
import dgram from 'node:dgram';

const args = JSON.parse(process.argv[2]!) as { localIp: string; port: number; edge: { address: string; port: number }; user: string; durationMs: number };
const out = (o: object): void => void process.stdout.write(`${JSON.stringify({ t: Date.now(), ...o })}\n`);
const socket = dgram.createSocket('udp4');
const callId = `natphone-${process.pid}`;
let cseq = 0;

function header(msg: string, name: string): string {
  const m = new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(msg);
  return m ? m[1]!.trim() : '';
}

function send(text: string): void {
  socket.send(text, args.edge.port, args.edge.address);
}

function register(): void {
  cseq++;
  const branch = `z9hG4bK${Date.now()}${cseq}`;
  send([
    `REGISTER sip:keylatch.test SIP/2.0`, `Via: SIP/2.0/UDP ${args.localIp}:${args.port};branch=${branch};rport`,
    `From: <sip:${args.user}@keylatch.test>;tag=np${process.pid}`, `To: <sip:${args.user}@keylatch.test>`, `Call-ID: ${callId}`,
    `CSeq: ${cseq} REGISTER`, `Contact: <sip:${args.user}@${args.localIp}:${args.port}>`, 'Expires: 3600', 'Max-Forwards: 70', 'Content-Length: 0', '', '',
  ].join('\r\n'));
}

function reply(req: string, status: string, body = ''): void {
  const to = header(req, 'To');
  const lines = [
    `SIP/2.0 ${status}`, ...req.split('\r\n').filter((l) => /^Via:/i.test(l)), `From: ${header(req, 'From')}`,
    `To: ${/;tag=/.test(to) ? to : `${to};tag=np${process.pid}`}`, `Call-ID: ${header(req, 'Call-ID')}`, `CSeq: ${header(req, 'CSeq')}`,
    `Contact: <sip:${args.user}@${args.localIp}:${args.port}>`,
  ];
  if (body) lines.push('Content-Type: application/sdp');
  socket.send(`${lines.join('\r\n')}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`, ...rinfoOf(req));
}

let lastFrom: [number, string] = [args.edge.port, args.edge.address];
const rinfoOf = (_req: string): [number, string] => lastFrom;

socket.on('message', (buf, r) => {
  lastFrom = [r.port, r.address];
  const msg = buf.toString();
  const first = msg.slice(0, msg.indexOf('\r\n'));
  if (first.startsWith('SIP/2.0 200') && /REGISTER/.test(header(msg, 'CSeq'))) return out({ event: 'registered', contact: header(msg, 'Contact') });
  const method = /^([A-Z]+) (\S+) SIP\/2\.0$/.exec(first);
  if (!method) return;
  const [, verb, ruri] = method;
  if (verb === 'OPTIONS') return reply(msg, '200 OK');
  if (verb === 'INVITE') {
    out({ event: 'invite', ruri });
    const sdp = `v=0\r\no=- 1 1 IN IP4 ${args.localIp}\r\ns=-\r\nc=IN IP4 ${args.localIp}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`;
    return reply(msg, '200 OK', sdp);
  }
  if (verb === 'BYE') {
    out({ event: 'bye' });
    return reply(msg, '200 OK');
  }
});

process.on('SIGUSR1', register);
socket.bind(args.port, args.localIp, () => {
  register();
  setTimeout(() => {
    out({ event: 'done' });
    socket.close();
    process.exit(0);
  }, args.durationMs);
});
