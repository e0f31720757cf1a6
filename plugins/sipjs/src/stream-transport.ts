import type { Emitter, Transport, TransportState } from 'sip.js';

export interface TransportLogger {
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
 * What a SIP.js transport over one connection has to do whatever the connection is: the
 * state machine SIP.js watches, keepalive pings, and telling the UserAgent when the
 * connection is lost. Subclasses open, write, ping and close their own kind of socket.
 */
export abstract class ConnectionTransport implements Transport {
  onConnect: (() => void) | undefined;
  onDisconnect: ((error?: Error) => void) | undefined;
  onMessage: ((message: string) => void) | undefined;
  readonly stateChange = new StateEmitter();
  abstract readonly protocol: string;
  private state_ = state('Disconnected');
  private connecting: Promise<void> | null = null;
  private pinger: NodeJS.Timeout | null = null;

  protected constructor(protected readonly logger: TransportLogger, private readonly keepAliveIntervalMs: number) {}

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
    this.connecting = this.open().then(
      () => {
        this.connecting = null;
        this.setState(state('Connected'));
        this.pinger = setInterval(() => this.ping(), this.keepAliveIntervalMs);
        this.onConnect?.();
      },
      (err: Error) => {
        this.connecting = null;
        this.setState(state('Disconnected'));
        throw err;
      },
    );
    return this.connecting;
  }

  async disconnect(): Promise<void> {
    if (!this.isConnected()) return;
    this.setState(state('Disconnecting'));
    this.stopPinging();
    await this.close();
    this.setState(state('Disconnected'));
    this.onDisconnect?.();
  }

  async send(message: string): Promise<void> {
    if (!this.isConnected()) throw new Error(`${this.protocol} transport is not connected`);
    await this.write(message);
  }

  /**
   * Pings now. After a NAT rebinding the old TCP mapping is gone; the ping draws a reset at
   * once, so the close (and the application's reconnect) comes in one round trip rather than
   * when the next SIP request is lost.
   */
  probe(): void {
    if (this.isConnected()) this.ping();
  }

  async dispose(): Promise<void> {
    await this.disconnect();
  }

  /** The connection went away without disconnect(): tell SIP.js, with why. */
  protected lost(error?: Error): void {
    this.stopPinging();
    const wasConnected = this.isConnected();
    this.setState(state('Disconnected'));
    if (wasConnected) this.onDisconnect?.(error);
  }

  protected received(message: string): void {
    this.onMessage?.(message);
  }

  protected abstract open(): Promise<void>;
  protected abstract write(message: string): Promise<void>;
  protected abstract ping(): void;
  protected abstract close(): Promise<void>;

  private setState(s: TransportState): void {
    if (s === this.state_) return;
    this.state_ = s;
    this.stateChange.emit(s);
  }

  private stopPinging(): void {
    if (this.pinger) clearInterval(this.pinger);
    this.pinger = null;
  }
}
