import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Binding } from '../nat/binding';
import { upstreamRegistration } from './registration';
import { sendRequest, type SipResponse } from './srf';

/** Sends a request and waits for its final response, or gives up after timeoutMs. */
export function requestWithTimeout(
  srf: Srf,
  uri: string,
  opts: { method: string; headers: Record<string, string>; body?: string; proxy?: string },
  timeoutMs: number,
): Promise<SipResponse> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer to ${opts.method} within ${timeoutMs} ms`)), timeoutMs);
    sendRequest(srf)(uri, opts, (err, sent) => {
      if (err || !sent) {
        clearTimeout(timer);
        return reject(err instanceof Error ? err : new Error(String(err)));
      }
      sent.on('response', (res?: SipResponse) => {
        if (!res || res.status < 200) return;
        clearTimeout(timer);
        resolve(res);
      });
    });
  });
}

/**
 * Tells the PBX a binding is gone: REGISTER with Expires 0 for the Contact keylatch registered.
 * The PBX may challenge; keylatch holds no credentials, so a 401 here leaves the PBX's own
 * registration to lapse on its own (at most upstreamExpiresSec).
 */
export async function unregisterUpstream(srf: Srf, sip: SipConfig, b: Binding): Promise<number> {
  const { contact, path } = upstreamRegistration(b, sip);
  const res = await requestWithTimeout(
    srf,
    b.aor,
    {
      method: 'REGISTER',
      headers: { From: `<${b.aor}>`, To: `<${b.aor}>`, Contact: contact, Expires: '0', ...(path ? { Path: path } : {}) },
      proxy: sip.pbx!,
    },
    sip.keepalive.timeoutMs * 2,
  );
  return res.status;
}
