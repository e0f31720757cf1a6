/** `keylatch status`'s side of the admin endpoint: one GET, with a deadline. */
import http from 'node:http';
import { joinHostPort } from '../host-port';
import { STATUS_PATH, type StatusSnapshot } from './status';

export class StatusUnavailable extends Error {
  override name = 'StatusUnavailable';
}

export function fetchStatus(host: string, port: number, timeoutMs = 3000): Promise<StatusSnapshot> {
  const where = `http://${joinHostPort(host, port)}${STATUS_PATH}`;
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: STATUS_PATH, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new StatusUnavailable(`${where} answered ${res.statusCode}: ${body.trim().slice(0, 200)}`));
        try {
          const parsed = JSON.parse(body) as StatusSnapshot;
          if (!Array.isArray(parsed.calls)) throw new Error('no calls in it');
          resolve(parsed);
        } catch (err) {
          reject(new StatusUnavailable(`${where} did not answer keylatch status JSON (${(err as Error).message})`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new StatusUnavailable(`cannot read ${where}: ${err.message}`)));
  });
}
