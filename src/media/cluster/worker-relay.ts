import type { MediaConfig } from '../../config/schema';
import type { Logger } from '../../log';
import { Relay } from '../relay';
import type { PortShare } from './port-shares';

/**
 * A Relay that owns one share of the port range and knows the rest belongs to its siblings.
 * A single relay refuses to send to its own ports (it must never be aimed at itself), and
 * treats a leg answered with its own port as a stand-in's (Relay.adopt); in a worker its own
 * pool is only its share, so a port of another worker would pass for a stranger's. Here any
 * port of the whole range counts as ours (on our own address: Relay checks that).
 */
export class WorkerRelay extends Relay {
  constructor(config: MediaConfig, private readonly fullRange: PortShare, opts: { logger?: Logger } = {}) {
    super(config, opts);
  }

  protected override isOwnPort(port: number): boolean {
    return super.isOwnPort(port) || (port >= this.fullRange.portMin && port <= this.fullRange.portMax);
  }
}
