import { SipStreamFramer } from '../../plugins/sipjs/src';

const msg = (body = '') => `SIP/2.0 200 OK\r\nCSeq: 1 REGISTER\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

describe('SIP over a stream: framing by Content-Length', () => {
  it('reassembles a message split anywhere, and skips CRLF keepalive pongs', () => {
    const f = new SipStreamFramer();
    const wire = Buffer.from(`\r\n${msg('v=0\r\né')}\r\n\r\n${msg()}`);
    const out: string[] = [];
    for (let i = 0; i < wire.length; i += 7) out.push(...f.push(wire.subarray(i, i + 7)));
    expect(out).toEqual([msg('v=0\r\né'), msg()]);
  });

  it('reads the compact form l:', () => {
    expect(new SipStreamFramer().push(Buffer.from('OPTIONS sip:x SIP/2.0\r\nl: 2\r\n\r\nhi'))).toEqual(['OPTIONS sip:x SIP/2.0\r\nl: 2\r\n\r\nhi']);
  });

  it('refuses a message with no Content-Length, and one that would not fit', () => {
    expect(() => new SipStreamFramer().push(Buffer.from('SIP/2.0 200 OK\r\n\r\n'))).toThrow(/Content-Length/);
    expect(() => new SipStreamFramer().push(Buffer.from('SIP/2.0 200 OK\r\nContent-Length: 999999\r\n\r\n'))).toThrow(/64 KiB/);
  });
});
