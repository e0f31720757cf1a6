/**
 * A stand-in for drachtio-server's admin port that speaks its wire protocol
 * ("<bytes>#<uuid>|<verb>|..."): enough for drachtio-srf to authenticate and register routes, and
 * for a test to write whatever byte stream it likes to the app, split or garbled, which a real
 * drachtio-server only produces under overload (docs/sip-throughput.md, "The overload crash").
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';

export interface FakeDrachtioConnection {
  socket: net.Socket;
  /** Every frame the app sent, in order. */
  frames: string[];
  /** Verbs the app routed (route|register ...). */
  routes: Set<string>;
}

/** One frame as drachtio-server writes it. */
export const frame = (payload: string): Buffer => {
  const body = Buffer.from(payload, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length}#`), body]);
};

/** A SIP request as drachtio-server hands one to its app (source "network", no dialog yet). */
export function sipFrame(sip: string, opts: { transactionId: string; from?: { address: string; port: number }; receivedOn?: string }): Buffer {
  const from = opts.from ?? { address: '127.0.0.9', port: 5999 };
  const [proto, hostport] = (opts.receivedOn ?? 'udp/127.0.0.1:5060').split('/') as [string, string];
  const [host, port] = hostport.split(':') as [string, string];
  const meta = ['network', String(Buffer.byteLength(sip)), proto, from.address, String(from.port), '12:00:00.000000', opts.transactionId, '', `${proto}/${host}`, port];
  return frame(`${randomUUID()}|sip|${meta.join('|')}|\r\n${sip}`);
}

export class FakeDrachtio {
  readonly connections: FakeDrachtioConnection[] = [];
  private constructor(private readonly server: net.Server, readonly port: number, readonly hostport: string, private readonly pongAfterMs: number | null) {}

  /** pongAfterMs: how long it takes to answer a ping (null: never), as a server busy elsewhere might. */
  static async start(hostport = 'udp/127.0.0.1:5060', opts: { pongAfterMs?: number | null } = {}): Promise<FakeDrachtio> {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const fake = new FakeDrachtio(server, (server.address() as net.AddressInfo).port, hostport, opts.pongAfterMs === undefined ? 0 : opts.pongAfterMs);
    server.on('connection', (socket) => fake.accept(socket));
    return fake;
  }

  get admin(): { host: string; port: number; secret: string } {
    return { host: '127.0.0.1', port: this.port, secret: 'fake-secret' };
  }

  /** The newest connection once the app has routed `verb` on it. */
  async ready(verb: string, count: number, timeoutMs = 5000): Promise<FakeDrachtioConnection> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const c = this.connections[count - 1];
      if (c && c.routes.has(verb) && !c.socket.destroyed) return c;
      if (Date.now() > until) throw new Error(`no connection #${count} routing ${verb} (have ${this.connections.length})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.socket.destroy();
    await new Promise((r) => this.server.close(r));
  }

  private accept(socket: net.Socket): void {
    const conn: FakeDrachtioConnection = { socket, frames: [], routes: new Set() };
    this.connections.push(conn);
    let buf = Buffer.alloc(0);
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const hash = buf.indexOf('#');
        if (hash <= 0) return;
        const end = hash + 1 + Number(buf.toString('latin1', 0, hash));
        if (buf.length < end) return;
        const payload = buf.toString('utf8', hash + 1, end);
        buf = buf.subarray(end);
        conn.frames.push(payload);
        const [msgId, verb, arg] = payload.split(/\r\n/)[0]!.split('|');
        if (verb === 'authenticate') socket.write(frame(`${randomUUID()}|response|${msgId}|${arg === 'fake-secret' ? 'OK' : 'NO'}|${this.hostport}|v0.9.10`));
        // As drachtio-server does (client.cpp): the edge pings once to learn its routes are in place.
        else if (verb === 'ping' && this.pongAfterMs !== null) {
          const pong = frame(`${randomUUID()}|response|${msgId}|OK|pong`);
          if (this.pongAfterMs === 0) socket.write(pong);
          else setTimeout(() => !socket.destroyed && socket.write(pong), this.pongAfterMs);
        }
        else if (verb === 'route') {
          conn.routes.add(arg!);
          socket.write(frame(`${randomUUID()}|response|${msgId}|OK`));
        }
      }
    });
  }
}
