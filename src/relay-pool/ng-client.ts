import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { isIPv6 } from 'node:net';
import bencode from 'bencode';

/** A decoded ng dictionary: strings come back as strings, numbers as numbers. */
export type NgMessage = Record<string, unknown>;

/** The node did not answer in time (after retransmits): the pool counts it against the node. */
export class NgTimeout extends Error {
  override name = 'NgTimeout';
}

/** Both rtpengine and keylatch nodes refuse a command for a call they do not hold with "Unknown call-id". */
export const isUnknownCall = (reason: string): boolean => /unknown call/i.test(reason);

/** The node answered result=error: the request was bad, the node itself is alive. */
export class NgRefused extends Error {
  override name = 'NgRefused';
  constructor(readonly reason: string) {
    super(reason);
  }
}

export interface NgClientOptions {
  host: string;
  port: number;
  /** Give up on one request after this long (and throw NgTimeout), unless the call says otherwise. */
  timeoutMs: number;
  /** Retransmits within timeoutMs: UDP may lose one datagram; the server's cookie cache makes repeats safe. */
  retransmits?: number;
  /** Applied to every request before it is encoded: a signature, for a server that wants one (sibling-auth.ts). */
  sign?: (req: NgMessage) => NgMessage;
}

/**
 * rtpengine's ng protocol from the client side: "<cookie> <bencoded dict>" over UDP, one socket
 * per node. A retransmit reuses the cookie, so a node that executed the first copy answers the
 * second from its reply cache instead of running the command twice (rtpengine and keylatch both).
 */
export class NgClient {
  private readonly socket: dgram.Socket;
  private readonly pending = new Map<string, { resolve: (reply: NgMessage) => void; fail: (err: Error) => void }>();
  private readonly bound: Promise<void>;
  private closed = false;

  constructor(private readonly opts: NgClientOptions) {
    this.socket = dgram.createSocket(isIPv6(opts.host) ? 'udp6' : 'udp4');
    this.socket.on('message', (msg, rinfo) => {
      // Only the node may answer: a datagram from anyone else is not a reply, whatever its cookie.
      if (rinfo.address !== opts.host || rinfo.port !== opts.port) return;
      const space = msg.indexOf(0x20);
      if (space <= 0) return;
      const waiting = this.pending.get(msg.subarray(0, space).toString('latin1'));
      if (!waiting) return;
      let reply: unknown;
      try {
        reply = bencode.decode(msg.subarray(space + 1), 'utf8');
      } catch {
        return; // garbage: let the timeout speak
      }
      if (typeof reply === 'object' && reply !== null && !Array.isArray(reply)) waiting.resolve(reply as NgMessage);
    });
    // An ICMP port unreachable surfaces here on some kernels; the timeout reports the node.
    this.socket.on('error', () => undefined);
    this.socket.bind(0);
    this.bound = once(this.socket, 'listening').then(() => undefined);
  }

  /** Sends one command; resolves with the node's reply dictionary, whatever its result. */
  async send(command: string, args: NgMessage = {}, timeoutMs = this.opts.timeoutMs): Promise<NgMessage> {
    if (this.closed) throw new NgTimeout(`ng client for ${this.opts.host}:${this.opts.port} is closed`);
    await this.bound;
    const cookie = randomBytes(8).toString('hex');
    const req = { ...args, command };
    const packet = Buffer.concat([Buffer.from(`${cookie} `, 'latin1'), Buffer.from(bencode.encode(this.opts.sign ? this.opts.sign(req) : req))]);
    const tries = (this.opts.retransmits ?? 2) + 1;
    const interval = Math.max(10, Math.floor(timeoutMs / tries));
    return new Promise<NgMessage>((resolve, reject) => {
      let sent = 0;
      let timer: NodeJS.Timeout | undefined;
      const fail = (err: Error): void => {
        clearTimeout(timer);
        this.pending.delete(cookie);
        reject(err);
      };
      const transmit = (): void => {
        if (sent++ >= tries) return fail(new NgTimeout(`${command}: no answer from ${this.opts.host}:${this.opts.port} within ${timeoutMs} ms`));
        this.socket.send(packet, this.opts.port, this.opts.host);
        timer = setTimeout(transmit, interval);
      };
      this.pending.set(cookie, {
        resolve: (reply) => {
          clearTimeout(timer);
          this.pending.delete(cookie);
          resolve(reply);
        },
        fail,
      });
      transmit();
    });
  }

  /** Like send, but result=error becomes NgRefused. */
  async command(command: string, args: NgMessage = {}, timeoutMs = this.opts.timeoutMs): Promise<NgMessage> {
    const reply = await this.send(command, args, timeoutMs);
    if (reply.result === 'error') throw new NgRefused(String(reply['error-reason'] ?? 'error'));
    return reply;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    // Requests in flight end now, not with a retransmit on a closed socket.
    for (const { fail } of [...this.pending.values()]) fail(new NgTimeout(`ng client for ${this.opts.host}:${this.opts.port} closed`));
    this.socket.close();
  }
}
