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
