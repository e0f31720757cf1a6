import { classify } from '../../src/media/packet';
import { RtpReceiveStats } from '../../src/media/rtp-stats';
import { encodeHello } from '../../src/media/challenge';

export function rtp(seq: number, ts: number, ssrc = 0x1234, payload = 160, pt = 0): Buffer {
  const b = Buffer.alloc(12 + payload, 0xd5);
  b[0] = 0x80;
  b[1] = pt;
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE(ts >>> 0, 4);
  b.writeUInt32BE(ssrc >>> 0, 8);
  return b;
}

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
    expect(classify(encodeHello('leg'))).toBe('stun');
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

describe('RtpReceiveStats', () => {
  it('counts loss from sequence gaps, across the 16-bit wrap', () => {
    const s = new RtpReceiveStats();
    let t = 0;
    for (let seq = 65530; seq < 65530 + 20; seq++) {
      if (seq === 65535 || seq === 65540) continue;
      s.update(rtp(seq, seq * 160), (t += 20));
    }
    expect(s.expected).toBe(20);
    expect(s.lost).toBe(2);
  });

  it('measures zero jitter for perfectly paced packets and some for irregular ones', () => {
    const even = new RtpReceiveStats();
    const odd = new RtpReceiveStats();
    for (let i = 0; i < 50; i++) {
      even.update(rtp(i, i * 160), i * 20);
      odd.update(rtp(i, i * 160), i * 20 + (i % 2 ? 15 : 0));
    }
    expect(even.jitterMs).toBeCloseTo(0, 5);
    expect(odd.jitterMs).toBeGreaterThan(5);
  });

  it('restarts on a new SSRC', () => {
    const s = new RtpReceiveStats();
    s.update(rtp(100, 0, 1), 0);
    s.update(rtp(200, 0, 1), 20);
    s.update(rtp(5, 0, 2), 40);
    expect(s.ssrc).toBe(2);
    expect(s.lost).toBe(0);
  });
});
