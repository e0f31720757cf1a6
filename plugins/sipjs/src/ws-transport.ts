import type { ConnectionOptions } from 'node:tls';
import WebSocket from 'ws';
import { ConnectionTransport, type TransportLogger } from './stream-transport';

export interface NodeWebSocketTransportOptions {
  /** wss://host:port (ws:// works too, but then keylatch gives no key). */
  server: string;
  /** CA, client certificate, servername: whatever Node's TLS needs to trust the edge. */
  tls?: ConnectionOptions;
  connectionTimeoutMs?: number;
  /** WebSocket pings (RFC 6455 section 5.5.2) that keep NAT and firewall state for the flow. */
  keepAliveIntervalMs?: number;
  /** A ping this long after a message, for servers that read WSS lazily (see nudge()); 0 turns it off. */
  nudgeAfterMs?: number;
}

/**
 * SIP over WebSocket (RFC 7118) for Node, on `ws`: SIP.js's own transport expects a browser's
 * WebSocket and cannot be told which CA to trust. Give it to the UserAgent as
 * `transportConstructor`, with these options as `transportOptions`.
 */
export class NodeWebSocketTransport extends ConnectionTransport {
  readonly protocol: string;
  private socket: WebSocket | null = null;
  private nudger: NodeJS.Timeout | null = null;
  private readonly options: Required<Omit<NodeWebSocketTransportOptions, 'tls'>> & { tls: ConnectionOptions };

  constructor(logger: TransportLogger, options: NodeWebSocketTransportOptions) {
    const url = new URL(options.server);
    if (url.protocol !== 'wss:' && url.protocol !== 'ws:') throw new TypeError(`not a WebSocket URL: ${options.server}`);
    const full = { connectionTimeoutMs: 5000, keepAliveIntervalMs: 15000, nudgeAfterMs: 30, tls: {}, ...options };
    super(logger, full.keepAliveIntervalMs);
    this.options = full;
    this.protocol = url.protocol === 'wss:' ? 'WSS' : 'WS';
  }

  protected open(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const socket = new WebSocket(this.options.server, 'sip', { ...this.options.tls, handshakeTimeout: this.options.connectionTimeoutMs });
      this.socket = socket;
      let opened = false;
      socket.on('open', () => {
        opened = true;
        resolve();
      });
      socket.on('message', (data, isBinary) => {
        if (isBinary) return this.logger.warn('ignoring a binary WebSocket message');
        this.received(data.toString());
      });
      socket.on('error', (err) => {
        this.logger.warn(`WebSocket error: ${err.message}`);
        if (!opened) reject(err);
      });
      socket.on('close', (code, reason) => {
        this.clearNudge();
        if (this.socket !== socket) return;
        this.socket = null;
        this.lost(code === 1000 ? undefined : new Error(`WebSocket closed: ${code} ${reason.toString()}`));
      });
    });
  }

  protected async write(message: string): Promise<void> {
    const socket = this.socket;
    if (!socket) throw new Error('WebSocket is not connected');
    await new Promise<void>((resolve, reject) => socket.send(message, (err) => (err ? reject(err) : resolve())));
    this.nudge(socket);
  }

  protected ping(): void {
    this.socket?.ping();
  }

  protected async close(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    this.clearNudge();
    if (!socket) return;
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.close(1000);
      setTimeout(() => {
        socket.terminate();
        resolve();
      }, 1000).unref();
    });
  }

  /**
   * drachtio-server 0.9.5 over WSS sometimes leaves a message that arrived just after another
   * unread until more data comes. A 200 OK then reached it only with its retransmission 500 ms
   * later, both at once, and it dropped the dialog (later BYEs got 481). A ping shortly after a
   * burst of messages is that "more data". It costs one small frame per burst.
   */
  private nudge(socket: WebSocket): void {
    if (this.options.nudgeAfterMs <= 0 || this.nudger) return;
    this.nudger = setTimeout(() => {
      this.nudger = null;
      if (this.socket === socket && this.isConnected()) socket.ping();
    }, this.options.nudgeAfterMs);
  }

  private clearNudge(): void {
    if (this.nudger) clearTimeout(this.nudger);
    this.nudger = null;
  }
}
