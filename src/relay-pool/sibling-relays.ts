/**
 * Hairpins across several edge processes (sip.processes > 1). A call between two phones of
 * this edge goes out to the PBX and comes back for the callee; drachtio-server hands new INVITEs
 * to the processes in turn, so the PBX's INVITE usually reaches another process than the one
 * whose relay holds the caller's leg toward the PBX. Alone, that process would anchor the call a
 * second time (two relay hops, each relay latched on the other's port, and no direct media for
 * two plugin clients). With this, each process serves the hairpin commands of its relay to its
 * siblings, and each has its siblings' relays in its pool with weight 0: never given a call of
 * its own, but asked, like any keylatch node, whether a bounced offer names one of its legs
 * (RelayPool.hairpinNodesFor, then Hairpins.adopt), so the callee gets the caller's leg and the
 * call is anchored once, in the caller's process.
 *
 * The channel is ng on 127.0.0.1:sip.siblingRelayPort + index, signed and sealed as sibling-auth.ts
 * says; it serves ping and the hairpin commands, nothing else (no offer, no delete: a sibling's
 * calls are its own business).
 */
import { NgServer, relayCommands, type NgHandler } from '../control/ng-server';
import { admitSiblings, signedAs, siblingKeys } from '../control/sibling-auth';
import type { EdgeShare } from '../edge-processes';
import { joinHostPort } from '../host-port';
import { silentLogger, type Logger } from '../log';
import type { Relay } from '../media/relay';
import { NgNode } from './nodes';

/** What a sibling may ask of this process's relay. */
const SERVED = new Set(['ping', 'adopt', 'toward-adopter', 'describe-adopted', 'disown']);

export interface SiblingRelaysOptions {
  share: EdgeShare;
  /** sip.siblingRelayPort: process i listens on 127.0.0.1:(basePort + i). */
  basePort: number;
  /** The secret every sibling was given (SIBLING_SECRET_ENV). */
  secret: string;
  relay: Relay;
  timeouts: { pingMs: number; commandMs: number };
  logger?: Logger;
}

export class SiblingRelays {
  /** The other processes' relays, as pool nodes. */
  readonly nodes: NgNode[];
  private readonly server: NgServer;
  private readonly log: Logger;

  constructor(private readonly opts: SiblingRelaysOptions) {
    this.log = opts.logger ?? silentLogger;
    const { macKey, sealKey } = siblingKeys(opts.secret, 'relays');
    const commands = relayCommands(opts.relay);
    const served: NgHandler = async (req) =>
      SERVED.has(String(req.command)) ? commands(req) : { result: 'error', 'error-reason': `${String(req.command)} is not served to sibling edge processes` };
    this.server = new NgServer(served, this.log, sealKey, { admit: admitSiblings(macKey, opts.share, this.log, 'hairpin channel') });
    const sign = signedAs(opts.share.index, macKey);
    this.nodes = [...Array(opts.share.count).keys()]
      .filter((i) => i !== opts.share.index)
      .map((i) => new NgNode(`ng://${joinHostPort('127.0.0.1', opts.basePort + i)}`, 'keylatch', opts.timeouts, sealKey, sign));
  }

  async listen(): Promise<void> {
    const port = this.opts.basePort + this.opts.share.index;
    try {
      await this.server.listen(port, '127.0.0.1');
    } catch (err) {
      throw new Error(`hairpin channel cannot listen on 127.0.0.1:${port} (${(err as Error).message}): set sip.siblingRelayPort (KEYLATCH_SIP__SIBLING_RELAY_PORT) to a free range of sip.processes UDP ports`);
    }
  }

  close(): void {
    this.server.close();
  }

}
