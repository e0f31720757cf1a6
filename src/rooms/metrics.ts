import { Counter, Gauge, type Registry } from 'prom-client';
import { mixerStats } from './native-mixer';
import type { Participant } from './participant';
import type { RoomRegistry } from './registry';

/** Prometheus view of the rooms, read at scrape time from what the registry and mixer keep. */
export function registerRoomMetrics(rooms: RoomRegistry, registry: Registry): void {
  new Gauge({ name: 'keylatch_rooms', help: 'Rooms with at least one participant', registers: [registry], collect() { this.set(rooms.list().length); } });
  new Gauge({
    name: 'keylatch_room_participants', help: 'Participants in rooms, by role, how they receive, and whether their leg has latched',
    labelNames: ['role', 'mode', 'latched'], registers: [registry],
    collect() {
      this.reset();
      for (const r of rooms.list()) for (const p of r.participants()) this.inc({ role: p.role, mode: p.mode, latched: String(p.latched) });
    },
  });
  const total = (name: string, help: string, read: () => number): void => {
    new Counter({ name, help, registers: [registry], collect() { this.reset(); this.inc(read()); } });
  };
  total('keylatch_room_joins_total', 'Participants that joined a room', () => rooms.totals.joins);
  total('keylatch_room_talkspurts_total', 'Times a participant started talking (level-based)', () => rooms.totals.talkspurts);
  total('keylatch_room_dtmf_total', 'DTMF keys reported by participants (not mixed)', () => rooms.totals.dtmf);
  new Counter({
    name: 'keylatch_room_leaves_total', help: 'Participants that left a room, by why', labelNames: ['reason'], registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(rooms.totals.leaves)) this.inc({ reason }, n);
    },
  });
  total('keylatch_mixer_ticks_total', '20 ms mixer ticks run', () => mixerStats().ticks);
  total('keylatch_mixer_tick_seconds_total', 'Time the mixer ticks took (mixing, encoding, sending)', () => mixerStats().tickNs / 1e9);
  total('keylatch_mixer_clock_skips_total', 'Times the mixer fell more than 100 ms behind and skipped ahead', () => mixerStats().clockSkips);
  const perParticipant = (name: string, help: string, pick: (p: Participant) => number): void => {
    new Gauge({
      name, help, labelNames: ['room', 'participant'], registers: [registry],
      collect() {
        this.reset();
        for (const r of rooms.list()) for (const p of r.participants()) this.set({ room: r.name, participant: p.id }, pick(p));
      },
    });
  };
  perParticipant('keylatch_room_participant_late_packets', 'Packets that came too late for the jitter buffer', (p) => p.counters?.late ?? 0);
  perParticipant('keylatch_room_participant_buffer_seconds', 'Delay the jitter buffer aims for', (p) => (p.counters?.bufferMs ?? 0) / 1000);
  perParticipant('keylatch_room_participant_talking', '1 while the participant talks', (p) => (p.talking ? 1 : 0));
}
