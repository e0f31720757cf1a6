import type { ConnectionOptions } from 'node:tls';
import WebSocket from 'ws';
import type { Emitter, Transport, TransportState } from 'sip.js';

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

interface Logger {
  log(message: string): void;
  warn(message: string): void;
}

/** The state names of SIP.js's TransportState enum, which we cannot import at runtime from CommonJS tests. */
const state = (s: 'Connecting' | 'Connected' | 'Disconnecting' | 'Disconnected'): TransportState => s as TransportState;

class StateEmitter implements Emitter<TransportState> {
  private listeners = new Set<{ fn: (s: TransportState) => void; once: boolean }>();
  addListener(fn: (s: TransportState) => void, options?: { once?: boolean }): void {
    this.listeners.add({ fn, once: options?.once ?? false });
  }
  removeListener(fn: (s: TransportState) => void): void {
    for (const l of this.listeners) if (l.fn === fn) this.listeners.delete(l);
  }
  on(fn: (s: TransportState) => void): void {
    this.addListener(fn);
  }
  off(fn: (s: TransportState) => void): void {
    this.removeListener(fn);
  }
  once(fn: (s: TransportState) => void): void {
    this.addListener(fn, { once: true });
  }
  emit(s: TransportState): void {
    for (const l of [...this.listeners]) {
      if (l.once) this.listeners.delete(l);
      l.fn(s);
    }
  }
}

/**
 * SIP over WebSocket (RFC 7118) for Node, on `ws`: SIP.js's own transport expects a browser's
 * WebSocket and cannot be told which CA to trust. Give it to the UserAgent as
 * `transportConstructor`, with these options as `transportOptions`.
 */
export class NodeWebSocketTransport implements Transport {
  onConnect: (() => void) | undefined;
  onDisconnect: ((error?: Error) => void) | undefined;
  onMessage: ((message: string) => void) | undefined;
  readonly stateChange = new StateEmitter();
  readonly protocol: string;
  private state_ = state('Disconnected');
  private socket: WebSocket | null = null;
  private connecting: Promise<void> | null = null;
  private pinger: NodeJS.Timeout | null = null;
  private nudger: NodeJS.Timeout | null = null;
  private readonly options: Required<Omit<NodeWebSocketTransportOptions, 'tls'>> & { tls: ConnectionOptions };

  constructor(private readonly logger: Logger, options: NodeWebSocketTransportOptions) {
    const url = new URL(options.server);
    if (url.protocol !== 'wss:' && url.protocol !== 'ws:') throw new TypeError(`not a WebSocket URL: ${options.server}`);
    this.protocol = url.protocol === 'wss:' ? 'WSS' : 'WS';
    this.options = { connectionTimeoutMs: 5000, keepAliveIntervalMs: 15000, nudgeAfterMs: 30, tls: {}, ...options };
  }

  get state(): TransportState {
    return this.state_;
  }

  isConnected(): boolean {
    return this.state_ === state('Connected');
  }

  connect(): Promise<void> {
    if (this.isConnected()) return Promise.resolve();
    if (this.connecting) return this.connecting;
    this.setState(state('Connecting'));
    this.connecting = new Promise<void>((resolve, reject) => {
      const socket = new WebSocket(this.options.server, 'sip', { ...this.options.tls, handshakeTimeout: this.options.connectionTimeoutMs });
      this.socket = socket;
      socket.on('open', () => {
        this.connecting = null;
        this.setState(state('Connected'));
        this.startPings(socket);
        this.onConnect?.();
        resolve();
      });
      socket.on('message', (data, isBinary) => {
        if (isBinary) return this.logger.warn('ignoring a binary WebSocket message');
        this.onMessage?.(data.toString());
      });
      socket.on('error', (err) => {
        this.logger.warn(`WebSocket error: ${err.message}`);
        if (this.connecting) {
          this.connecting = null;
          this.setState(state('Disconnected'));
          reject(err);
        }
      });
      socket.on('close', (code, reason) => {
        this.stopPings();
        if (this.socket !== socket) return;
        this.socket = null;
        const wasConnected = this.isConnected();
        this.setState(state('Disconnected'));
        if (wasConnected) this.onDisconnect?.(code === 1000 ? undefined : new Error(`WebSocket closed: ${code} ${reason.toString()}`));
      });
    });
    return this.connecting;
  }

  async disconnect(): Promise<void> {
    const socket = this.socket;
    if (!socket) return;
    this.setState(state('Disconnecting'));
    this.socket = null;
    this.stopPings();
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.close(1000);
      setTimeout(() => {
        socket.terminate();
        resolve();
      }, 1000).unref();
    });
    this.setState(state('Disconnected'));
    this.onDisconnect?.();
  }

  async send(message: string): Promise<void> {
    const socket = this.socket;
    if (!socket || !this.isConnected()) throw new Error('WebSocket is not connected');
    await new Promise<void>((resolve, reject) => socket.send(message, (err) => (err ? reject(err) : resolve())));
    this.nudge(socket);
  }

  /**
   * Sends a ping now. After a NAT rebinding the old TCP mapping is gone; the ping draws a reset
   * at once, so the close (and the application's reconnect) comes in one round trip rather
   * than when the next SIP request is lost.
   */
  probe(): void {
    if (this.socket && this.isConnected()) this.socket.ping();
  }

  async dispose(): Promise<void> {
    await this.disconnect();
  }

  private setState(s: TransportState): void {
    if (s === this.state_) return;
    this.state_ = s;
    this.stateChange.emit(s);
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

  private startPings(socket: WebSocket): void {
    this.stopPings();
    this.pinger = setInterval(() => socket.ping(), this.options.keepAliveIntervalMs);
  }

  private stopPings(): void {
    if (this.pinger) clearInterval(this.pinger);
    if (this.nudger) clearTimeout(this.nudger);
    this.pinger = null;
    this.nudger = null;
  }
}
