import { fromWithoutTag, sendStatus, type SipRequest, type SipResponse } from '../../src/sip/srf';

const withFrom = (parsed: object): SipRequest => ({ getParsedHeader: () => parsed }) as unknown as SipRequest;

describe('fromWithoutTag', () => {
  it('drops the tag and keeps the display name, URI and other parameters', () => {
    expect(fromWithoutTag(withFrom({ name: '"Alice ;tag=x"', uri: 'sip:alice@example.com;transport=tcp', params: { tag: 'abc', epid: '7' } })))
      .toBe('"Alice ;tag=x" <sip:alice@example.com;transport=tcp>;epid=7');
  });
  it('works without a display name or parameters', () => {
    expect(fromWithoutTag(withFrom({ uri: 'sip:bob@example.com', params: { tag: 'q' } }))).toBe('<sip:bob@example.com>');
  });
});

describe('sendStatus', () => {
  it('falls back to the class x00 for a code drachtio-srf will not send', () => {
    const sent: number[] = [];
    const res = { send: (status: number) => { if (status === 189 || status === 499) throw new Error('unknown status'); sent.push(status); } } as unknown as SipResponse;
    sendStatus(res, 189, 'Odd', {});
    sendStatus(res, 499, 'Odd', {});
    sendStatus(res, 486, 'Busy', {});
    expect(sent).toEqual([100, 400, 486]);
  });
});
