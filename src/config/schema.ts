import { isIP } from 'node:net';
import { z } from 'zod';

const ipAddress = z.string().refine((s) => isIP(s) !== 0, 'must be an IPv4 or IPv6 address');
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/, 'must be HOST:PORT (IPv6 as [addr]:port)');
const port = z.number().int().min(1).max(65535);

export const mediaSchema = z
  .object({
    interface: ipAddress,
    advertisedAddress: ipAddress.nullable().default(null),
    portMin: port,
    portMax: port,
    allowLoopbackPeers: z.boolean().default(false),
    guarded: z.object({
      learnWindowMs: z.number().int().positive(),
      lockAfterPackets: z.number().int().min(1).max(100),
      strictSourceIp: z.boolean(),
      soleStreamLearning: z.boolean().default(true),
    }),
    key: z.object({
      nonceTtlMs: z.number().int().min(100).max(60000),
      rechallengeIntervalMs: z.number().int().min(100),
      consentTimeoutMs: z.number().int().min(100),
      challengesPerSecondPerSource: z.number().positive().max(1000),
    }),
    direct: z.object({ enabled: z.boolean() }).default({ enabled: true }),
    timeouts: z.object({
      mediaSec: z.number().positive(),
      holdSec: z.number().positive(),
    }),
    relays: z
      .array(
        z.object({
          url: z.union([z.literal('in-process'), z.string().regex(/^ng:\/\/(\[[0-9a-fA-F:]+\]|[^:\s/]+):\d{1,5}$/, 'must be ng://HOST:PORT or in-process')]),
          weight: z.number().int().min(0).max(1000).default(1),
          kind: z.enum(['keylatch', 'rtpengine']).default('keylatch'),
        }),
      )
      .default([])
      .refine((r) => new Set(r.map((n) => n.url)).size === r.length, 'each relay may be listed once'),
    relayPool: z
      .object({
        pingIntervalMs: z.number().int().min(50).default(400),
        pingTimeoutMs: z.number().int().min(20).default(300),
        missedPingsDown: z.number().int().min(1).default(2),
        commandTimeoutMs: z.number().int().min(100).default(2000),
        keySecret: z.string().min(32, 'must be at least 32 characters').nullable().default(null),
        mediaCheckIntervalMs: z.union([z.literal(0), z.number().int().min(500)]).default(5000),
      })
      .default({}),
    // keylatch relay only (src/media/cluster): worker processes, "auto" = one per core.
    workers: z.union([z.literal('auto'), z.number().int().min(1).max(256)]).default('auto'),
    sendBatching: z.enum(['gso', 'sendmmsg', 'off']).default('gso'),
    pollIntervalUs: z.number().int().min(0).max(100000).default(1000),
    // How the native fast path receives (native/fastpath.c): io_uring multishot receives, the epoll set, or io_uring where allowed.
    io: z.enum(['auto', 'uring', 'epoll']).default('auto'),
  })
  .refine((m) => m.portMin < m.portMax, { message: 'portMin must be below portMax', path: ['portMin'] })
  .refine((m) => m.key.consentTimeoutMs > m.key.rechallengeIntervalMs, {
    message: 'consentTimeoutMs must exceed rechallengeIntervalMs',
    path: ['key', 'consentTimeoutMs'],
  });

const drachtioSchema = z.object({ host: z.string().min(1), port: port, secret: z.string().min(1).nullable() });

export const sipSchema = z.object({
  drachtio: drachtioSchema,
  pbxDrachtio: drachtioSchema.nullable().default(null),
  pbx: z.string().regex(/^sips?:/, 'must be a SIP URI').nullable(),
  pbxDomain: z.string().min(1).nullable().default(null),
  domains: z.array(z.string().min(1)).default([]),
  requireKey: z.boolean(),
  bindingStore: z.union([z.literal('memory'), z.string().regex(/^rediss?:\/\//, 'must be "memory" or a redis:// URL')]),
  advertisedAddress: hostPort.nullable(),
  registration: z.object({
    natExpiresSec: z.number().int().min(10),
    upstreamExpiresSec: z.number().int().min(60),
    upstreamRefreshMarginSec: z.number().int().min(5),
    upstreamMode: z.enum(['contact', 'path']),
  }),
  peerEdges: z.array(hostPort).default([]),
  // Edge processes on one drachtio-server (src/edge-processes.ts).
  processes: z.number().int().min(1).max(64).default(1),
  // sip.processes > 1: edge process i serves its relay's hairpin commands to the others on
  // 127.0.0.1:(siblingRelayPort + i) (src/relay-pool/sibling-relays.ts).
  siblingRelayPort: z.number().int().min(1).max(65535 - 64).default(22450),
  keepalive: z
    .object({
      intervalSec: z.number().positive(),
      floorSec: z.number().positive(),
      shortenFactor: z.number().gt(0).lt(1),
      ceilingFactor: z.number().gt(0).lt(1),
      lengthenAfter: z.number().int().min(1),
      lengthenFactor: z.number().gt(1).max(2),
      timeoutMs: z.number().int().min(50),
      maxFailures: z.number().int().min(1),
    })
    .refine((k) => k.ceilingFactor >= k.shortenFactor, {
      message: 'ceilingFactor must not be below shortenFactor',
      path: ['ceilingFactor'],
    }),
});

const roomName = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/i, 'room names are letters, digits, - and _ (up to 64)');

export const roomsSchema = z.object({
  enabled: z.boolean().default(false),
  prefix: z.string().regex(/^[a-z0-9._-]{1,32}$/i, 'letters, digits, ".", "-" and "_"').default('room-'),
  names: z.array(roomName).nullable().default(null),
  maxParticipants: z.number().int().min(2).max(2000).default(50),
  broadcast: z.array(z.object({ name: roomName, speakers: z.array(z.string().regex(/^sips?:/, 'must be a SIP URI')).min(1) })).default([]),
  // sip.processes > 1: edge process i asks a room's owner process over 127.0.0.1:(siblingPort + i).
  siblingPort: z.number().int().min(1).max(65535 - 64).default(22350),
});

export const configSchema = z.object({
  log: z.object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']) }),
  media: mediaSchema,
  sip: sipSchema,
  control: z.object({
    ng: hostPort.nullable().default(null),
    ngKeySecret: z.string().min(32, 'must be at least 32 characters').nullable().default(null),
  }),
  metrics: z.object({ listen: hostPort.nullable().default(null) }),
  admin: z.object({ listen: hostPort.nullable().default(null) }),
  rooms: roomsSchema.default({}),
});

/**
 * configSchema with the checks that span sections (what load.ts parses with). Several edge
 * processes share only what is outside them: the binding store, and the port range in slices.
 */
export const checkedConfigSchema = configSchema
  .refine((c) => c.sip.processes === 1 || c.sip.bindingStore !== 'memory', {
    message: 'several edge processes need a shared binding store (a redis:// URL): each process would have bindings of its own',
    // Named by the setting that fixes it, so the message's "(set ...)" hint points there.
    path: ['sip', 'bindingStore'],
  })
  .refine((c) => c.sip.processes === 1 || c.media.portMax - c.media.portMin + 1 >= c.sip.processes * 4, {
    message: 'media.portMin-portMax is too small to give every edge process a slice of at least 4 ports',
    path: ['sip', 'processes'],
  });

export type Config = z.infer<typeof configSchema>;
export type MediaConfig = z.infer<typeof mediaSchema>;
export type SipConfig = z.infer<typeof sipSchema>;
export type RoomsConfig = z.infer<typeof roomsSchema>;
