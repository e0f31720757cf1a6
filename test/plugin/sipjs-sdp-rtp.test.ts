import { formatLegKey, newLegKey } from '../../src/media/challenge';
import { answerDirection, buildSdp, parseRemote } from '../../plugins/sipjs/src/sdp';
import { ReceiveStats, decodeDtmf, decodeRtp, encodeDtmf, encodeRtcpReport, encodeRtp, isRtcp } from '../../plugins/sipjs/src/rtp';

const offer = (extra: string[] = [], media = ['m=audio 4000 RTP/AVP 8 0 101', 'a=rtpmap:101 telephone-event/8000']) =>
  ['v=0', 'o=- 7 7 IN IP4 192.0.2.1', 's=-', 'c=IN IP4 192.0.2.1', 't=0 0', ...extra, ...media, ''].join('\r\n');

describe('plugin SDP', () => {
  it('reads address, ports, codecs in the offerer\'s order, DTMF and the leg key', () => {
    const key = newLegKey();
    const r = parseRemote(offer([`a=keylatch:${formatLegKey('leg-1', key)}`]));
    expect(r).toMatchObject({ address: '192.0.2.1', rtpPort: 4000, rtcpPort: 4001, rtcpMux: false, direction: 'sendrecv', dtmfPt: 101, index: 0 });
    expect(r.codecs.map((c) => c.codec)).toEqual(['PCMA', 'PCMU']);
    expect(r.legKey!.legId).toBe('leg-1');
    expect(r.legKey!.key.equals(key)).toBe(true);
  });

  it('ignores a malformed key rather than using part of it', () => {
    const r = parseRemote(offer(['a=keylatch:v1 leg=x key=short']));
    expect(r.legKey).toBeNull();
    expect(r.announcesKeylatch).toBe(true);
  });

  it('answers the audio m-line and refuses video in place, in kind', () => {
    const r = parseRemote(offer([], ['m=video 5000 RTP/AVP 96', 'a=rtpmap:96 VP8/90000', 'm=audio 4000 RTP/AVP 0', 'a=rtcp-mux']));
    expect(r.index).toBe(1);
    const sdp = buildSdp(
      { address: '10.0.0.2', rtpPort: 6000, rtcpPort: 6001, direction: 'recvonly', codecs: ['PCMU'], dtmfPt: 101, rtcpMux: true },
      { sessionId: 1, version: 1, answering: { index: r.index, mLines: r.mLines, codecs: r.codecs, dtmfPt: r.dtmfPt, rtcpMux: r.rtcpMux } },
    );
    const m = sdp.match(/^m=.*$/gm)!;
    expect(m).toEqual(['m=video 0 RTP/AVP 0', 'm=audio 6000 RTP/AVP 0']);
    expect(sdp).toMatch(/a=rtcp-mux/);
    expect(sdp).not.toMatch(/telephone-event/);
    expect(sdp).toMatch(/a=keylatch:v1\r\n/);
  });

  it('follows RFC 3264 for the answer direction', () => {
    expect(answerDirection('sendrecv', false)).toBe('sendrecv');
    expect(answerDirection('sendonly', false)).toBe('recvonly');
    expect(answerDirection('recvonly', false)).toBe('sendonly');
    expect(answerDirection('inactive', false)).toBe('inactive');
    expect(answerDirection('sendrecv', true)).toBe('recvonly');
    expect(answerDirection('recvonly', true)).toBe('inactive');
  });

  it('throws a typed error for SDP with no usable audio', () => {
    expect(() => parseRemote(offer([], ['m=audio 0 RTP/AVP 0']))).toThrow(expect.objectContaining({ code: 'bad-remote-sdp' }));
    expect(() => parseRemote(offer([], ['m=audio 4000 RTP/SAVP 0']))).toThrow(expect.objectContaining({ code: 'bad-remote-sdp' }));
  });
});

describe('plugin RTP', () => {
  it('round-trips a packet and skips CSRCs, extension and padding', () => {
    const p = { pt: 0, marker: true, seq: 65535, timestamp: 0xfffffff0, ssrc: 0xdeadbeef, payload: Buffer.from([1, 2, 3]) };
    expect(decodeRtp(encodeRtp(p))).toEqual(p);
    const b = Buffer.concat([Buffer.from([0xb1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]), Buffer.alloc(4), Buffer.from([0xbe, 0xde, 0, 1]), Buffer.alloc(4), Buffer.from([9, 9, 0, 0, 2])]);
    expect(decodeRtp(b)!.payload).toEqual(Buffer.from([9, 9, 0]));
  });

  it('rejects what is not RTP, and tells RTCP apart under rtcp-mux', () => {
    expect(decodeRtp(Buffer.alloc(11))).toBeNull();
    expect(decodeRtp(Buffer.from([0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))).toBeNull();
    const report = encodeRtcpReport(1, 'x@y', null);
    expect(isRtcp(report)).toBe(true);
    expect(decodeRtp(report)).toBeNull();
    expect(report.length % 4).toBe(0);
    expect(report.readUInt16BE(2)).toBe(1);
    expect(report.readUInt16BE(10)).toBe((report.length - 8) / 4 - 1);
  });

  it('counts loss across a sequence wrap and measures jitter', () => {
    const s = new ReceiveStats(8000);
    const seqs = [65533, 65534, 65535, 1, 2];
    seqs.forEach((seq, i) => s.onPacket({ pt: 0, marker: false, seq, timestamp: i * 160, ssrc: 1, payload: Buffer.alloc(160) }, i * 20 + (i % 2) * 5));
    expect(s.expected).toBe(6);
    expect(s.lost).toBe(1);
    expect(s.jitterMs).toBeGreaterThan(0);
  });

  it('encodes and decodes telephone-events', () => {
    expect(decodeDtmf(encodeDtmf('#', true, 800))).toEqual({ digit: '#', end: true, volume: 10, duration: 800 });
    expect(decodeDtmf(Buffer.from([99, 0, 0, 0]))).toBeNull();
    expect(() => encodeDtmf('x', false, 0)).toThrow(RangeError);
  });
});
