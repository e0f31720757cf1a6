/**
 * JsSIP (npm jssip), a second SIP stack written independently of SIP.js, as a WSS client of
 * the edge: it proves the edge is not tuned to one client library. JsSIP wants a browser's
 * WebSocket and RTCPeerConnection; here the socket is ws, and the peer connection is a thin
 * adapter over the keylatch plugin's handler, so an answered call carries real RTP, proved
 * with the leg key. Commands (JSON lines on stdin): {cmd:'mode', mode:'refuse'|'answer'},
 * {cmd:'stats'}, {cmd:'hangup'}.
 */
import { readFileSync } from 'node:fs';
import type { RTCSession } from 'jssip/lib/RTCSession';
import WebSocket from 'ws';
import { createInterface } from 'node:readline';
import { DEFAULT_MEDIA_OPTIONS, KeylatchSessionDescriptionHandler } from '../../plugins/sipjs/src';

const args = JSON.parse(process.argv[2]!) as { server: string; aor: string; ca: string; localIp: string; pingMs: number };
const say = (event: string, data: Record<string, unknown> = {}): void => void process.stdout.write(`${JSON.stringify({ event, at: Date.now(), ...data })}\n`);

let handler: KeylatchSessionDescriptionHandler | null = null;

/** Just the RTCPeerConnection that JsSIP's answer path touches, backed by the plugin. */
class KeylatchPeerConnection {
  iceGatheringState = 'complete';
  iceConnectionState = 'connected';
  signalingState = 'stable';
  localDescription: { type: string; sdp: string } | null = null;
  private readonly sdh = new KeylatchSessionDescriptionHandler({
    ...DEFAULT_MEDIA_OPTIONS, bindAddress: args.localIp, sdpAddress: args.localIp, secureSignalling: true, transportName: 'WSS',
  });

  constructor() {
    handler = this.sdh;
    this.sdh.media.on('authenticated', (mapping) => say('media-authenticated', { mapping }));
    this.sdh.media.on('failed', (e) => say('media-failed', { code: e.code }));
    this.sdh.media.play({ toneHz: 700 }, { loop: true });
  }
  addEventListener(): void {}
  removeEventListener(): void {}
  getSenders(): [] {
    return [];
  }
  getReceivers(): [] {
    return [];
  }
  async setRemoteDescription(d: { sdp: string }): Promise<void> {
    await this.sdh.setDescription(d.sdp);
    this.signalingState = 'have-remote-offer';
  }
  async createAnswer(): Promise<{ type: string; sdp: string }> {
    return { type: 'answer', sdp: (await this.sdh.getDescription()).body };
  }
  async setLocalDescription(d: { type: string; sdp: string }): Promise<void> {
    this.localDescription = d;
    this.signalingState = 'stable';
  }
  close(): void {
    this.sdh.close();
  }
}

// JsSIP looks for window.RTCPeerConnection before it takes an INVITE (else 488).
Object.assign(globalThis, {
  window: globalThis,
  RTCPeerConnection: KeylatchPeerConnection,
  RTCSessionDescription: class {
    constructor(init: object) {
      Object.assign(this, init);
    }
  },
});

// JsSIP reads globals at load time, so it comes after them.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const JsSIP = require('jssip') as typeof import('jssip');

/** JsSIP's Socket interface on ws, with pings that keep the NAT's TCP state alive while idle. */
class WsSocket {
  readonly via_transport = 'WSS';
  readonly url: string;
  readonly sip_uri: string;
  onconnect: () => void = () => undefined;
  ondisconnect: (error: boolean, code?: number, reason?: string) => void = () => undefined;
  ondata: (data: string) => void = () => undefined;
  private ws: WebSocket | null = null;
  private pinger: NodeJS.Timeout | null = null;

  constructor(server: string) {
    const u = new URL(server);
    this.url = server;
    this.sip_uri = `sip:${u.hostname}:${u.port};transport=ws`;
  }
  connect(): void {
    const ws = new WebSocket(this.url, 'sip', { ca: readFileSync(args.ca) });
    this.ws = ws;
    ws.on('open', () => {
      this.pinger = setInterval(() => ws.ping(), args.pingMs);
      this.onconnect();
    });
    ws.on('message', (data) => this.ondata(data.toString()));
    ws.on('error', () => undefined);
    ws.on('close', (code, reason) => {
      if (this.pinger) clearInterval(this.pinger);
      this.ondisconnect(code !== 1000, code, reason.toString());
    });
  }
  disconnect(): void {
    this.ws?.close(1000);
  }
  send(message: string): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(message);
    return true;
  }
  isConnected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }
  isConnecting(): boolean {
    return this.ws?.readyState === WebSocket.CONNECTING;
  }
}

let mode: 'refuse' | 'answer' = 'refuse';
let current: { terminate(o?: object): void } | null = null;
const ua = new JsSIP.UA({ sockets: [new WsSocket(args.server) as never], uri: args.aor, register: true, session_timers: false });
ua.registrator().setExtraContactParams({ '+keylatch': '' });
ua.on('registered', () => say('registered'));
ua.on('registrationFailed', (e: { cause?: string }) => say('registration-failed', { cause: e.cause }));
ua.on('newRTCSession', (e: { originator: string; session: RTCSession }) => {
  if (e.originator !== 'remote') return;
  const session = e.session;
  say('incoming', { from: session.remote_identity.uri.toString() });
  session.on('ended', () => say('ended'));
  session.on('failed', (f: { cause?: string }) => say('failed', { cause: f.cause }));
  session.on('confirmed', () => say('answered'));
  if (mode === 'refuse') {
    session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
    say('refused', { status: 486 });
    return;
  }
  current = session;
  session.answer({ mediaConstraints: { audio: false, video: false } });
});
ua.start();

createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as { cmd: string; mode?: 'refuse' | 'answer' };
  if (cmd.cmd === 'mode' && cmd.mode) mode = cmd.mode;
  if (cmd.cmd === 'stats') say('stats', { media: handler?.media.stats() ?? null });
  if (cmd.cmd === 'hangup') current?.terminate();
  if (cmd.cmd === 'quit') {
    ua.stop();
    setTimeout(() => process.exit(0), 300);
  }
});
