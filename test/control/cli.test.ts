/** The standalone relay as users start it: the real CLI in a child process, driven over ng. */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { Client } from 'rtpengine-client';
import { spawnCli } from '../helpers/cli';
import { drachtioBinary, startDrachtio } from '../helpers/drachtio';
import { SCENARIOS, runSipp, sippUnavailable } from '../helpers/sipp';

const run = spawnCli;

function output(child: ChildProcess): { text: () => string } {
  let text = '';
  child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  return { text: () => text };
}

describe('keylatch relay (CLI)', () => {
  it.each([['1'], ['2']])('starts with --workers %s, answers ng offer and ping, logs pino JSON, and stops cleanly on SIGTERM', async (workers) => {
    const ngPort = 22300 + (process.pid % 100);
    const child = run(['relay', '--ng', `127.0.0.1:${ngPort}`, '--interface', '127.0.0.1', '--ports', '38000-38099', '--workers', workers]);
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
      const lines = out.text().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; pid?: number });
      // (the offer itself is logged at debug: one line per request would cost at load; its reply is checked above)
      expect(lines.map((l) => l.msg)).toEqual(expect.arrayContaining(['keylatch relay started', 'shutting down']));
      // Two workers: each started, and none is left behind holding ports.
      if (workers === '2') {
        const pids = lines.filter((l) => l.msg === 'relay worker started').map((l) => l.pid!);
        expect(pids).toHaveLength(2);
        for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
      }
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
    // One line per setting, each naming the key and the variable that sets it.
    const lines = out.text().split('\n').filter((l) => l.includes('required for keylatch edge'));
    expect(lines.map((l) => /: (sip\.[\w.]+): .*\(set (KEYLATCH_\w+)=/.exec(l)?.slice(1))).toEqual([
      ['sip.drachtio.secret', 'KEYLATCH_SIP__DRACHTIO__SECRET'],
      ['sip.pbx', 'KEYLATCH_SIP__PBX'],
      ['sip.advertisedAddress', 'KEYLATCH_SIP__ADVERTISED_ADDRESS'],
    ]);
  });

  const edgeEnv = { KEYLATCH_SIP__DRACHTIO__SECRET: 's', KEYLATCH_SIP__PBX: 'sip:127.0.0.2:5060', KEYLATCH_SIP__ADVERTISED_ADDRESS: '127.0.0.1:5060' };

  it('says which drachtio-server it cannot reach, and how to point it elsewhere', async () => {
    const closed = await freePort();
    const child = run(['edge', '--ports', '38200-38299'], { ...edgeEnv, KEYLATCH_SIP__DRACHTIO__PORT: String(closed), KEYLATCH_ADMIN__LISTEN: 'null' });
    const out = output(child);
    const [code] = await once(child, 'exit');
    expect(code).toBe(1);
    expect(out.text()).toContain(`keylatch: cannot reach drachtio-server at 127.0.0.1:${closed} (ECONNREFUSED): is it running? (sip.drachtio.host/port: set KEYLATCH_SIP__DRACHTIO__HOST, KEYLATCH_SIP__DRACHTIO__PORT)\n`);
  });

  // --processes: the supervisor fails as one edge process would, once, instead of starting
  // processes that fail again and again (they used to be restarted forever, the edge never up).
  const severalProcesses = { KEYLATCH_SIP__BINDING_STORE: 'redis://127.0.0.1:1' }; // never reached

  it('with --processes 2, names each missing setting once and starts no process', async () => {
    const child = run(['edge', '--processes', '2'], severalProcesses);
    const out = output(child);
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(out.text().split('\n').filter((l) => l.includes('required for keylatch edge'))).toHaveLength(3);
    expect(out.text()).not.toContain('edge process started');
  });

  it('with --processes 2 and no drachtio-server, stops with that process\'s reason instead of restarting it', async () => {
    const closed = await freePort();
    const child = run(['edge', '--processes', '2', '--ports', '38200-38299'], { ...edgeEnv, ...severalProcesses, KEYLATCH_SIP__DRACHTIO__PORT: String(closed), KEYLATCH_ADMIN__LISTEN: 'null' });
    const out = output(child);
    const [code] = await once(child, 'exit');
    expect(code).toBe(1);
    expect(out.text()).toContain(`keylatch: cannot reach drachtio-server at 127.0.0.1:${closed} (ECONNREFUSED)`);
    expect(out.text()).toMatch(/keylatch: edge process [01] ended before the edge was up \(exit code 1\): its message above says why\n/);
    expect(out.text()).not.toContain('restarting it');
    expect(out.text()).not.toContain('keylatch edge started');
  }, 30000);

  it('names the admin listener when its port is taken, before connecting anywhere', async () => {
    const busy = net.createServer().listen(0, '127.0.0.1');
    await once(busy, 'listening');
    const port = (busy.address() as net.AddressInfo).port;
    try {
      const child = run(['edge', '--ports', '38200-38299'], { ...edgeEnv, KEYLATCH_ADMIN__LISTEN: `127.0.0.1:${port}` });
      const out = output(child);
      const [code] = await once(child, 'exit');
      expect(code).toBe(2);
      expect(out.text()).toContain(`keylatch: invalid configuration: admin.listen: 127.0.0.1:${port} is already in use (set KEYLATCH_ADMIN__LISTEN=HOST:PORT, or null to turn it off)\n`);
    } finally {
      busy.close();
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const noSipTools = !drachtioBinary() || sippUnavailable() !== null;
if (noSipTools) console.warn('!!! SKIPPED keylatch edge CLI end-to-end test: needs drachtio-server (DRACHTIO_BIN or PATH) and sipp');

(noSipTools ? describe.skip : describe)('keylatch edge (CLI) on drachtio-server', () => {
  it('connects to drachtio-server from its configuration and answers SIP', async () => {
    const sipPort = 15060 + (process.pid % 500);
    const drachtio = await startDrachtio({ contacts: [`sip:127.0.0.1:${sipPort};transport=udp`], adminPort: 14022 + (process.pid % 500) });
    const admin = `127.0.0.1:${19465 + (process.pid % 500)}`;
    const child = run(['edge', '--interface', '127.0.0.1', '--ports', '38100-38199'], {
      KEYLATCH_SIP__DRACHTIO__PORT: String(drachtio.admin.port),
      KEYLATCH_SIP__DRACHTIO__SECRET: drachtio.admin.secret,
      KEYLATCH_SIP__PBX: 'sip:127.0.0.2:5060',
      KEYLATCH_SIP__ADVERTISED_ADDRESS: `127.0.0.1:${sipPort}`,
      KEYLATCH_ADMIN__LISTEN: admin,
    });
    const out = output(child);
    try {
      for (let i = 0; i < 50 && !out.text().includes('keylatch edge is up'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(out.text()).toContain('connected to drachtio-server');
      // The start-up summary names the SIP listener drachtio-server reported and the admin endpoint.
      expect(out.text()).toMatch(new RegExp(`^ {2}SIP listeners +\\S*127\\.0\\.0\\.1:${sipPort}`, 'm'));
      expect(out.text()).toMatch(new RegExp(`^ {2}admin +http://${admin.replace(/\./g, '\\.')}/status`, 'm'));
      const r = await runSipp(['-sf', path.join(SCENARIOS, 'options.xml'), '-m', '1', '-i', '127.0.0.1', '-p', '0', `127.0.0.1:${sipPort}`]);
      expect(r.code).toBe(0);
      const status = run(['status', '--json', '--admin', admin]);
      const statusOut = output(status);
      const [statusCode] = await once(status, 'exit');
      expect(statusCode).toBe(0);
      const snap = JSON.parse(statusOut.text()) as { service: string; summary: Record<string, string>; bindings: { total: number }; calls: unknown[] };
      expect(snap).toMatchObject({ service: 'edge', bindings: { total: 0 }, calls: [] });
      expect(snap.summary['SIP listeners']).toContain(`127.0.0.1:${sipPort}`);
      child.kill('SIGTERM');
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
    } finally {
      child.kill('SIGKILL');
      await drachtio.stop();
    }
  });
});
