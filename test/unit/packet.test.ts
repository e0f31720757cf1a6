import { classify } from '../../src/media/packet';
import { encodeHello, newLegKey } from '../../src/media/challenge';
import { rtp } from '../helpers/peers';

function rtcpRr(): Buffer {
  const b = Buffer.alloc(8);
  b[0] = 0x80;
  b[1] = 201;
  b.writeUInt16BE(1, 2);
  b.writeUInt32BE(0x1234, 4);
  return b;
}

describe('classify', () => {
  it('tells STUN, RTP and RTCP apart by the first bytes', () => {
    expect(classify(encodeHello(newLegKey(), 'leg'))).toBe('stun');
    expect(classify(rtp(1, 160))).toBe('rtp');
    expect(classify(rtcpRr())).toBe('rtcp');
  });

  it.each([
    ['empty', Buffer.alloc(0)],
    ['one byte', Buffer.from([0x80])],
    ['RTP version 1', (() => { const b = rtp(1, 1); b[0] = 0x40; return b; })()],
    ['RTP version 3', (() => { const b = rtp(1, 1); b[0] = 0xc0; return b; })()],
    ['RTP shorter than its CSRC list', (() => { const b = rtp(1, 1, 1, 0); b[0] = 0x8f; return b; })()],
    ['RTP extension overrunning', (() => { const b = rtp(1, 1, 1, 4); b[0] = 0x90; b.writeUInt16BE(100, 14); return b; })()],
    ['RTCP length too long', (() => { const b = rtcpRr(); b.writeUInt16BE(9, 2); return b; })()],
    ['RTCP length too short', (() => { const b = Buffer.concat([rtcpRr(), Buffer.alloc(3)]); return b; })()],
    ['RTCP second part with bad version', Buffer.concat([rtcpRr(), Buffer.from([0x00, 202, 0, 0])])],
    ['DTLS-looking byte', Buffer.from([22, 254, 253, 0])],
    ['garbage', Buffer.from('hello world')],
  ])('calls %s malformed', (_n, buf) => {
    expect(classify(buf)).toBe('malformed');
  });
});
