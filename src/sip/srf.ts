import Srf from 'drachtio-srf';

export type SipRequest = Srf.SrfRequest;
export type SipResponse = Srf.SrfResponse;
export type Handler = (req: SipRequest, res: SipResponse) => void | Promise<void>;

/** drachtio-srf routes by SIP method through methods its typings leave out. */
export interface MethodRouter {
  options(h: Handler): void;
  register(h: Handler): void;
  invite(h: Handler): void;
}

export const router = (srf: Srf): MethodRouter => srf as unknown as MethodRouter;

type RequestOptions = { method: string; headers: Record<string, string>; body?: string; proxy?: string };
type SendRequest = (uri: string, opts: RequestOptions, cb: (err: unknown, sent?: SipRequest) => void) => void;

/** srf.request as drachtio-srf implements it: (uri, options, callback). */
export const sendRequest = (srf: Srf): SendRequest => {
  const s = srf as unknown as { request: SendRequest };
  return s.request.bind(srf);
};
