/** SIP INFO DTMF bodies in a room call: what is a key, what is refused, and how. */
import { parseInfoDtmf } from '../../src/rooms/info-dtmf';

describe('SIP INFO DTMF in a room', () => {
  it.each([
    ['application/dtmf-relay', 'Signal=5\r\nDuration=160', { kind: 'key', key: '5', durationMs: 160 }],
    ['Application/DTMF-Relay; charset=utf-8', 'signal = #\n', { kind: 'key', key: '#', durationMs: null }],
    ['application/dtmf-relay', 'Signal=10\r\nDuration=250\r\n', { kind: 'key', key: '*', durationMs: 250 }],
    ['application/dtmf-relay', 'Signal=b', { kind: 'key', key: 'B', durationMs: null }],
    ['application/dtmf', '7\r\n', { kind: 'key', key: '7', durationMs: null }],
    [undefined, '', { kind: 'empty' }],
  ])('%s %j is %j', (type, body, want) => {
    expect(parseInfoDtmf(type, body)).toEqual(want);
  });

  it.each([
    ['application/dtmf-relay', '', 'empty application/dtmf-relay body'],
    ['application/dtmf-relay', 'Duration=160', 'dtmf-relay without Signal='],
    ['application/dtmf-relay', 'Signal=Z', 'dtmf-relay Signal is not a key (0-9, *, #, A-D, or 10-15)'],
    ['application/dtmf-relay', 'Signal=16', 'dtmf-relay Signal is not a key (0-9, *, #, A-D, or 10-15)'],
    ['application/dtmf-relay', 'Signal=5\r\nDuration=soon', 'dtmf-relay Duration is not milliseconds'],
    ['application/dtmf-relay', 'Signal=5\r\nDuration=99999999', 'dtmf-relay Duration is not milliseconds'],
    ['application/dtmf-relay', 'press five please', 'dtmf-relay lines are Name=Value'],
    ['application/dtmf', '55', 'application/dtmf body is not one key (0-9, *, #, A-D)'],
    ['application/dtmf', '\u0000', 'application/dtmf body is not one key (0-9, *, #, A-D)'],
  ])('%s %j is malformed: %s', (type, body, why) => {
    expect(parseInfoDtmf(type, body)).toEqual({ kind: 'malformed', why });
  });

  it('reads no body longer than a key press could be', () => {
    expect(parseInfoDtmf('application/dtmf-relay', `Signal=5\r\n${'X=1\r\n'.repeat(200)}`)).toEqual({ kind: 'malformed', why: 'application/dtmf-relay body too long' });
  });

  it('takes no other type, nor a body without one', () => {
    expect(parseInfoDtmf('text/plain', 'Signal=5')).toEqual({ kind: 'unsupported' });
    expect(parseInfoDtmf('application/media_control+xml', '<media_control/>')).toEqual({ kind: 'unsupported' });
    expect(parseInfoDtmf(undefined, 'Signal=5')).toEqual({ kind: 'unsupported' });
  });
});
