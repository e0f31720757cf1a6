import type { NgHandler } from '../../control/ng-server';
import { listLimit } from '../../control/ng-server';
import type { NgDict } from '../../control/ng-options';
import { RelayError } from '../relay';
import type { RelayCluster } from './relay-cluster';

const error = (reason: string): NgDict => ({ result: 'error', 'error-reason': reason });

/**
 * The ng front of a RelayCluster: every command of a call goes to the worker the call lives
 * in; `list` asks every live worker and joins the answers; `ping` is answered here while any
 * worker is alive. A new call (an offer for an unknown call-id) is placed first, so that an
 * answer racing the offer's reply already goes to the same worker.
 */
export function clusterCommands(cluster: RelayCluster): NgHandler {
  const alive = (w: number): boolean => cluster.isAlive(w);
  const placement = cluster.placement;

  const forward = async (worker: number, req: NgDict): Promise<NgDict> => {
    try {
      return await cluster.command(worker, req);
    } catch (err) {
      return error((err as Error).message);
    }
  };

  return async (req) => {
    const command = req.command;
    if (typeof command !== 'string') throw new RelayError('bad-request', 'missing "command"');
    if (command === 'ping') return cluster.info().some((w) => w.alive) ? { result: 'pong' } : error('no relay worker is running');
    if (command === 'list') {
      const limit = listLimit(req);
      const replies = await Promise.all(cluster.info().filter((w) => w.alive).map((w) => forward(w.index, { ...req, limit })));
      const calls = replies.flatMap((r) => (r.result === 'ok' && Array.isArray(r.calls) ? (r.calls as unknown[]) : []));
      return { result: 'ok', calls: calls.slice(0, limit) };
    }
    const callId = req['call-id'];
    if (typeof callId !== 'string') {
      // Nothing to route by: any live worker gives the same answer (a bad-request or "unrecognized").
      const any = cluster.info().find((w) => w.alive);
      return any ? forward(any.index, req) : error('no relay worker is running');
    }
    const fresh = command === 'offer' && placement.of(callId) === undefined;
    const worker = fresh ? placement.place(callId, alive) : placement.route(callId, alive);
    if (worker === null) return error('no relay worker is running');
    const reply = await forward(worker, req);
    // A call that did not come to exist, or that just ended, is no longer placed.
    if ((fresh && reply.result !== 'ok') || (command === 'delete' && (reply.result === 'ok' || reply['error-reason'] === 'Unknown call-id'))) {
      if (placement.of(callId) === worker) placement.forget(callId);
    }
    return reply;
  };
}
