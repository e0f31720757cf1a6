import { createSocket, type Socket } from 'node:dgram';
import { randomBytes, randomInt } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { isIPv6 } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { HELLO_FLAG_DIRECT, ProtocolError, decode, looksLikeStun, sameEndpoint, type Endpoint, type PairGrant } from '../../../src/media/challenge';
import { PeerPath, type PeerPathStats, type PeerPathTiming, type SocketPool } from '../../../src/direct/peer-path';
import { isNullAddress } from '../../../src/sdp/session';
import { decodeG711, encodeG711 } from '../../../src/codec/g711';
import { KeyMissingError, KeyOverInsecureTransportError, type KeylatchPluginError } from './errors';
import { KeyProof } from './key-proof';
import { DEFAULT_DTMF_PT, PTIME_MS, STATIC_PT, type Codec, type Direction, type LocalMedia, type RemoteMedia } from './sdp';
import { ReceiveStats, decodeDtmf, decodeRtp, encodeDtmf, encodeRtcpReport, encodeRtp, isDtmfString, isRtcp, type RtpPacket } from './rtp';
import { FramePlayer, type PlaySource } from './player';
import { StreamMixer, type SpeakerStats } from './stream-mixer';
import { WavWriter } from './wav';

export const SAMPLES_PER_FRAME = (8000 * PTIME_MS) / 1000;
const COMFORT_NOISE_PT = 13;
/**
 * While media goes direct nothing else reaches the relay: a keyed hello this often keeps our NAT
 * mapping toward it open and, after a rebinding, moves its latch to the new mapping, so the
 * fallback path is there when the direct one fails.
 */
const DIRECT_RELAY_HELLO_MS = 1000;
/** Packets on either side of the first direct one over which the switch's gap is measured. */
const SWITCH_WINDOW_PACKETS = 5;

export interface MediaSessionOptions {
  /** Where the RTP and RTCP sockets bind. */
  bindAddress: string;
  /** The c= address we put in SDP; behind a NAT the relay ignores it and latches on what it sees. */
  sdpAddress: string;
  codecs: Codec[];
  /** Offer rtcp-mux (RFC 5761); the RTCP socket is closed when the answer accepts it. */
  rtcpMux: boolean;
  /** Refuse media that keylatch has not given a key for. */
  requireKey: boolean;
  /** Whether the signalling path (WSS/TLS) kept the key secret; set by the factory from the transport. */
  secureSignalling: boolean;
  transportName: string;
  helloIntervalMs: number;
  proveTimeoutMs: number;
  /** After this long without sending on a socket, send something so the NAT keeps its mapping. */
  keepaliveMs: number;
  rtcpIntervalMs: number;
  /** Take media straight to the other client when keylatch names one (docs/direct-media.md). */
  direct: boolean;
  /**
   * In a keylatch room, ask for every speaker's stream instead of the relay's mix, and mix here
   * (docs/rooms.md); stats() then lists each speaker with its level.
   */
  roomForward?: boolean;
  directTiming?: Partial<PeerPathTiming>;
}

export const DEFAULT_MEDIA_OPTIONS: MediaSessionOptions = {
  bindAddress: '0.0.0.0',
  sdpAddress: '0.0.0.0',
  codecs: ['PCMU', 'PCMA'],
  rtcpMux: true,
  requireKey: false,
  secureSignalling: false,
  transportName: 'unknown',
  helloIntervalMs: 200,
  proveTimeoutMs: 5000,
  keepaliveMs: 10000,
  rtcpIntervalMs: 5000,
  direct: true,
};

export type MediaState = 'idle' | 'proving' | 'authenticated' | 'guarded' | 'failed' | 'closed';

