import { Counter, Gauge, type Registry } from 'prom-client';
import type { RelayPool } from './pool';

/** The pool on the edge's registry: each node's state and calls, and every call moved off a dead node. Read at scrape time. */
export function registerPoolMetrics(pool: RelayPool, registry: Registry): void {
  new Gauge({
    name: 'keylatch_relay_node_up', help: 'Relay node answering pings (1) or down (0); draining nodes are up', labelNames: ['relay', 'kind'], registers: [registry],
    collect() {
      this.reset();
      for (const n of pool.status()) this.set({ relay: n.id, kind: n.kind }, n.state === 'down' ? 0 : 1);
    },
  });
  new Gauge({
    name: 'keylatch_relay_node_draining', help: 'Relay node draining: no new calls', labelNames: ['relay'], registers: [registry],
    collect() {
      this.reset();
      for (const n of pool.status()) this.set({ relay: n.id }, n.state === 'draining' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'keylatch_relay_node_calls', help: 'Calls this edge has on the relay node', labelNames: ['relay'], registers: [registry],
    collect() {
      this.reset();
      for (const n of pool.status()) this.set({ relay: n.id }, n.calls);
    },
  });
  new Counter({
    name: 'keylatch_relay_calls_moved_total', help: 'Calls moved off a relay node that died, by result', labelNames: ['result'], registers: [registry],
    collect() {
      this.reset();
      this.inc({ result: 'moved' }, pool.moves.moved);
      this.inc({ result: 'failed' }, pool.moves.failed);
    },
  });
  new Counter({
    name: 'keylatch_relay_node_lost_calls_total', help: 'Calls a relay node lost while it kept answering pings (it restarted, or a worker of it died), placed again', registers: [registry],
    collect() {
      this.reset();
      this.inc(pool.lostWhileUp);
    },
  });
  new Counter({
    name: 'keylatch_relay_node_media_timeouts_total', help: 'Calls ended because their relay node timed their media out or no longer held them', registers: [registry],
    collect() {
      this.reset();
      this.inc(pool.mediaTimeouts);
    },
  });
}
