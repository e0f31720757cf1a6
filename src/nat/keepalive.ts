import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import { contactUri } from '../sip/registration';
import { requestWithTimeout, unregisterUpstream } from '../sip/upstream';
import type { Binding } from './binding';
import type { BindingStore } from './binding-store';

/**
 * Keeps NATed UDP flows open from our side (RFC 5626 section 4.4) and notices dead ones: an
 * OPTIONS down each flow every interval. Any response, even an error, proves the flow; after
 * maxFailures silences in a row the binding is dropped and the PBX told.
 */
export class KeepaliveScheduler {
  private readonly failures = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private running = false;

  constructor(private readonly deps: { srf: Srf; store: BindingStore; sip: SipConfig; log: Logger }) {}

  start(): void {
    this.timer = setInterval(() => void this.round(), this.deps.sip.keepalive.intervalSec * 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One pass over every binding; exposed so tests need not wait for the timer. */
  async round(): Promise<void> {
    if (this.running) return; // a slow round must not pile up behind itself
    this.running = true;
    try {
      const now = Date.now();
      const due = (await this.deps.store.all()).filter((b) => b.natted && b.transport === 'udp' && b.expires > now);
      await Promise.all(due.map((b) => this.probe(b)));
    } finally {
      this.running = false;
    }
  }

  private async probe(b: Binding): Promise<void> {
    const { srf, sip, log, store } = this.deps;
    try {
      const res = await requestWithTimeout(srf, contactUri(b.contact), {
        method: 'OPTIONS',
        headers: { From: `<sip:keylatch@${sip.advertisedAddress}>`, To: `<${b.aor}>` },
        proxy: `sip:${b.source.address}:${b.source.port}`,
      }, sip.keepalive.timeoutMs);
      // An ICMP port-unreachable makes the stack answer 503 itself, with no source address:
      // that is the flow being dead, not the phone answering.
      if (!res.source_address) throw new Error(`${res.status} generated locally: flow unreachable`);
      this.failures.delete(b.id);
    } catch (err) {
      const n = (this.failures.get(b.id) ?? 0) + 1;
      this.failures.set(b.id, n);
      log.info({ binding: b.id, aor: b.aor, failures: n, err: (err as Error).message }, 'keepalive failed');
      if (n < sip.keepalive.maxFailures) return;
      this.failures.delete(b.id);
      await store.remove(b.id);
      log.warn({ binding: b.id, aor: b.aor, source: b.source }, 'flow dead: binding dropped');
      await unregisterUpstream(srf, sip, b).catch((e: Error) => log.warn({ binding: b.id, err: e.message }, 'could not unregister upstream'));
    }
  }
}
