import type { PooledCallStatus } from '../control/status';
import type { RelayNode } from './nodes';

/** A call as `keylatch status` asks after it: where its media is, if on a node. */
export interface PlacedCall {
  readonly callId: string;
  readonly mediaPlace: { node: RelayNode; relayCallId: string; hairpin: boolean } | null;
}

/** Pooled calls shown per request (each costs one ng query); the total is always given. */
export const STATUS_POOLED_CALL_LIMIT = 200;
/** Queries in flight at once. */
const PARALLEL = 32;

/**
 * The calls on ng nodes, each with its legs as its node reports them now (ng query). Calls on
 * the in-process relay are left out: the status shows them from the relay itself. A node that
 * does not answer, or no longer holds the call, is said so per call; the status still answers.
 */
export async function pooledCallStatuses(calls: Iterable<PlacedCall>, limit = STATUS_POOLED_CALL_LIMIT): Promise<{ total: number; shown: PooledCallStatus[] }> {
  const placed = [...calls].flatMap((c) => (c.mediaPlace && c.mediaPlace.node.kind !== 'in-process' ? [{ callId: c.callId, ...c.mediaPlace }] : []));
  const shown: PooledCallStatus[] = [];
  const due = placed.slice(0, limit);
  for (let i = 0; i < due.length; i += PARALLEL) {
    shown.push(...(await Promise.all(due.slice(i, i + PARALLEL).map(async (c): Promise<PooledCallStatus> => {
      const base = { callId: c.callId, relay: c.node.id, kind: c.node.kind, relayCallId: c.relayCallId, hairpin: c.hairpin };
      try {
        const held = await c.node.query(c.relayCallId);
        return held ? { ...base, legs: held.legs, timedOut: held.timedOut } : { ...base, legs: null, timedOut: false, error: 'the node does not hold this call' };
      } catch (err) {
        return { ...base, legs: null, timedOut: false, error: (err as Error).message };
      }
    }))));
  }
  return { total: placed.length, shown };
}
