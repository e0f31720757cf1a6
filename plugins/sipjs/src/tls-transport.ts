import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { ConnectionTransport, type TransportLogger } from './stream-transport';

export interface NodeTlsTransportOptions {
  /** tls://host:port: SIP over TLS (RFC 3261 section 18.3, RFC 5630). */
  server: string;
  tls?: ConnectionOptions;
  connectionTimeoutMs?: number;
  /** RFC 5626 section 4.4.1 double-CRLF pings that keep NAT state for the flow. */
  keepAliveIntervalMs?: number;
}

const MAX_MESSAGE_BYTES = 64 * 1024;
const HEADER_END = Buffer.from('\r\n\r\n');

/**
 * Cuts a SIP byte stream into messages by Content-Length (mandatory on streams). CRLFs
 * between messages are keepalive pongs and are skipped.
 */
export class SipStreamFramer {
  private buf = Buffer.alloc(0);

  /** Messages completed by this chunk. Throws on a message without Content-Length or too large. */
  push(chunk: Buffer): string[] {
    this.buf = Buffer.concat([this.buf, chunk]);
    const out: string[] = [];
    for (;;) {
      let start = 0;
      while (start + 1 < this.buf.length && this.buf[start] === 0x0d && this.buf[start + 1] === 0x0a) start += 2;
      if (start) this.buf = this.buf.subarray(start);
      const end = this.buf.indexOf(HEADER_END);
      if (end < 0) {
        if (this.buf.length > MAX_MESSAGE_BYTES) throw new Error('SIP header section larger than 64 KiB');
        return out;
      }
      const head = this.buf.subarray(0, end).toString('utf8');
      const m = /^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$/im.exec(head);
      if (!m) throw new Error('SIP message on a stream without Content-Length');
      const total = end + 4 + Number(m[1]);
      if (total > MAX_MESSAGE_BYTES) throw new Error('SIP message larger than 64 KiB');
      if (this.buf.length < total) return out;
      out.push(this.buf.subarray(0, total).toString('utf8'));
      this.buf = this.buf.subarray(total);
    }
  }
}

/** SIP over TLS for SIP.js in Node: the same keys-only-over-secure-signalling as WSS, without WebSocket. */
export class NodeTlsTransport extends ConnectionTransport {
  readonly protocol = 'TLS';
  private socket: TLSSocket | null = null;
  private readonly host: string;
  private readonly port: number;
  private readonly options: NodeTlsTransportOptions & { connectionTimeoutMs: number };

  constructor(logger: TransportLogger, options: NodeTlsTransportOptions) {
    const url = new URL(options.server);
    if (url.protocol !== 'tls:') throw new TypeError(`not a tls:// URL: ${options.server}`);
    super(logger, options.keepAliveIntervalMs ?? 15000);
    this.host = url.hostname.replace(/^\[|\]$/g, '');
    this.port = Number(url.port || 5061);
    this.options = { connectionTimeoutMs: 5000, ...options };
  }

  protected open(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const framer = new SipStreamFramer();
      const socket = connect({ host: this.host, port: this.port, ...this.options.tls });
      this.socket = socket;
      let opened = false;
      const timer = setTimeout(() => socket.destroy(new Error(`TLS connect to ${this.host}:${this.port} timed out`)), this.options.connectionTimeoutMs);
      socket.setNoDelay(true);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        opened = true;
        resolve();
      });
      socket.on('data', (chunk: Buffer) => {
        try {
          for (const message of framer.push(chunk)) this.received(message);
        } catch (err) {
          this.logger.warn(`closing the TLS flow: ${(err as Error).message}`);
          socket.destroy(err as Error);
        }
      });
      socket.on('error', (err) => {
        this.logger.warn(`TLS error: ${err.message}`);
        if (!opened) {
          clearTimeout(timer);
          reject(err);
        }
      });
      socket.on('close', () => {
        if (this.socket !== socket) return;
        this.socket = null;
        this.lost(new Error('TLS connection closed'));
      });
    });
  }

  protected write(message: string): Promise<void> {
    const socket = this.socket;
    if (!socket) return Promise.reject(new Error('TLS is not connected'));
    return new Promise<void>((resolve, reject) => socket.write(message, (err) => (err ? reject(err) : resolve())));
  }

  protected ping(): void {
    this.socket?.write('\r\n\r\n');
  }

  protected async close(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.end();
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, 1000).unref();
    });
  }
}
