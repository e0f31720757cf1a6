/**
 * One drachtio-server, relay and keylatch SIP edge per test file, started before its tests and
 * stopped after. Suites that need them skip, with one loud line, when drachtio-server or sipp
 * is missing.
 */
import { loadConfig } from '../../src/config/load';
import type { RoomsConfig, SipConfig } from '../../src/config/schema';
import { Relay } from '../../src/media/relay';
import { RoomRegistry } from '../../src/rooms/registry';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { drachtioBinary, selfSignedCert, startDrachtio, type RunningDrachtio } from './drachtio';
import { rtp, testMediaConfig, waitFor, type MediaOverrides, type Peer } from './peers';
import { sippUnavailable } from './sipp';

/** True (after printing why) when a SIP suite cannot run here. */
export function skipSipSuite(suite: string): boolean {
  const why = !drachtioBinary() ? 'drachtio-server not found (set DRACHTIO_BIN or put drachtio on PATH)' : sippUnavailable();
  if (why) console.warn(`!!! SKIPPED ${suite}: ${why}`);
  return why !== null;
}

export interface SipFixture {
  drachtio: RunningDrachtio;
  /** The PBX-facing drachtio-server, when the fixture was asked for one (pbxContacts). */
  pbxDrachtio: RunningDrachtio | null;
  relay: Relay;
  edge: SipEdge;
  /** The live configuration object: a test may change a switch on the running edge. */
  sip: SipConfig;
  /** Group calls, when the fixture was asked for them (rooms). */
  rooms: RoomRegistry | null;
}

/** pbxContacts: also run a PBX-facing drachtio-server (sip.pbxDrachtio), its admin port adminPort + 1. */
export function sipEdgeFixture(opts: { contacts: string[]; pbxContacts?: string[]; adminPort: number; sip?: Partial<SipConfig>; media?: MediaOverrides; tls?: boolean; rooms?: Partial<RoomsConfig> }): SipFixture {
  const f = {} as SipFixture;
  beforeAll(async () => {
    f.drachtio = await startDrachtio({ contacts: opts.contacts, adminPort: opts.adminPort, ...(opts.tls ? { tls: selfSignedCert() } : {}) });
    f.pbxDrachtio = opts.pbxContacts ? await startDrachtio({ contacts: opts.pbxContacts, adminPort: opts.adminPort + 1 }) : null;
    f.relay = new Relay(testMediaConfig(opts.media));
    f.sip = { ...loadConfig({ env: {} }).sip, ...opts.sip };
    f.rooms = opts.rooms ? new RoomRegistry({ ...loadConfig({ env: {} }).rooms, enabled: true, ...opts.rooms }, f.relay, f.relay.config) : null;
    f.edge = await startSipEdge({ drachtio: f.drachtio.admin, pbxDrachtio: f.pbxDrachtio?.admin ?? null, relay: f.relay, sip: f.sip, rooms: f.rooms });
  });
  afterAll(async () => {
    await f.edge?.close();
    f.rooms?.close();
    await f.relay?.close();
    await f.drachtio?.stop();
    await f.pbxDrachtio?.stop();
  });
  return f;
}

/**
 * With the relay's one call up, sends 10 RTP packets each way, phone (SSRC 0xa) and PBX (0xb)
 * to their own legs, and waits until 8 have crossed each way. The PBX's leg is the one whose
 * tag has a 'p' (the sipp PBX scenarios' tags).
 */
export async function exchangeRtp(f: SipFixture, phoneMedia: Peer, pbxMedia: Peer): Promise<void> {
  const legs = f.relay.stats(f.relay.callIds()[0]!)!;
  const pbxLeg = legs.find((l) => l.tag!.includes('p'))!;
  const phoneLeg = legs.find((l) => l !== pbxLeg)!;
  for (let i = 0; i < 10; i++) {
    phoneMedia.send(rtp(i, i * 160, 0xa), { address: '127.0.0.1', port: phoneLeg.streams[0]!.rtp.port });
    pbxMedia.send(rtp(i, i * 160, 0xb), { address: '127.0.0.1', port: pbxLeg.streams[0]!.rtp.port });
  }
  await waitFor(() => pbxMedia.media().length >= 8 && phoneMedia.media().length >= 8, 2000);
}
