/**
 * A bare SIP client over TLS, TCP or secure WebSocket for tests (Debian's sipp has neither TLS
 * nor WebSocket). It writes the messages a test composes and parses what comes back; the
 * server under test is real.
 */
import net from 'node:net';
import tls from 'node:tls';
import WebSocket from 'ws';

export interface SipMessage {
  startLine: string;
  status: number | null;
  headers: Map<string, string>;
  body: string;
}

export class SipStreamClient {
  private buf = '';
  private readonly inbox: SipMessage[] = [];
  private waiters: Array<() => void> = [];

  private constructor(private readonly transport: { write(text: string): void; close(): void }) {}

  private feed(d: string): void {
    this.buf += d;
    this.parse();
  }

  static async connect(kind: 'tls' | 'tcp' | 'wss', host: string, port: number): Promise<SipStreamClient> {
    if (kind === 'wss') {
      // RFC 7118: the "sip" subprotocol, one SIP message per frame.
      const ws = new WebSocket(`wss://${host}:${port}`, 'sip', { rejectUnauthorized: false });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      const client = new SipStreamClient({ write: (t) => ws.send(t), close: () => ws.terminate() });
      ws.on('message', (d: Buffer) => client.feed(d.toString()));
      return client;
    }
    const socket = kind === 'tls' ? tls.connect({ host, port, rejectUnauthorized: false }) : net.connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once(kind === 'tls' ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    const client = new SipStreamClient({ write: (t) => socket.write(t), close: () => socket.destroy() });
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => client.feed(d));
    return client;
  }

  send(lines: string[], body = ''): void {
    const text = lines.filter((l) => !/^Content-Length:/i.test(l)).join('\r\n');
    this.transport.write(`${text}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  /** The next message matching `pred` (by default any response with status >= 200). */
  async next(pred: (m: SipMessage) => boolean = (m) => (m.status ?? 0) >= 200, timeoutMs = 5000): Promise<SipMessage> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const i = this.inbox.findIndex(pred);
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      const left = until - Date.now();
      if (left <= 0) throw new Error(`no matching SIP message; got: ${this.inbox.map((m) => m.startLine).join(' | ')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  close(): void {
    this.transport.close();
  }

  private parse(): void {
    for (;;) {
      this.buf = this.buf.replace(/^(\r\n)+/, ''); // CRLF keepalives
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.slice(0, end).split('\r\n');
      const headers = new Map<string, string>();
      for (const h of head.slice(1)) {
        const c = h.indexOf(':');
        if (c > 0) headers.set(h.slice(0, c).trim().toLowerCase(), h.slice(c + 1).trim());
      }
      const len = Number(headers.get('content-length') ?? headers.get('l') ?? 0);
      if (this.buf.length < end + 4 + len) return;
      const startLine = head[0]!;
      const status = /^SIP\/2\.0 (\d{3})/.exec(startLine);
      this.inbox.push({ startLine, status: status ? Number(status[1]) : null, headers, body: this.buf.slice(end + 4, end + 4 + len) });
      this.buf = this.buf.slice(end + 4 + len);
      this.waiters.splice(0).forEach((w) => w());
    }
  }
}
