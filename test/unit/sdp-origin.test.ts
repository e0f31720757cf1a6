import { OriginKeeper } from '../../src/sip/sdp-origin';

const sdp = (origin: string, port: number): string =>
  `v=0\r\no=${origin}\r\ns=-\r\nc=IN IP4 198.18.0.8\r\nt=0 0\r\nm=audio ${port} RTP/AVP 0\r\na=sendrecv\r\n`;

describe('OriginKeeper: one o= line per dialog leg (RFC 3264 section 8)', () => {
  it('keeps the first session id, and counts the version up only when the SDP changed', () => {
    const k = new OriginKeeper();
    expect(k.stamp(sdp('- 7 7 IN IP4 198.19.3.2', 40000))).toContain('o=- 7 7 IN IP4 198.19.3.2\r\n');
    // The same SDP again (a 183, then the 200): the same version.
    expect(k.stamp(sdp('- 7 7 IN IP4 198.19.3.2', 40000))).toContain('o=- 7 7 IN IP4 198.19.3.2\r\n');
    // Another node's SDP after a failover, built from the far side's o= (version 3, another session):
    // toward this leg it is the same session, one version on.
    expect(k.stamp(sdp('- 99 3 IN IP4 198.19.4.2', 40100))).toContain('o=- 7 8 IN IP4 198.19.3.2\r\n');
    expect(k.stamp(sdp('- 99 3 IN IP4 198.19.4.2', 40102))).toMatch(/^o=- 7 9 /m);
  });

  it('leaves SDP without an o= line alone', () => {
    expect(new OriginKeeper().stamp('v=0\r\n')).toBe('v=0\r\n');
  });
});
