import Srf from 'drachtio-srf';
import { silentLogger, type Logger } from '../log';
import { answerOptions } from './keepalive-responder';
import { router } from './srf';

export interface EdgeOptions {
  drachtio: { host: string; port: number; secret: string };
  logger?: Logger;
}

export interface SipEdge {
  srf: Srf;
  close(): void;
}

/** The SIP edge: one drachtio-srf connection with a handler per method, wired here and nowhere else. */
export async function startSipEdge(opts: EdgeOptions): Promise<SipEdge> {
  const log = opts.logger ?? silentLogger;
  const srf = new Srf();
  router(srf).options(answerOptions(log));
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
  return { srf, close: () => srf.disconnect() };
}
