import { EventEmitter } from 'node:events';
import { ChallengeProver, ProtocolError, decode, sameEndpoint, type Endpoint, type PairGrant } from '../../../src/media/challenge';
import { ChallengeFailedError, RelayUnreachableError, type KeylatchPluginError } from './errors';

export interface KeyProofOptions {
  legId: string;
  key: Buffer;
  /** Where the relay port is, from the remote SDP. */
  relay: Endpoint;
  send: (buf: Buffer, to: Endpoint) => void;
  /** Hello retransmission until the first success (docs/challenge-protocol.md: 200 ms). */
  helloIntervalMs: number;
  /** How long to try before reporting the relay unreachable or the key wrong. */
  giveUpAfterMs: number;
}

export type ProofState = 'proving' | 'authenticated' | 'failed';

export interface KeyProofEvents {
  latched: [mapping: Endpoint, changed: boolean];
  /** The relay named the other client of the call, for direct media. */
  rendezvous: [grant: PairGrant];
  failed: [error: KeylatchPluginError];
}

/**
 * One socket's side of the challenge protocol: hello until the relay latches, then answer every
 * challenge for the rest of the call. A challenge that names a different mapping than the last
 * success is a NAT rebinding; answering it at once is the re-proof.
 */
export class KeyProof extends EventEmitter<KeyProofEvents> {
  private readonly prover: ChallengeProver;
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;
  private state_: ProofState = 'proving';
  private rejectedChallenges = 0;
  private heardRelay = false;
  handovers = 0;

  constructor(private readonly opts: KeyProofOptions) {
    super();
    this.prover = new ChallengeProver(opts.legId, opts.key);
  }

  get state(): ProofState {
    return this.state_;
  }

  get mapping(): Endpoint | null {
    return this.prover.externalMapping;
  }

  start(now = Date.now()): void {
    this.startedAt = now;
    this.sendHello();
    this.timer = setInterval(() => this.retry(), this.opts.helloIntervalMs);
  }

  /** Keepalive and prompt re-proof share this: the relay answers a hello with a fresh challenge. */
  sendHello(flags = this.flags): void {
    this.flags = flags;
    this.opts.send(this.prover.hello(flags), this.opts.relay);
  }

  /** Hello flags (HELLO_FLAG_DIRECT) that every later hello repeats, so the relay's view stays current. */
  private flags = 0;

  /** Returns true when the datagram was ours to handle (STUN-framed), whatever became of it. */
  onDatagram(buf: Buffer, from: Endpoint): boolean {
    let msg;
    try {
      msg = decode(buf);
    } catch (err) {
      if (err instanceof ProtocolError) return true;
      throw err;
    }
    if (!sameEndpoint(from, this.opts.relay)) return true;
    this.heardRelay = true;
    const event = this.prover.onMessage(msg, from);
    if (event.type === 'proof-sent') {
      this.opts.send(event.reply, event.to);
    } else if (event.type === 'latched') {
      this.stopRetrying();
      if (event.mappingChanged) this.handovers++;
      const first = this.state_ !== 'authenticated';
      this.state_ = 'authenticated';
      if (first || event.mappingChanged) this.emit('latched', event.mapping, event.mappingChanged);
    } else if (event.type === 'rendezvous') {
      this.emit('rendezvous', event.grant);
    } else if (msg.kind === 'challenge') {
      this.rejectedChallenges++;
    }
    return true;
  }

  close(): void {
    this.stopRetrying();
    this.removeAllListeners();
  }

  private retry(): void {
    if (this.state_ !== 'proving') return this.stopRetrying();
    const waited = Date.now() - this.startedAt;
    if (waited < this.opts.giveUpAfterMs) return this.sendHello();
    this.stopRetrying();
    this.state_ = 'failed';
    const relay = `${this.opts.relay.address}:${this.opts.relay.port}`;
    const error = this.rejectedChallenges > 0
      ? new ChallengeFailedError(`${this.rejectedChallenges} challenge(s) from ${relay} did not verify with our key (wrong key?)`)
      : this.heardRelay
        ? new ChallengeFailedError(`${relay} never confirmed a proof`)
        : new RelayUnreachableError(relay, waited);
    this.emit('failed', error);
  }

  private stopRetrying(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
