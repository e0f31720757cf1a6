import Srf from 'drachtio-srf';
import { silentLogger, type Logger } from '../log';
import type { SipConfig } from '../config/schema';
import { MemoryBindingStore, type BindingStore } from '../nat/binding-store';
import { answerOptions } from './keepalive-responder';
import type { Relay } from '../media/relay';
import { KeepaliveScheduler } from '../nat/keepalive';
import { ownsFlow, SOLE, type EdgeShare } from '../edge-processes';
import { InProcessNode, type RelayNode } from '../relay-pool/nodes';
import { RelayPool } from '../relay-pool/pool';
import { MediaWatch } from '../relay-pool/media-watch';
import type { RoomRegistry } from '../rooms/registry';
import type { RoomSeats } from '../rooms/seats';
import { RoomDesk } from '../rooms/sip-rooms';
import { CallSession } from './call-session';
import { forwardRequest } from './forward';
import { LocalNames } from './local-names';
import { PbxPeer } from './pbx-peer';
import { contactUri, userOf } from './registration';
import { registrar } from './registrar';
import { router, routesConfirmed, type Handler, type SipRequest, type SipResponse } from './srf';
import { installWireGuard } from './wire-guard';

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

type DrachtioAdmin = { host: string; port: number; secret: string };

export interface EdgeOptions {
  drachtio: DrachtioAdmin;
  /** A second drachtio-server that only faces the PBX (sip.pbxDrachtio). */
  pbxDrachtio?: DrachtioAdmin | null;
  sip: SipConfig;
  relay: Relay;
  /** The relay nodes calls go on; default: just `relay`. The edge moves the calls of a node that dies. */
  pool?: RelayPool;
  store?: BindingStore;
  logger?: Logger;
  /** Group calls (src/rooms): INVITEs to its rooms are answered here, not sent to the PBX. */
  rooms?: RoomRegistry | null;
  /** Where room joins go when several edge processes share the rooms (src/rooms/sibling-rooms.ts); default: `rooms`. */
  roomSeats?: RoomSeats | null;
  /** Which of sip.processes edge processes on this drachtio-server this is: it keeps alive only its share of the flows. */
  share?: EdgeShare;
}

export interface SipEdge {
  srf: Srf;
  /** The drachtio-server the PBX sends to: `srf` itself unless sip.pbxDrachtio is set. */
  pbxSrf: Srf;
  /** Each drachtio-server's SIP listeners as it reported them, e.g. "udp/1.2.3.4:5060,wss/1.2.3.4:8443". */
  listeners: string[];
  store: BindingStore;
  calls: Map<string, CallSession>;
  keepalive: KeepaliveScheduler;
  pool: RelayPool;
  close(): Promise<void>;
}

/** Connects to one drachtio-server; resolves with its SIP listeners once the server has this edge's routes. */
function connect(srf: Srf, admin: DrachtioAdmin, log: Logger): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    srf.once('connect', (err: Error | null, hostport: string) => {
      if (err) return reject(err);
      routesConfirmed(srf).then(() => {
        log.info({ hostport, admin: `${admin.host}:${admin.port}` }, 'connected to drachtio-server');
        resolve(hostport);
      }, (e: Error) => {
        srf.disconnect(); // and no reconnecting: the caller gives up on this edge
        reject(e);
      });
    });
    srf.once('error', reject);
    void srf.connect(admin);
  });
}

/**
 * An OPTIONS answered here as a keepalive: the PBX's, one to keylatch itself (no user part), or
 * one a phone sends to its own AOR (some softphones ping themselves). Others go on.
 */
function isKeepalive(req: SipRequest, pbx: PbxPeer | null): boolean {
  const user = userOf(req.uri);
  return !!pbx?.sent(req) || user === null || user === userOf(contactUri(req.get('From')));
}

/**
 * The SIP edge: a drachtio-srf connection with a handler per method, wired here and nowhere
 * else. With sip.pbxDrachtio a second connection takes what the PBX sends (calls to phones,
 * its OPTIONS); everything keylatch sends leaves through the first, where the phones' flows are.
 */
