/**
 * The SIP.js plugin's session description handlers on loopback, for the tests that drive them
 * as SIP.js does with the real relay in between: every handler a test opens is closed after it,
 * and each test gets a fresh relay.
 */
import { DEFAULT_MEDIA_OPTIONS, KeylatchSessionDescriptionHandler, type MediaSessionOptions } from '../../plugins/sipjs/src';
import type { Relay } from '../../src/media/relay';
import { newRelay } from './peers';

export type Handler = KeylatchSessionDescriptionHandler;

export function pluginHandlers(): { handler: (over?: Partial<MediaSessionOptions>) => Handler; readonly relay: Relay } {
  const open: Handler[] = [];
  let relay: Relay;
  beforeEach(() => {
    relay = newRelay();
  });
  afterEach(async () => {
    for (const h of open.splice(0)) h.close();
    await relay.close();
  });
  return {
    handler(over = {}) {
      const h = new KeylatchSessionDescriptionHandler({ ...DEFAULT_MEDIA_OPTIONS, bindAddress: '127.0.0.1', sdpAddress: '127.0.0.1', secureSignalling: true, transportName: 'WSS', ...over });
      open.push(h);
      return h;
    },
    get relay() {
      return relay;
    },
  };
}

/** Every frame a handler decodes, as it arrives. */
export function heard(h: Handler): Int16Array[] {
  const frames: Int16Array[] = [];
  h.media.on('frame', (pcm) => frames.push(pcm));
  return frames;
}

/** 20 ms frames laid end to end, for a tone check over the lot. */
export function joined(frames: Int16Array[]): Int16Array {
  const out = new Int16Array(frames.length * 160);
  frames.forEach((f, i) => out.set(f, i * 160));
  return out;
}
