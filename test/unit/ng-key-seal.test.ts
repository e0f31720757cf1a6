import { formatLegKey, newLegId, newLegKey } from '../../src/media/challenge';
import { guardKeys, isLoopback, ngSealKey, protectReply, sealLegKeys, unsealLegKeys } from '../../src/control/ng-key-seal';

const SECRET = 'a secret of at least thirty-two characters';
const sdpWithKey = (legId: string, key: Buffer) => `v=0\r\no=- 1 1 IN IP4 198.18.0.1\r\ns=-\r\nm=audio 4000 RTP/AVP 0\r\na=keylatch:${formatLegKey(legId, key)}\r\na=sendrecv\r\n`;

describe('leg keys on the ng link', () => {
  it('seals every key so the SDP carries no key in clear, and the shared secret opens it again', () => {
    const [legId, key] = [newLegId(), newLegKey()];
    const clear = sdpWithKey(legId, key);
    const sealed = sealLegKeys(clear, ngSealKey(SECRET));
    expect(sealed).not.toContain(key.toString('base64url'));
    expect(sealed).toMatch(new RegExp(`^a=keylatch:v1 leg=${legId} sealed=\\S{80}\\r$`, 'm'));
    expect(unsealLegKeys(sealed, ngSealKey(SECRET))).toBe(clear);
  });

  it('refuses to open a key under another secret, a tampered box, or with no secret at all', () => {
    const sealed = sealLegKeys(sdpWithKey(newLegId(), newLegKey()), ngSealKey(SECRET));
    expect(() => unsealLegKeys(sealed, ngSealKey(`${SECRET}!`))).toThrow(/does not open/);
    expect(() => unsealLegKeys(sealed.replace(/sealed=(.)/, (_m, c: string) => `sealed=${c === 'A' ? 'B' : 'A'}`), ngSealKey(SECRET))).toThrow(/does not open/);
    expect(() => unsealLegKeys(sealed, null)).toThrow(/keySecret is not set/);
  });

  it('binds a box to its leg: moved to another leg id it does not open', () => {
    const legId = newLegId();
    const sealed = sealLegKeys(sdpWithKey(legId, newLegKey()), ngSealKey(SECRET));
    expect(() => unsealLegKeys(sealed.replace(`leg=${legId}`, `leg=${newLegId()}`), ngSealKey(SECRET))).toThrow(/does not open/);
  });

  it('refuses key legs for an ng client off this host unless keys can be sealed', () => {
    const askKey = { command: 'offer', flags: ['keylatch-answerer=key', 'secure-answerer'] };
    expect(() => guardKeys(askKey, '198.18.0.5', null)).toThrow(/need control.ngKeySecret/);
    expect(() => guardKeys({ command: 'offer', 'keylatch-offerer': 'key' }, '198.18.0.5', null)).toThrow(/need control.ngKeySecret/);
    expect(() => guardKeys(askKey, '127.0.0.1', null)).not.toThrow();
    expect(() => guardKeys(askKey, '::ffff:127.0.0.1', null)).not.toThrow();
    expect(() => guardKeys(askKey, '198.18.0.5', ngSealKey(SECRET))).not.toThrow();
    expect(() => guardKeys({ command: 'offer', flags: ['keylatch-answerer=guarded'] }, '198.18.0.5', null)).not.toThrow();
    expect(isLoopback('::1') && !isLoopback('198.18.0.1')).toBe(true);
  });

  it('never lets a clear key leave the host: sealed with a secret, an error without one', () => {
    const [legId, key] = [newLegId(), newLegKey()];
    const reply = { result: 'ok', sdp: sdpWithKey(legId, key) };
    expect(protectReply(reply, '127.0.0.1', null)).toBe(reply);
    expect(String(protectReply(reply, '198.18.0.5', ngSealKey(SECRET)).sdp)).not.toContain(key.toString('base64url'));
    expect(String(protectReply(reply, '127.0.0.1', ngSealKey(SECRET)).sdp)).toContain('sealed=');
    expect(protectReply(reply, '198.18.0.5', null)).toMatchObject({ result: 'error' });
    expect(protectReply({ result: 'ok', sdp: 'v=0\r\n' }, '198.18.0.5', null)).toMatchObject({ result: 'ok' });
  });
});