export interface MediaStats {
  state: MediaState;
  codec: Codec | null;
  direction: Direction;
  sent: { packets: number; octets: number; dropped: number };
  received: { packets: number; octets: number; lost: number; jitterMs: number; dtmf: number; rtcp: number; foreign: number; maxGapMs: number };
  /** The relay ports we prove to and send to (from the remote SDP). */
  relay: { rtp: Endpoint | null; rtcp: Endpoint | null };
  /** Our NAT's mapping as the relay saw it, from the last SUCCESS (key legs only). */
  mapping: { rtp: Endpoint | null; rtcp: Endpoint | null };
  legId: string | null;
  handovers: number;
  /** From the moment the answer took effect to the first decoded frame. */
  firstMediaMs: number | null;
  /** Every source RTP came from, with its count: nothing but the relay should be here. */
  sources: Record<string, number>;
  ssrcs: number[];
  /** The SSRC we send under (in a forwarding room, the others see it among their speakers). */
  ssrc: number;
  /** Forwarding mode in a room: every speaker we hear, with its level. */
  speakers: SpeakerStats[];
  /** Which path our media takes: through the relay, or straight to the other client. */
  path: PeerPathStats & {
    firstDirectRtpMs: number | null;
    /** The longest silence among the packets around the first direct one: what the switch cost us. */
    gapAtSwitchMs: number | null;
  };
}

export interface FrameInfo {
  seq: number;
  timestamp: number;
  ssrc: number;
}

export interface MediaSessionEvents {
  frame: [pcm: Int16Array, info: FrameInfo];
  rtp: [packet: RtpPacket];
  dtmf: [digit: string, durationMs: number];
  authenticated: [mapping: { rtp: Endpoint | null; rtcp: Endpoint | null }];
  mapping: [socket: 'rtp' | 'rtcp', mapping: Endpoint, changed: boolean];
  'first-media': [ms: number];
  /** Media moved to the direct path (peer is where it goes) or back to the relay (peer null). */
  path: [path: 'relay' | 'direct', peer: Endpoint | null, reason: string | null];
  failed: [error: KeylatchPluginError];
}

type Which = 'rtp' | 'rtcp';

