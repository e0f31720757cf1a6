import type Srf from 'drachtio-srf';
import { destroyQuietly, sendStatus, type SipRequest, type SipResponse } from './srf';

export interface BridgeOptions {
  /** Request-URI of the B leg, and where to send it. */
  uri: string;
  proxy: string;
  headers: Record<string, string>;
  /** SDP offered to B. */
  localSdpB: string;
  /** SDP for A, from B's answer (provisional or final). */
  localSdpA: (sdp: string, res: SipResponse) => Promise<string>;
  /** Response headers of B's that A must see (digest challenges, Retry-After, ...). */
  proxyResponseHeaders: string[];
}

export interface Bridged {
  uas: Srf.Dialog;
  uac: Srf.Dialog;
}

type Uac = Srf.Dialog & { res: SipResponse; remote: { sdp: string }; queueRequests: boolean };
type SentInvite = SipRequest & { cancel(opts?: object): void };
type SipFailure = Error & { status?: number; reason?: string; res?: SipResponse };

const copyHeaders = (from: SipResponse | undefined, names: string[]): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const h of names) if (from?.has(h)) out[h] = from.get(h);
  return out;
};

/**
 * A B2BUA whose two legs live on different drachtio-servers: the A leg (UAS) on the one the
 * INVITE arrived at, the B leg (UAC) on `uacSrf`. drachtio-srf's createB2BUA sends the B leg
 * through the A leg's own server connection, so it cannot do this. Used for calls from the PBX
 * when a second drachtio-server faces it (sip.pbxDrachtio): the PBX side and the phones' side
 * then keep separate dialog tables, and a record-routing PBX's looped call never meets keylatch's
 * own leg toward it.
 *
 * It does what createB2BUA does for a call with an offer: provisional responses (early media
 * SDP included) go to A, CANCEL from A cancels B, B's failure goes to A with its status, and
 * A is answered only once B has.
 */
export async function bridgeAcross(uasSrf: Srf, uacSrf: Srf, req: SipRequest, res: SipResponse, opts: BridgeOptions): Promise<Bridged> {
  let sent: SentInvite | null = null;
  let canceled = false;
  req.on('cancel', () => {
    canceled = true;
    sent?.cancel();
  });
  let uac: Uac;
  try {
    // drachtio-srf calls cbRequest(err, req), though its typings say cbRequest(req).
    const cbRequest = (_err: unknown, r?: SipRequest): void => {
      sent = (r ?? null) as SentInvite | null;
      if (canceled) sent?.cancel();
    };
    uac = (await uacSrf.createUAC(opts.uri, { proxy: opts.proxy, headers: opts.headers, localSdp: opts.localSdpB }, {
      cbRequest: cbRequest as unknown as (req: SipRequest) => void,
      cbProvisional: (p: SipResponse) => void forwardProvisional(p),
    })) as unknown as Uac;
  } catch (err) {
    const e = err as SipFailure;
    if (!res.finalResponseSent) sendStatus(res, e.status ?? 500, e.reason ?? 'Call failed', { headers: copyHeaders(e.res, opts.proxyResponseHeaders) });
    throw err;
  }
  // As createB2BUA does: B's re-INVITEs wait until A has ACKed our 200.
  uac.queueRequests = true;
  try {
    const sdpA = await opts.localSdpA(uac.remote.sdp ?? '', uac.res);
    // A CANCEL may also have come while the relay worked on B's answer.
    if (canceled) throw Object.assign(new Error('caller canceled'), { status: 487 });
    const uas = await uasSrf.createUAS(req, res, { localSdp: sdpA, headers: copyHeaders(uac.res, opts.proxyResponseHeaders) });
    uas.once('ack', () => (uac.queueRequests = false));
    return { uas, uac };
  } catch (err) {
    // B answered and A will not be (canceled, or its answer refused): hang B up rather than
    // leave the far end in a call nobody hears.
    destroyQuietly(uac);
    if (!res.finalResponseSent) res.send(500, 'Call failed', {});
    throw err;
  }

  async function forwardProvisional(p: SipResponse): Promise<void> {
    if (p.status <= 100 || res.finalResponseSent) return;
    // drachtio-srf refuses to send a status code it has no reason phrase for (a phone's 189).
    const status = [180, 181, 182, 183].includes(p.status) ? p.status : 183;
    const headers = copyHeaders(p, opts.proxyResponseHeaders);
    let body: string | undefined;
    try {
      body = p.body ? await opts.localSdpA(p.body, p) : undefined;
    } catch {
      // Early media SDP the relay refused: A still hears the ringing without it.
    }
    try {
      sendStatus(res, status, p.reason, body ? { headers, body } : { headers });
    } catch {
      // A's transaction is gone (CANCEL): nothing to tell it.
    }
  }
}