export async function startSipEdge(opts: EdgeOptions): Promise<SipEdge> {
  const log = opts.logger ?? silentLogger;
  const share = opts.share ?? SOLE;
  // Before any connection: srf's own framing code can end the process (wire-guard.ts).
  installWireGuard(log);
  const srf = new Srf();
  const pbxSrf = opts.pbxDrachtio ? new Srf() : srf;
  const store = opts.store ?? new MemoryBindingStore();
  const names = new LocalNames(opts.sip);
  const pbx = opts.sip.pbx ? new PbxPeer(opts.sip.pbx, opts.sip.peerEdges) : null;
  const handlers = router(srf);
  const forwardDeps = { srf, store, sip: opts.sip, names, pbx, log };
  const forward = forwardRequest(forwardDeps);
  const localOptions = answerOptions(store, log);
  handlers.options(guard(log, (req, res) => (isKeepalive(req, pbx) ? localOptions(req, res) : forward(req, res))));
  handlers.message(guard(log, forward));
  handlers.register(guard(log, registrar({ srf, store, sip: opts.sip, names, log })));
  const calls = new Map<string, CallSession>();
  // By their id on the relay node, which the pool names when a node dies.
  const byRelayCall = new Map<string, CallSession>();
  const pool = opts.pool ?? new RelayPool([{ node: new InProcessNode(opts.relay), weight: 1 }], { pingIntervalMs: 1000, missedPingsDown: 1 });
  // Call-IDs of keylatch's own INVITEs toward the PBX, to recognise one looping back; and, per
  // call, which of them it placed, so a call's end forgets its own without a scan of them all.
  const ownLegs = new Set<string>();
  const legsOf = new Map<string, string[]>();
  const callDeps = {
    srf,
    pbxSrf,
    pbx,
    names,
    pool,
    store,
    sip: opts.sip,
    log,
    isOwnLeg: (callId: string) => ownLegs.has(callId),
    onEnd: (callId: string, relayCallId: string) => {
      if (byRelayCall.get(relayCallId)?.callId === callId) byRelayCall.delete(relayCallId);
      calls.delete(callId);
      for (const leg of legsOf.get(callId) ?? []) ownLegs.delete(leg);
      legsOf.delete(callId);
    },
  };
  const rooms = opts.rooms?.config.enabled ? new RoomDesk({ rooms: opts.rooms, pbx, store, sip: opts.sip, log, ...(opts.roomSeats ? { seats: opts.roomSeats } : {}) }) : null;
  const onInvite = (arrivedOn: Srf): Handler => guard(log, async (req, res) => {
    if (rooms?.claims(req)) return rooms.serve(req, res, arrivedOn, arrivedOn !== srf);
    const onOwnLeg = (leg: string): void => {
      ownLegs.add(leg);
      const callId = req.get('Call-ID');
      legsOf.set(callId, [...(legsOf.get(callId) ?? []), leg]);
    };
    const session = new CallSession(req, res, { ...callDeps, onOwnLeg }, arrivedOn);
    calls.set(session.callId, session);
    byRelayCall.set(session.relayCallId, session);
    await session.run();
  });
  handlers.invite(onInvite(srf));
  if (pbxSrf !== srf) {
    const pbxHandlers = router(pbxSrf);
    pbxHandlers.invite(onInvite(pbxSrf));
    pbxHandlers.options(guard(log, localOptions));
    pbxHandlers.message(guard(log, forwardRequest(forwardDeps, true)));
  }
  const onDeadMedia = ({ callId }: { callId: string }): void => calls.get(callId)?.hangUp('media timeout');
  opts.relay.on('media-timeout', onDeadMedia);
  // One call at a time: a re-INVITE toward a B2BUA PBX may come back as the other half of the
  // same conversation (its own session, on the same dead node), which that offer then moves;
  // moving both at once would cross two re-INVITEs in the PBX (491).
  let moving: Promise<void> = Promise.resolve();
  // A node found down loses every call, which move to other nodes; a live one that forgot some
  // (restarted between pings, or lost a worker) only those, which may go back onto it.
  const onNodeDown = (node: RelayNode, callIds: string[]): void => {
    const sessions = callIds.map((id) => byRelayCall.get(id)).filter((c): c is CallSession => c !== undefined);
    for (const c of sessions) c.relayLost();
    moveAll(node, sessions, null);
  };
  // Only the placement the node lost: two checks that both saw it gone, or one that saw it
  // before a move placed it again, must not move it twice.
  const onCallsForgotten = (node: RelayNode, lost: Array<{ callId: string; placement: number }>): void => {
    const sessions = lost.flatMap(({ callId, placement }) => {
      const c = byRelayCall.get(callId);
      const at = c?.mediaOnNode();
      return c && at && at.node === node && at.placement === placement ? [c] : [];
    });
    for (const c of sessions) c.relayLost(true);
    pool.lostWhileUp += sessions.length;
    moveAll(node, sessions, new Set(sessions.map((c) => c.relayCallId)));
  };
  /** `forgotten`: the relay calls a live node lost (null: the node is down, all of them). */
  const moveAll = (node: RelayNode, sessions: CallSession[], forgotten: Set<string> | null): void => {
    // Hairpinned calls hold a leg of a call there (this edge's or another's): the owner's move
    // re-offers it to them.
    for (const c of byRelayCall.values()) {
      if (c.hairpinOwner !== null && c.relayNode === node.id && (!forgotten || forgotten.has(c.hairpinOwner))) c.relayLost(forgotten !== null);
    }
    if (forgotten) log.warn({ relay: node.id, calls: sessions.length }, 'relay node lost calls while up: placing them again');
    else log.warn({ relay: node.id, calls: sessions.length }, 'relay node down: moving its calls to other nodes');
    // Callers' halves first: the PBX brings each one's re-offer to the callee's half, which
    // can then adopt the caller's leg on its new node instead of anchoring the call twice.
    sessions.sort((x, y) => Number(x.toClient) - Number(y.toClient));
    for (const c of sessions) moving = moving.then(() => c.moveMedia());
  };
  pool.on('down', onNodeDown);
  // Dead media on ng nodes (they do not tell the edge, as the in-process relay does), and calls a
  // live node lost: src/relay-pool/media-watch.ts.
  const mediaWatch = new MediaWatch(pool, () => calls.values(), pool.opts.mediaCheckIntervalMs ?? 0, onCallsForgotten, log);
  mediaWatch.start();
  const keepalive = new KeepaliveScheduler({ srf, store, sip: opts.sip, log, holdsFlow: (b) => names.holdsFlow(b.localSocket) && ownsFlow(b.id, share) });
  const listeners = [await connect(srf, opts.drachtio, log)];
  if (opts.pbxDrachtio) {
    try {
      listeners.push(await connect(pbxSrf, opts.pbxDrachtio, log));
    } catch (err) {
      srf.disconnect();
      // Stop its reconnecting too (it may never have had a socket).
      try {
        pbxSrf.disconnect();
      } catch {
        /* nothing to close */
      }
      throw err;
    }
  }
  listeners.forEach((l) => names.addListeners(l));
  for (const s of new Set([srf, pbxSrf])) s.on('error', (err: Error) => log.warn({ err: err.message }, 'drachtio connection error'));
  keepalive.start();
  return {
    srf,
    pbxSrf,
    listeners,
    store,
    calls,
    keepalive,
    pool,
    async close() {
      keepalive.stop();
      pool.off('down', onNodeDown);
      mediaWatch.stop();
      opts.relay.off('media-timeout', onDeadMedia);
      srf.disconnect();
      if (pbxSrf !== srf) pbxSrf.disconnect();
      await store.close();
    },
  };
}
