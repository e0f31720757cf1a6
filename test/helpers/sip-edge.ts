/**
 * One drachtio-server, relay and keylatch SIP edge per test file, started before its tests and
 * stopped after. Suites that need them skip, with one loud line, when drachtio-server or sipp
 * is missing.
 */
import { loadConfig } from '../../src/config/load';
import type { SipConfig } from '../../src/config/schema';
import { Relay } from '../../src/media/relay';
import { startSipEdge, type SipEdge } from '../../src/sip/edge';
import { drachtioBinary, selfSignedCert, startDrachtio, type RunningDrachtio } from './drachtio';
import { testMediaConfig, type MediaOverrides } from './peers';
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
}

/** pbxContacts: also run a PBX-facing drachtio-server (sip.pbxDrachtio), its admin port adminPort + 1. */
export function sipEdgeFixture(opts: { contacts: string[]; pbxContacts?: string[]; adminPort: number; sip?: Partial<SipConfig>; media?: MediaOverrides; tls?: boolean }): SipFixture {
  const f = {} as SipFixture;
  beforeAll(async () => {
    f.drachtio = await startDrachtio({ contacts: opts.contacts, adminPort: opts.adminPort, ...(opts.tls ? { tls: selfSignedCert() } : {}) });
    f.pbxDrachtio = opts.pbxContacts ? await startDrachtio({ contacts: opts.pbxContacts, adminPort: opts.adminPort + 1 }) : null;
    f.relay = new Relay(testMediaConfig(opts.media));
    f.sip = { ...loadConfig({ env: {} }).sip, ...opts.sip };
    f.edge = await startSipEdge({ drachtio: f.drachtio.admin, pbxDrachtio: f.pbxDrachtio?.admin ?? null, relay: f.relay, sip: f.sip });
  });
  afterAll(async () => {
    await f.edge?.close();
    await f.relay?.close();
    await f.drachtio?.stop();
    await f.pbxDrachtio?.stop();
  });
  return f;
}
