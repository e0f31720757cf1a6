import type Srf from 'drachtio-srf';
import type { SipConfig } from '../config/schema';
import type { Logger } from '../log';
import type { LegOptions } from '../media/call';
import { PortPoolExhausted } from '../media/port-pool';
import { RelayError } from '../media/relay';
import { isSecureTransport } from '../nat/binding';
import type { BindingStore } from '../nat/binding-store';
import { SdpError, parseSdp } from '../sdp/session';
import type { PbxPeer } from '../sip/pbx-peer';
import { contactUri, userOf } from '../sip/registration';
import { destroyQuietly, transportOf, type SipRequest, type SipResponse } from '../sip/srf';
import { INFO_DTMF_TYPES, parseInfoDtmf } from './info-dtmf';
import { RoomError, type RoomRegistry } from './registry';
import { LocalSeats, RoomUnavailable, type RoomSeat, type RoomSeats } from './seats';

export interface RoomDeskDeps {
  rooms: RoomRegistry;
  pbx: PbxPeer | null;
  store: BindingStore;
  sip: SipConfig;
  log: Logger;
  /** Where joins go: this process's registry unless several edge processes share the rooms (sibling-rooms.ts). */
  seats?: RoomSeats;
}

/**
 * keylatch as the UAS of its own rooms: an INVITE to sip:<prefix><name>@<any host> is
 * answered here and never reaches the PBX. Only the PBX (its callers and trunks) and clients
 * registered through this keylatch may join; each gets the leg policy a call would give it.
 */
export class RoomDesk {
  private readonly seats: RoomSeats;

  constructor(private readonly deps: RoomDeskDeps) {
    this.seats = deps.seats ?? new LocalSeats(deps.rooms);
  }

  /**
   * Whether an INVITE is for a room: a room's user part, whatever the host. A phone whose domain
   * is the PBX's dials sip:room-standup@<its domain>; sent on to the PBX, it would come back to
   * a room here as a hairpin (or not at all). serve() lets in only the PBX and registered clients.
   */
  claims(req: SipRequest): boolean {
    return this.deps.rooms.roomNameOf(userOf(req.uri)) !== null;
  }

  async serve(req: SipRequest, res: SipResponse, arrivedOn: Srf, onPbxSide: boolean): Promise<void> {
    const { rooms, pbx, log } = this.deps;
    const name = rooms.roomNameOf(userOf(req.uri))!;
    const callId = req.get('Call-ID');
    if (pbx?.strangerOnPbxSide(req, onPbxSide)) return void res.send(403, 'Forbidden', {});
    const fromPbx = onPbxSide || !!pbx?.sent(req);
    const who = contactUri(req.get('From'));
    if (!fromPbx && !(await this.registered(req, who))) {
      log.info({ callId, room: name, who, source: req.source_address }, 'room: refused a caller that is neither the PBX nor registered here');
      return void res.send(403, 'Register first', {});
    }
    if (!req.body) return void res.send(488, 'Offerless INVITE not supported', {});
    let leg: LegOptions;
    try {
      leg = this.legOptions(req, fromPbx);
    } catch (err) {
      return this.refuse(res, err);
    }
    if (this.deps.sip.requireKey && !fromPbx && leg.policy !== 'key') {
      return void res.send(403, 'keylatch key required', { headers: { Warning: '399 keylatch "sign in over TLS or WSS and offer a=keylatch:v1"' } });
    }
    let joined: { seat: RoomSeat; answer: string };
    try {
      joined = await this.seats.join(name, who, leg, req.body);
    } catch (err) {
      return this.refuse(res, err);
    }
    const { seat, answer } = joined;
    let dialog: Srf.Dialog;
    try {
      // drachtio-srf's typings want a callback form; the promise form takes (req, res, opts).
      const createUAS = arrivedOn.createUAS.bind(arrivedOn) as unknown as (q: SipRequest, s: SipResponse, o: object) => Promise<Srf.Dialog>;
      dialog = await createUAS(req, res, { localSdp: answer, headers: { 'Content-Type': 'application/sdp' } });
    } catch (err) {
      // CANCEL, or the caller went away before our 200 was acknowledged.
      log.info({ callId, room: name, err: (err as Error).message }, 'room: join not completed');
      seat.hangup();
      return;
    }
    // Which process holds the dialog (the owner's 'room: joined' says where the media is).
    log.info({ callId, room: name, participant: seat.id, who }, 'room: answered');
    this.wire(dialog, seat, callId);
    if (!(dialog as Srf.Dialog & { connected: boolean }).connected) seat.hangup();
  }

