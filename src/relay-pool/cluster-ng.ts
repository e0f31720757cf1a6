import type { NgDict } from '../control/ng-options';
import type { NgHandler } from '../control/ng-server';
import type { RelayCluster } from '../media/cluster/relay-cluster';

/**
 * What an edge pooling this relay needs of its ng when the relay runs on several workers: the
 * media address and the time calls were last lost (a worker's death) in `ping`, as a single
 * Relay answers it (ng-server.ts), and `adopt` asked of every live worker
 * in turn, since the leg is named by the ports in its SDP and not by a call-id the dispatcher
 * could route by. Everything else goes to the dispatcher as it is.
 */
export function poolCommands(dispatcher: NgHandler, cluster: RelayCluster, mediaAddress: string): NgHandler {
  return async (req: NgDict) => {
    if (req.command === 'adopt') {
      let last: NgDict = { result: 'error', 'error-reason': 'no leg of this relay is addressed by that SDP' };
      for (const w of cluster.info().filter((x) => x.alive)) {
        try {
          const reply = await cluster.command(w.index, req);
          if (reply.result === 'ok') return reply;
          last = reply;
        } catch {
          /* a worker that went away: the next may hold the leg */
        }
      }
      return last;
    }
    const reply = await dispatcher(req);
    return req.command === 'ping' && reply.result === 'pong' ? { ...reply, 'media-address': mediaAddress, 'calls-lost-at': cluster.callsLostAt } : reply;
  };
}
