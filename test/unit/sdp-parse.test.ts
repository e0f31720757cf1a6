/** parseSdp is called several times per call with the same text; it parses once and shares a frozen result. */
import { SdpError, parseSdp } from '../../src/sdp/session';

const offer = (port: number): string => `v=0\r\no=- 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\nm=audio ${port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n`;

describe('parseSdp', () => {
  it('returns one frozen result for the same text, and a new one for other text', () => {
    const first = parseSdp(offer(7000));
    expect(parseSdp(offer(7000))).toBe(first);
    expect(Object.isFrozen(first) && Object.isFrozen(first.media) && Object.isFrozen(first.media[0])).toBe(true);
    expect(() => (first.media[0] as { port: number }).port = 1).toThrow(TypeError);
    const other = parseSdp(offer(7002));
    expect(other).not.toBe(first);
    expect(other.media[0]!.port).toBe(7002);
  });

  it('refuses bad SDP every time it is given, not only the first', () => {
    for (let i = 0; i < 2; i++) expect(() => parseSdp('v=0\r\ns=-\r\n')).toThrow(SdpError);
  });

  it('keeps only a bounded number of results: old text is parsed afresh, equal but not the same object', () => {
    const first = parseSdp(offer(9000));
    for (let p = 9002; p < 9200; p += 2) parseSdp(offer(p));
    const again = parseSdp(offer(9000));
    expect(again).not.toBe(first);
    expect(again).toEqual(first);
  });
});
