import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { LegStats } from './call';
import type { PortCounters } from './relay-port';
import type { Relay } from './relay';

/**
 * Prometheus view of the relay. Everything is read at scrape time from counters the packet
 * path already keeps, so metrics add no per-packet cost.
 */
export function relayMetrics(relay: Relay, registry: Registry = new Registry()): Registry {
  collectDefaultMetrics({ register: registry, prefix: 'keylatch_' });
  const counterFrom = (name: string, help: string, field: keyof PortCounters): void => {
    new Counter({
      name, help, registers: [registry],
      collect() {
        this.reset();
        this.inc(relay.totals()[field]);
      },
    });
  };
  counterFrom('keylatch_relay_packets_received_total', 'Datagrams received on relay ports', 'packetsIn');
  counterFrom('keylatch_relay_bytes_received_total', 'Bytes received on relay ports', 'bytesIn');
  counterFrom('keylatch_relay_packets_forwarded_total', 'Datagrams sent toward endpoints', 'packetsOut');
  counterFrom('keylatch_relay_bytes_forwarded_total', 'Bytes sent toward endpoints', 'bytesOut');
  new Counter({
    name: 'keylatch_relay_dropped_total', help: 'Datagrams dropped, by reason', labelNames: ['reason'], registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(relay.dropCounts())) this.inc({ reason }, n);
    },
  });
  new Counter({
    name: 'keylatch_relay_latch_events_total', help: 'Latches and unlatches', registers: [registry],
    collect() {
      this.reset();
      this.inc(relay.latchEvents);
    },
  });
  new Gauge({ name: 'keylatch_relay_calls', help: 'Calls with media anchored', registers: [registry], collect() { this.set(relay.callCount); } });
  new Gauge({ name: 'keylatch_relay_direct_calls', help: 'Calls whose clients all report their media going to each other directly', registers: [registry], collect() { this.set(relay.directCallCount); } });
  new Counter({
    name: 'keylatch_relay_rendezvous_sent_total', help: 'Rendezvous messages sent (one client told where its peer is)', registers: [registry],
    collect() {
      this.reset();
      this.inc(relay.rendezvousSent);
    },
  });
  new Gauge({ name: 'keylatch_relay_port_pairs_in_use', help: 'RTP/RTCP port pairs allocated', registers: [registry], collect() { this.set(relay.pool.inUse); } });
  new Gauge({ name: 'keylatch_relay_port_pairs_capacity', help: 'RTP/RTCP port pairs in the pool', registers: [registry], collect() { this.set(relay.pool.capacity); } });

  const perLeg = (name: string, help: string, pick: (s: LegStats) => number): void => {
    new Gauge({
      name, help, labelNames: ['call_id', 'tag', 'policy'], registers: [registry],
      collect() {
        this.reset();
        for (const { callId, stats } of relay.legs()) this.set({ call_id: callId, tag: stats.tag ?? '', policy: stats.policy }, pick(stats));
      },
    });
  };
  perLeg('keylatch_leg_packets_received', 'Packets received from this leg', (s) => s.packetsIn);
  perLeg('keylatch_leg_bytes_received', 'Bytes received from this leg', (s) => s.bytesIn);
  perLeg('keylatch_leg_packets_sent', 'Packets sent to this leg', (s) => s.packetsOut);
  perLeg('keylatch_leg_rtp_lost', 'RTP packets lost from this leg (RFC 3550)', (s) => s.lost);
  perLeg('keylatch_leg_jitter_seconds', 'Interarrival jitter from this leg (RFC 3550)', (s) => s.jitterMs / 1000);
  perLeg('keylatch_leg_direct', '1 while this leg\'s client reports its media going straight to the other client', (s) => (s.mediaPath === 'direct' ? 1 : 0));
  perLeg('keylatch_leg_authenticated', '1 when every stream of a key-policy leg has proved the key', (s) => (s.authenticated ? 1 : 0));
  perLeg('keylatch_leg_last_seen_timestamp_seconds', 'When media last arrived from this leg', (s) => s.lastSeen / 1000);
  return registry;
}
