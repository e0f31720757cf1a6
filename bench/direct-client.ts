/**
 * A plugin client for npm run bench:direct, run inside a network namespace: the SIP.js
 * plugin's session description handler (the real media path: key proof, rendezvous, hole
 * punching, direct media), driven over stdin by JSON lines instead of SIP, so a bench can place
 * many calls a minute. Commands: offer, answer {sdp}, apply {sdp}, stats, close. Replies are
 * JSON lines on stdout: {event: 'sdp', sdp}, {event: 'stats', ...}, {event: 'closed'}.
 */
import readline from 'node:readline';
import { DEFAULT_MEDIA_OPTIONS, KeylatchSessionDescriptionHandler } from '../plugins/sipjs/src';

const { ip, toneHz } = JSON.parse(process.argv[2]!) as { ip: string; toneHz: number };
const out = (o: object): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
let handler: KeylatchSessionDescriptionHandler | null = null;

const fresh = (): KeylatchSessionDescriptionHandler => {
  handler?.close();
  handler = new KeylatchSessionDescriptionHandler({ ...DEFAULT_MEDIA_OPTIONS, bindAddress: ip, sdpAddress: ip, secureSignalling: true, transportName: 'WSS' });
  handler.media.play({ toneHz }, { loop: true });
  return handler;
};

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line) as { cmd: string; sdp?: string };
  void (async () => {
    if (cmd.cmd === 'offer') out({ event: 'sdp', sdp: (await fresh().getDescription()).body });
    else if (cmd.cmd === 'answer') {
      const h = fresh();
      await h.setDescription(cmd.sdp!);
      out({ event: 'sdp', sdp: (await h.getDescription()).body });
    } else if (cmd.cmd === 'apply') {
      await handler!.setDescription(cmd.sdp!);
      out({ event: 'applied' });
    } else if (cmd.cmd === 'stats') out({ event: 'stats', ...handler!.media.stats() });
    else if (cmd.cmd === 'close') {
      handler?.close();
      handler = null;
      out({ event: 'closed' });
    }
  })().catch((err: Error) => out({ event: 'error', message: err.message }));
});
out({ event: 'ready' });
