import type { MediaConfig } from '../../config/schema';
import type { Logger } from '../../log';
import { Relay } from '../relay';
import type { PortShare } from './port-shares';

/**
 * A Relay that owns one share of the port range and knows the rest belongs to its siblings.
 * A single relay refuses to send to its own ports (it must never be aimed at itself); in a
 * worker its own pool is only its share, so a target on another worker's port would pass.
 * This closes that gap: any port of the whole range on our own address counts as ours.
 */
export class WorkerRelay extends Relay {
  private readonly own: Set<string>;

  constructor(config: MediaConfig, private readonly fullRange: PortShare, opts: { logger?: Logger } = {}) {
    super(config, opts);
    this.own = new Set([config.interface, this.advertisedAddress]);
  }

  override denied(address: string, port: number): string | null {
    const reason = super.denied(address, port);
    if (reason) return reason;
    return this.own.has(address) && port >= this.fullRange.portMin && port <= this.fullRange.portMax ? 'relay-port' : null;
  }
}
