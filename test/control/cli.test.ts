/** The standalone relay as users start it: the real CLI in a child process, driven over ng. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { Client } from 'rtpengine-client';
import { drachtioBinary, startDrachtio } from '../helpers/drachtio';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';

const root = path.join(__dirname, '..', '..');
const run = (args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess =>
  spawn(process.execPath, ['-r', path.join(root, 'test/helpers/ts-register.js'), path.join(root, 'src/cli.ts'), ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });

function output(child: ChildProcess): { text: () => string } {
  let text = '';
  child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  return { text: () => text };
}

describe('keylatch relay (CLI)', () => {
  it('starts, answers ng offer and ping, logs pino JSON, and stops cleanly on SIGTERM', async () => {
    const ngPort = 22300 + (process.pid % 100);
    const child = run(['relay', '--ng', `127.0.0.1:${ngPort}`, '--interface', '127.0.0.1', '--ports', '38000-38099']);
    const out = output(child);
    const client = new Client({ localPort: 0, localAddress: '127.0.0.1', timeout: 500 });
    try {
      const ng = { port: ngPort, host: '127.0.0.1' };
      let pong;
      for (let i = 0; i < 40 && !pong; i++) pong = await client.ping(ng).catch(() => new Promise((r) => setTimeout(() => r(undefined), 100)));
      expect(pong).toMatchObject({ result: 'pong' });
      const sdp = 'v=0\r\no=- 1 1 IN IP4 192.168.1.2\r\ns=-\r\nc=IN IP4 192.168.1.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n';
      const offer = await client.offer(ng, { 'call-id': 'cli', 'from-tag': 'a', sdp });
      expect(offer.sdp).toMatch(/^m=audio 380\d\d RTP\/AVP 0/m);
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
      const lines = out.text().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string });
      expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['keylatch relay started', 'offer', 'shutting down']));
    } finally {
      client.close();
      child.kill('SIGKILL');
    }
  });

  it('refuses an invalid setting at startup, naming the key', async () => {
    const child = run(['relay'], { KEYLATCH_MEDIA__PORT_MIN: 'lots' });
    const out = output(child);
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(out.text()).toMatch(/media\.portMin/);
  });
});

describe('keylatch edge (CLI)', () => {
  it('refuses to start without the settings the SIP edge needs, naming each key', async () => {
    const child = run(['edge']);
    const out = output(child);
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(out.text()).toMatch(/sip\.drachtio\.secret: required/);
    expect(out.text()).toMatch(/sip\.pbx: required/);
    expect(out.text()).toMatch(/sip\.advertisedAddress: required/);
  });
});

const noSipTools = !drachtioBinary() || sippUnavailable() !== null;
if (noSipTools) console.warn('!!! SKIPPED keylatch edge CLI end-to-end test: needs drachtio-server (DRACHTIO_BIN or PATH) and sipp');

(noSipTools ? describe.skip : describe)('keylatch edge (CLI) on drachtio-server', () => {
  it('connects to drachtio-server from its configuration and answers SIP', async () => {
    const sipPort = 15060 + (process.pid % 500);
    const drachtio = await startDrachtio({ contacts: [`sip:127.0.0.1:${sipPort};transport=udp`], adminPort: 14022 + (process.pid % 500) });
    const child = run(['edge', '--interface', '127.0.0.1', '--ports', '38100-38199'], {
      KEYLATCH_SIP__DRACHTIO__PORT: String(drachtio.admin.port),
      KEYLATCH_SIP__DRACHTIO__SECRET: drachtio.admin.secret,
      KEYLATCH_SIP__PBX: 'sip:127.0.0.2:5060',
      KEYLATCH_SIP__ADVERTISED_ADDRESS: `127.0.0.1:${sipPort}`,
    });
    const out = output(child);
    try {
      for (let i = 0; i < 50 && !out.text().includes('keylatch edge started'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out.text()).toContain('connected to drachtio-server');
      const r = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-m', '1', '-i', '127.0.0.1', '-p', '0', `127.0.0.1:${sipPort}`]);
      expect(r.code).toBe(0);
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
    } finally {
      child.kill('SIGKILL');
      await drachtio.stop();
    }
  });
});