  private wire(dialog: Srf.Dialog, seat: RoomSeat, callId: string): void {
    let ended = false;
    seat.onEnd(() => {
      ended = true;
      destroyQuietly(dialog);
    });
    dialog.on('destroy', () => {
      // A BYE this side sent because the room let the participant go needs no leave of its own.
      if (!ended) seat.hangup();
    });
    dialog.on('modify', (req: SipRequest, res: SipResponse) => {
      (req.body ? seat.describe(req.body) : Promise.resolve(dialog.local.sdp)).then(
        (body) => res.send(200, { body, headers: { 'Content-Type': 'application/sdp' } }),
        (err: Error) => {
          this.deps.log.warn({ callId, err: err.message }, 'room: re-INVITE refused');
          res.send(err instanceof SdpError ? 488 : 500, {});
        },
      );
    });
    dialog.on('info', (req: SipRequest, res: SipResponse) => {
      const dtmf = parseInfoDtmf(req.get('Content-Type'), req.body);
      if (dtmf.kind === 'key') seat.dtmf(dtmf.key);
      if (dtmf.kind === 'key' || dtmf.kind === 'empty') return void res.send(200, {});
      this.deps.log.info({ callId, participant: seat.id, contentType: req.get('Content-Type'), why: dtmf.kind === 'malformed' ? dtmf.why : 'type' }, 'room: INFO refused');
      if (dtmf.kind === 'unsupported') return void res.send(415, 'Unsupported Media Type', { headers: { Accept: INFO_DTMF_TYPES.join(', ') } });
      res.send(400, 'Bad DTMF', { headers: { Warning: `399 keylatch "${dtmf.why}"` } });
    });
    dialog.on('refer', (_req: SipRequest, res: SipResponse) => res.send(603, 'Transfer not supported', {}));
  }

  /**
   * A client registered here sends from its binding's flow: the From AOR's binding, on the
   * same address and transport (as binding-refresh.ts moves a binding, never on From alone).
   */
  private async registered(req: SipRequest, aor: string): Promise<boolean> {
    try {
      const transport = transportOf(req);
      return (await this.deps.store.byAor(aor)).some((b) => b.source.address === req.source_address && b.transport === transport && b.expires > Date.now());
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'room: binding lookup failed');
      return false;
    }
  }

  /** The policy a call would give this caller: key for a plugin client over TLS/WSS, guarded otherwise. */
  private legOptions(req: SipRequest, fromPbx: boolean): LegOptions {
    const secure = isSecureTransport(transportOf(req));
    const announces = parseSdp(req.body).announcesKeylatch;
    return { policy: !fromPbx && secure && announces ? 'key' : 'guarded', secure, signallingAddress: req.source_address };
  }

  private refuse(res: SipResponse, err: unknown): void {
    if (err instanceof RoomError && err.code === 'hairpin') {
      this.deps.log.warn({ err: err.message }, 'room: refused a call routed back through the PBX');
      return void res.send(488, 'Not Acceptable Here', { headers: { Warning: `399 keylatch "${err.message}"` } });
    }
    if (err instanceof RoomError) return void res.send(err.code === 'room-full' ? 486 : 404, err.code === 'room-full' ? 'Room full' : 'No such room', {});
    if (err instanceof SdpError) return void res.send(488, 'Not Acceptable Here', { headers: { Warning: `399 keylatch "${err.message}"` } });
    if (err instanceof PortPoolExhausted) return void res.send(503, 'Media ports exhausted', {});
    if (err instanceof RoomUnavailable) {
      this.deps.log.warn({ err: err.message }, 'room: join refused, the room\'s edge process is unavailable');
      return void res.send(503, 'Room unavailable', { headers: { 'Retry-After': '5' } });
    }
    if (err instanceof RelayError && err.code === 'insecure-key-transport') return void res.send(403, 'Key requires TLS or WSS', {});
    throw err;
  }
}