const key = (e: Endpoint): string => (isIPv6(e.address) ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`);

/**
 * One call's plain RTP/AVP audio: the sockets, the key proof, G.711, DTMF and stats. It is
 * what the session description handler drives and what the application talks to.
 */
export class MediaSession extends EventEmitter<MediaSessionEvents> {
  private readonly sockets: Partial<Record<Which, Socket>> = {};
  private readonly proofs: Partial<Record<Which, KeyProof>> = {};
  /** Direct media with the other client, once the relay has named it. */
  private peerPath: PeerPath | null = null;
  private relayHelloTimer: NodeJS.Timeout | null = null;
  /** Sockets opened for the birthday attempt (id → socket); id 0 is the RTP socket. */
  private readonly extraSockets = new Map<number, Socket>();
  private nextExtraId = 1;
  /** From the answer taking effect to the first RTP from the proved peer. */
  private firstDirectRtpMs: number | null = null;
  /** Arrival times of the last packets, to measure the gap around the switch to the direct path. */
  private readonly arrivals: number[] = [];
  private switchWindow = -1;
  private gapAtSwitchMs: number | null = null;
  private readonly createdAt = Date.now();
  private readonly lastSentAt: Record<Which, number> = { rtp: 0, rtcp: 0 };
  private remote: RemoteMedia | null = null;
  private codec: { codec: Codec; pt: number } | null = null;
  private dtmfPt: number | null = null;
  private direction: Direction = 'sendrecv';
  private state_: MediaState = 'idle';
  private recv = new ReceiveStats(8000);
  private readonly sent = { packets: 0, octets: 0, dropped: 0 };
  private readonly received = { dtmf: 0, rtcp: 0, foreign: 0, maxGapMs: 0 };
  private lastRtpAt = 0;
  private readonly sources = new Map<string, number>();
  private readonly ssrcs = new Set<number>();
  private readonly ssrc = randomBytes(4).readUInt32BE(0);
  private readonly cname = `${randomBytes(6).toString('hex')}@keylatch-sipjs`;
  private seq = randomInt(0, 0x10000);
  private timestamp = randomInt(0, 0x7fffffff);
  private answeredAt: number | null = null;
  private firstMediaMs: number | null = null;
  private lastDtmf: { timestamp: number; ssrc: number } | null = null;
  private dtmfQueue: Promise<void> = Promise.resolve();
  private timers: NodeJS.Timeout[] = [];
  private readonly player = new FramePlayer(SAMPLES_PER_FRAME, PTIME_MS, (frame) => this.sendFrame(frame));
  private recorder: WavWriter | null = null;
  /** Forwarding mode only: the speakers' streams, mixed here on a clock of our own. */
  private readonly mixer: StreamMixer | null;
  private mixedFrames = 0;
  private mixStartedAt = 0;

  constructor(readonly options: MediaSessionOptions) {
    super();
    this.mixer = options.roomForward ? new StreamMixer() : null;
  }

  get state(): MediaState {
    return this.state_;
  }

  /** Binds the sockets once; later offers and answers reuse them. */
  async open(): Promise<LocalMedia> {
    if (!this.sockets.rtp) {
      this.sockets.rtp = await this.bind('rtp');
      // Bound even when we offer rtcp-mux: an answer may decline it (RFC 5761 section 5.1.1).
      this.sockets.rtcp = await this.bind('rtcp');
    }
    return this.localMedia('sendrecv');
  }

  localMedia(direction: Direction): LocalMedia {
    return {
      address: this.options.sdpAddress,
      rtpPort: this.sockets.rtp?.address().port ?? 0,
      rtcpPort: this.sockets.rtcp?.address().port ?? null,
      direction,
      codecs: this.options.codecs,
      dtmfPt: DEFAULT_DTMF_PT,
      rtcpMux: this.options.rtcpMux,
      roomForward: this.options.roomForward ?? false,
    };
  }

  /**
   * The negotiated result of one offer/answer exchange. Throws the typed error when keylatch's
   * key is missing (and required) or arrived where it could have been read.
   */
  apply(remote: RemoteMedia, codec: { codec: Codec; pt: number }, direction: Direction): void {
    if (remote.legKey && !this.options.secureSignalling) throw new KeyOverInsecureTransportError(this.options.transportName);
    if (!remote.legKey && this.options.requireKey) throw new KeyMissingError(this.options.transportName);
    const previous = this.remote;
    // Old-style hold (RFC 2543: c=0.0.0.0) names no path: keep the proved one, and stop sending.
    if (isNullAddress(remote.address) && previous) {
      this.direction = direction === 'sendrecv' || direction === 'recvonly' ? 'recvonly' : 'inactive';
      return;
    }
    this.remote = remote;
    this.codec = codec;
    this.dtmfPt = remote.dtmfPt;
    this.direction = direction;
    if (remote.rtcpMux && this.sockets.rtcp) {
      this.proofs.rtcp?.close();
      delete this.proofs.rtcp;
      this.sockets.rtcp.close();
      delete this.sockets.rtcp;
    }
    const samePath = previous && previous.address === remote.address && previous.rtpPort === remote.rtpPort && previous.legKey?.legId === remote.legKey?.legId;
    if (samePath && this.state_ !== 'failed') return;
    this.answeredAt = Date.now();
    this.firstMediaMs = null;
    this.firstDirectRtpMs = null;
    for (const which of ['rtp', 'rtcp'] as const) {
      this.proofs[which]?.close();
      delete this.proofs[which];
    }
    this.endDirect();
    this.startTimers();
    if (!remote.legKey) {
      this.state_ = 'guarded';
      return;
    }
    this.state_ = 'proving';
    for (const which of ['rtp', 'rtcp'] as const) {
      const relay = this.relayEndpoint(which);
      if (!relay || !this.sockets[which]) continue;
      const proof = new KeyProof({
        legId: remote.legKey.legId,
        key: remote.legKey.key,
        relay,
        send: (buf, to) => this.transmit(which, buf, to),
        helloIntervalMs: this.options.helloIntervalMs,
        giveUpAfterMs: this.options.proveTimeoutMs,
      });
      proof.on('latched', (mapping, changed) => this.onLatched(which, mapping, changed));
      proof.on('failed', (error) => this.fail(error));
      if (which === 'rtp') proof.on('rendezvous', (grant) => this.onRendezvous(grant));
      this.proofs[which] = proof;
      proof.start();
    }
  }

  get canSend(): boolean {
    const ready = this.state_ === 'authenticated' || this.state_ === 'guarded';
    const remoteOk = this.remote !== null && !isNullAddress(this.remote.address);
    return ready && remoteOk && (this.direction === 'sendrecv' || this.direction === 'sendonly');
  }

  /** One 20 ms frame (160 samples at 8 kHz), encoded with the negotiated codec. */
  sendFrame(pcm: Int16Array): boolean {
    if (!this.codec) return this.drop();
    return this.sendPayload(encodeG711(this.codec.codec, pcm), { samples: pcm.length });
  }

  sendPayload(payload: Buffer, opts: { pt?: number; marker?: boolean; samples?: number } = {}): boolean {
    const pt = opts.pt ?? this.codec?.pt;
    if (pt === undefined || !this.canSend) return this.drop();
    this.sendRtp({ pt, marker: opts.marker ?? false, seq: this.seq, timestamp: this.timestamp, ssrc: this.ssrc, payload });
    this.timestamp = (this.timestamp + (opts.samples ?? SAMPLES_PER_FRAME)) >>> 0;
    return true;
  }

  /**
   * RFC 4733 events, one digit after another: a packet every 20 ms, three end packets, and a
   * short gap. Resolves to false for anything but 0-9, *, #, A-D, or when the other side did
   * not offer telephone-event.
   */
  sendDtmf(digits: string, durationMs = 100): Promise<boolean> {
    if (!isDtmfString(digits)) return Promise.resolve(false);
    const run = async (): Promise<boolean> => {
      if (this.dtmfPt === null) return false;
      for (const digit of digits) {
        const pt = this.dtmfPt;
        const start = this.timestamp;
        const steps = Math.max(1, Math.round(durationMs / PTIME_MS));
        for (let i = 1; i <= steps + 2; i++) {
          const end = i > steps;
          const duration = Math.min(i, steps) * SAMPLES_PER_FRAME;
          if (this.canSend) this.sendRtp({ pt, marker: i === 1, seq: this.seq, timestamp: start, ssrc: this.ssrc, payload: encodeDtmf(digit, end, duration) });
          await sleep(end ? 0 : PTIME_MS);
        }
        this.timestamp = (start + steps * SAMPLES_PER_FRAME) >>> 0;
        await sleep(50);
      }
      return true;
    };
    const done = this.dtmfQueue.then(run);
    this.dtmfQueue = done.then(() => undefined, () => undefined);
    return done;
  }

  /** Plays a WAV file, a tone or samples in real time; frames are dropped while we may not send. */
  play(source: PlaySource, opts: { loop?: boolean } = {}): void {
    this.player.start(source, opts);
  }

  stopPlaying(): void {
    this.player.stop();
  }

  record(path: string): void {
    this.recorder?.close();
    this.recorder = new WavWriter(path);
  }

  stopRecording(): void {
    this.recorder?.close();
    this.recorder = null;
  }

  stats(): MediaStats {
    return {
      state: this.state_,
      codec: this.codec?.codec ?? null,
      direction: this.direction,
      sent: { ...this.sent },
      received: { packets: this.recv.packets, octets: this.recv.octets, lost: this.recv.lost, jitterMs: Math.round(this.recv.jitterMs * 100) / 100, ...this.received },
      relay: { rtp: this.relayEndpoint('rtp'), rtcp: this.remote?.rtcpMux ? null : this.relayEndpoint('rtcp') },
      mapping: { rtp: this.proofs.rtp?.mapping ?? null, rtcp: this.proofs.rtcp?.mapping ?? null },
      legId: this.remote?.legKey?.legId ?? null,
      handovers: (this.proofs.rtp?.handovers ?? 0) + (this.proofs.rtcp?.handovers ?? 0),
      firstMediaMs: this.firstMediaMs,
      sources: Object.fromEntries(this.sources),
      ssrcs: [...this.ssrcs],
      ssrc: this.ssrc,
      speakers: this.mixer?.stats() ?? [],
      path: {
        ...(this.peerPath?.stats() ?? {
          path: 'relay', since: this.answeredAt ?? this.createdAt, switches: 0, attempts: 0, probesSent: 0, peer: null, rendezvous: null,
          firstDirectMs: null, lastFallback: null, birthday: { tried: false, sockets: 0, probes: 0, succeeded: false }, via: 0,
        }),
        firstDirectRtpMs: this.firstDirectRtpMs,
        gapAtSwitchMs: this.gapAtSwitchMs,
      },
    };
  }

  close(): void {
    if (this.state_ === 'closed') return;
    this.state_ = 'closed';
    this.stopPlaying();
    this.stopRecording();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.endDirect();
    for (const which of ['rtp', 'rtcp'] as const) {
      this.proofs[which]?.close();
      this.sockets[which]?.close();
    }
  }

  private relayEndpoint(which: Which): Endpoint | null {
    if (!this.remote) return null;
    if (which === 'rtp' || this.remote.rtcpMux) return { address: this.remote.address, port: this.remote.rtpPort };
    return { address: this.remote.rtcpAddress, port: this.remote.rtcpPort };
  }

  private bind(which: Which): Promise<Socket> {
    return this.bindSocket((buf, from) => this.onDatagram(which, buf, from));
  }

  /** A UDP socket on our bind address; a send to an unreachable port surfaces as ICMP and must not end the process. */
  private bindSocket(onMessage: (buf: Buffer, from: Endpoint) => void): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = createSocket(isIPv6(this.options.bindAddress) ? 'udp6' : 'udp4');
      socket.once('error', reject);
      socket.bind(0, this.options.bindAddress, () => {
        socket.off('error', reject);
        socket.on('error', () => undefined);
        socket.on('message', (buf, rinfo) => onMessage(buf, { address: rinfo.address, port: rinfo.port }));
        resolve(socket);
      });
    });
  }

  private transmit(which: Which, buf: Buffer, to: Endpoint): void {
    const socket = this.sockets[which] ?? (which === 'rtcp' ? this.sockets.rtp : undefined);
    if (!socket || this.state_ === 'closed') return;
    this.lastSentAt[which] = Date.now();
    socket.send(buf, to.port, to.address);
  }

  private sendRtp(p: RtpPacket): void {
    const direct = this.peerPath?.target ?? null;
    const to = direct ?? this.relayEndpoint('rtp');
    if (!to) return;
    const b = encodeRtp(p);
    if (direct) this.sendVia(this.peerPath!.via, b, direct);
    else this.transmit('rtp', b, to);
    this.seq = (this.seq + 1) & 0xffff;
    this.sent.packets++;
    this.sent.octets += p.payload.length;
  }

  private drop(): false {
    this.sent.dropped++;
    return false;
  }

  private onDatagram(which: Which, buf: Buffer, from: Endpoint, via = 0): void {
    const expected = this.relayEndpoint(which);
    const fromRelay = via === 0 && expected !== null && sameEndpoint(expected, from);
    if (looksLikeStun(buf)) {
      if (fromRelay || !this.peerPath || which !== 'rtp') this.proofs[which]?.onDatagram(buf, from);
      else this.toPeerPath(buf, from);
      return;
    }
    // Media is ours from the relay, or from the one source that proved the pair key to us.
    const fromPeer = !fromRelay && which === 'rtp' && (this.peerPath?.accepts(from, via) ?? false);
    if (fromPeer && this.firstDirectRtpMs === null && this.answeredAt !== null) {
      this.firstDirectRtpMs = Date.now() - this.answeredAt;
      this.switchWindow = SWITCH_WINDOW_PACKETS;
    }
    if (!fromRelay && !fromPeer) {
      this.received.foreign++;
      return;
    }
    if (isRtcp(buf)) {
      this.received.rtcp++;
      return;
    }
    if (which !== 'rtp') return;
    const p = decodeRtp(buf);
    if (!p) return;
    const src = key(from);
    this.sources.set(src, (this.sources.get(src) ?? 0) + 1);
    if (this.ssrcs.size < 16) this.ssrcs.add(p.ssrc);
    const now = Date.now();
    // The longest silence between two packets: how long a NAT rebinding or handover cost us.
    if (this.lastRtpAt) this.received.maxGapMs = Math.max(this.received.maxGapMs, now - this.lastRtpAt);
    this.lastRtpAt = now;
    this.noteArrival(now);
    this.recv.onPacket(p, now);
    this.emit('rtp', p);
    if (p.pt === this.dtmfPt) return this.onDtmf(p);
    const codec = this.codec && p.pt === this.codec.pt ? this.codec.codec : p.pt === STATIC_PT.PCMU ? 'PCMU' : p.pt === STATIC_PT.PCMA ? 'PCMA' : null;
    if (!codec) return;
    const pcm = decodeG711(codec, p.payload);
    if (this.firstMediaMs === null && this.answeredAt !== null) {
      this.firstMediaMs = now - this.answeredAt;
      this.emit('first-media', this.firstMediaMs);
    }
    if (this.mixer) return this.mixer.push(p.ssrc, pcm, now);
    this.recorder?.write(pcm);
    this.emit('frame', pcm, { seq: p.seq, timestamp: p.timestamp, ssrc: p.ssrc });
  }

  /** Forwarding mode: one mixed frame per 20 ms of wall clock (not per timer callback, which runs late on a busy box). */
  private mixTick(): void {
    const now = Date.now();
    if (!this.mixStartedAt) this.mixStartedAt = now;
    while (this.mixedFrames < Math.floor((now - this.mixStartedAt) / PTIME_MS)) {
      this.mixedFrames++;
      const pcm = this.mixer!.mix(now, SAMPLES_PER_FRAME);
      if (!pcm) continue;
      this.recorder?.write(pcm);
      this.emit('frame', pcm, { seq: this.mixedFrames & 0xffff, timestamp: (this.mixedFrames * SAMPLES_PER_FRAME) >>> 0, ssrc: 0 });
    }
  }

  /** Keeps the last arrivals; SWITCH_WINDOW_PACKETS after the first direct one, the gap around the switch is known. */
  private noteArrival(now: number): void {
    this.arrivals.push(now);
    if (this.arrivals.length > 2 * SWITCH_WINDOW_PACKETS) this.arrivals.shift();
    if (this.switchWindow < 0 || --this.switchWindow > 0) return;
    this.switchWindow = -1;
    let gap = 0;
    for (let i = 1; i < this.arrivals.length; i++) gap = Math.max(gap, this.arrivals[i]! - this.arrivals[i - 1]!);
    this.gapAtSwitchMs = gap;
  }

  private onDtmf(p: RtpPacket): void {
    const event = decodeDtmf(p.payload);
    if (!event?.end) return;
    // The end packet is sent three times; one event is one digit.
    if (this.lastDtmf && this.lastDtmf.timestamp === p.timestamp && this.lastDtmf.ssrc === p.ssrc) return;
    this.lastDtmf = { timestamp: p.timestamp, ssrc: p.ssrc };
    this.received.dtmf++;
    this.emit('dtmf', event.digit, (event.duration * 1000) / 8000);
  }

  private onLatched(which: Which, mapping: Endpoint, changed: boolean): void {
    this.emit('mapping', which, mapping, changed);
    if (this.state_ !== 'proving') return;
    const all = Object.values(this.proofs).every((p) => p.state === 'authenticated');
    if (!all) return;
    this.state_ = 'authenticated';
    this.emit('authenticated', { rtp: this.proofs.rtp?.mapping ?? null, rtcp: this.proofs.rtcp?.mapping ?? null });
  }

  /**
   * The relay named the other client of the call. We punch toward it and prove the pair key;
   * media moves over once both directions are proved, and back to the relay when the direct
   * path stops proving. The relay path stays proved throughout, as the fallback.
   */
  private onRendezvous(grant: PairGrant): void {
    if (!this.options.direct || this.state_ === 'closed') return;
    if (this.peerPath) return this.peerPath.update(grant);
    const path = new PeerPath(grant, (buf, to, via) => this.sendVia(via, buf, to), { timing: this.options.directTiming, sockets: this.socketPool() });
    path.on('direct', (peer) => this.onPath('direct', peer, null));
    path.on('relay', (reason) => this.onPath('relay', null, reason));
    this.peerPath = path;
    path.start();
  }

  private onPath(path: 'relay' | 'direct', peer: Endpoint | null, reason: string | null): void {
    // Tell the relay at once (under the leg key): its stats and metrics count direct calls.
    this.proofs.rtp?.sendHello(path === 'direct' ? HELLO_FLAG_DIRECT : 0);
    if (this.relayHelloTimer) clearInterval(this.relayHelloTimer);
    this.relayHelloTimer = path === 'direct' ? setInterval(() => this.proofs.rtp?.sendHello(), DIRECT_RELAY_HELLO_MS) : null;
    this.emit('path', path, peer, reason);
  }

  private toPeerPath(buf: Buffer, from: Endpoint, via = 0): void {
    try {
      this.peerPath?.onMessage(decode(buf), from, buf.length, via);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
    }
  }

  /** From the RTP socket (0) or one the birthday attempt opened. */
  private sendVia(via: number, buf: Buffer, to: Endpoint): void {
    if (via === 0) return this.transmit('rtp', buf, to);
    const socket = this.extraSockets.get(via);
    if (socket && this.state_ !== 'closed') socket.send(buf, to.port, to.address);
  }

  /** Extra sockets on request: what arrives on them is the peer path's (STUN) or, once it chose one, media. */
  private socketPool(): SocketPool {
    return {
      open: async (count) => {
        const ids: number[] = [];
        for (let i = 0; i < count && this.state_ !== 'closed'; i++) {
          const id = this.nextExtraId++;
          const socket = await this.bindExtra(id);
          this.extraSockets.set(id, socket);
          ids.push(id);
        }
        return ids;
      },
      close: (keep) => {
        for (const [id, socket] of this.extraSockets) {
          if (id === keep) continue;
          socket.close();
          this.extraSockets.delete(id);
        }
      },
    };
  }

  private bindExtra(id: number): Promise<Socket> {
    return this.bindSocket((buf, from) => (looksLikeStun(buf) ? this.toPeerPath(buf, from, id) : this.onDatagram('rtp', buf, from, id)));
  }


  private endDirect(): void {
    for (const socket of this.extraSockets.values()) socket.close();
    this.extraSockets.clear();
    if (!this.peerPath) return;
    const wasDirect = this.peerPath.target !== null;
    this.peerPath.close();
    this.peerPath = null;
    // A renegotiated path is news; a closed session is not (nothing more is sent or said).
    if (wasDirect && this.state_ !== 'closed') this.onPath('relay', null, 'path renegotiated');
    if (this.relayHelloTimer) clearInterval(this.relayHelloTimer);
    this.relayHelloTimer = null;
  }

  /** A refused description: the application hears of it, and the media keeps the state it had. */
  report(error: KeylatchPluginError): void {
    if (this.state_ !== 'closed') this.emit('failed', error);
  }

  private fail(error: KeylatchPluginError): void {
    if (this.state_ === 'failed' || this.state_ === 'closed') return;
    this.state_ = 'failed';
    this.emit('failed', error);
  }

  private startTimers(): void {
    if (this.timers.length) return;
    if (this.mixer) this.timers.push(setInterval(() => this.mixTick(), PTIME_MS / 2));
    this.timers.push(setInterval(() => this.keepalive(), Math.max(200, this.options.keepaliveMs / 2)));
    this.timers.push(setInterval(() => this.sendReport(), this.options.rtcpIntervalMs));
  }

  /** During hold and silence the NAT mapping would lapse; a hello (key legs) or comfort noise keeps it. */
  private keepalive(): void {
    const now = Date.now();
    for (const which of ['rtp', 'rtcp'] as const) {
      if (!this.sockets[which] || now - this.lastSentAt[which] < this.options.keepaliveMs) continue;
      const proof = this.proofs[which];
      if (proof) proof.sendHello();
      else if (which === 'rtp' && this.state_ === 'guarded' && this.remote) {
        this.sendRtp({ pt: COMFORT_NOISE_PT, marker: false, seq: this.seq, timestamp: this.timestamp, ssrc: this.ssrc, payload: Buffer.from([127]) });
      }
    }
  }

  private sendReport(): void {
    if (!(this.state_ === 'authenticated' || this.state_ === 'guarded')) return;
    const sent = this.sent.packets > 0 ? { packets: this.sent.packets, octets: this.sent.octets, timestamp: this.timestamp } : null;
    const report = encodeRtcpReport(this.ssrc, this.cname, sent);
    // Muxed RTCP follows the RTP: straight to the peer, from the same socket, while media goes direct.
    const direct = this.remote?.rtcpMux ? (this.peerPath?.target ?? null) : null;
    if (direct) return this.sendVia(this.peerPath!.via, report, direct);
    const to = this.relayEndpoint('rtcp');
    if (to) this.transmit('rtcp', report, to);
  }
}
