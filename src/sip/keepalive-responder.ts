import type { Logger } from '../log';
import type { BindingStore } from '../nat/binding-store';
import { refreshBinding } from './binding-refresh';
import type { SipRequest, SipResponse } from './srf';

/**
 * Clients keep their NAT pinhole open with OPTIONS (and CRLF or STUN, which drachtio-server
 * answers itself). An OPTIONS addressed to us gets a 200 straight away.
 */
export function answerOptions(store: BindingStore, log: Logger) {
  return async (req: SipRequest, res: SipResponse): Promise<void> => {
    await refreshBinding(store, req, log);
    log.debug({ from: `${req.protocol}/${req.source_address}:${req.source_port}` }, 'OPTIONS keepalive');
    res.send(200, { headers: { Accept: 'application/sdp', Allow: 'INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REFER, REGISTER' } });
  };
}
