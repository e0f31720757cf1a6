import Srf from 'drachtio-srf';
import { silentLogger, type Logger } from '../log';
import type { SipConfig } from '../config/schema';
import { MemoryBindingStore, type BindingStore } from '../nat/binding-store';
import { answerOptions } from './keepalive-responder';
import type { Relay } from '../media/relay';
import { KeepaliveScheduler } from '../nat/keepalive';
import { CallSession } from './call-session';
import { registrar } from './registrar';
import { router, type Handler, type SipRequest, type SipResponse } from './srf';

/** A handler that fails answers 500 and logs; the process and every other dialog go on. */
function guard(log: Logger, h: Handler): Handler {
  return async (req: SipRequest, res: SipResponse) => {
    try {
      await h(req, res);
    } catch (err) {
      log.error({ err, method: req.method, callId: req.get('Call-ID') }, 'SIP handler failed');
      if (!res.finalResponseSent) res.send(500, 'Internal error', {});
    }
  };
}

export interface EdgeOptions {
  drachtio: { host: string; port: number; secret: string };
  sip: SipConfig;
  relay: Relay;
  store?: BindingStore;
  logger?: Logger;
}

export interface SipEdge {
  srf: Srf;
  store: BindingStore;
  calls: Map<string, CallSession>;
  keepalive: KeepaliveScheduler;
  close(): Promise<void>;
}

/** The SIP edge: one drachtio-srf connection with a handler per method, wired here and nowhere else. */
export async function startSipEdge(opts: EdgeOptions): Promise<SipEdge> {
  const log = opts.logger ?? silentLogger;
  const srf = new Srf();
  const store = opts.store ?? new MemoryBindingStore();
  const handlers = router(srf);
  handlers.options(guard(log, answerOptions(store, log)));
  handlers.register(guard(log, registrar({ srf, store, sip: opts.sip, log })));
  const calls = new Map<string, CallSession>();
  const callDeps = { srf, relay: opts.relay, store, sip: opts.sip, log, onEnd: (callId: string) => calls.delete(callId) };
  handlers.invite(guard(log, async (req, res) => {
    const session = new CallSession(req, res, callDeps);
    calls.set(session.callId, session);
    await session.run();
  }));
  const onDeadMedia = ({ callId }: { callId: string }): void => calls.get(callId)?.hangUp('media timeout');
  opts.relay.on('media-timeout', onDeadMedia);
  const keepalive = new KeepaliveScheduler({ srf, store, sip: opts.sip, log });
  await new Promise<void>((resolve, reject) => {
    srf.once('connect', (err: Error | null, hostport: string) => {
      if (err) return reject(err);
      log.info({ hostport }, 'connected to drachtio-server');
      resolve();
    });
    srf.once('error', reject);
    void srf.connect(opts.drachtio);
  });
  srf.on('error', (err: Error) => log.warn({ err: err.message }, 'drachtio connection error'));
  keepalive.start();
  return {
    srf,
    store,
    calls,
    keepalive,
    async close() {
      keepalive.stop();
      opts.relay.off('media-timeout', onDeadMedia);
      srf.disconnect();
      await store.close();
    },
  };
}
