/**
 * Everything the plugin reports to an application is one of these, on the media session's
 * 'error' event and as the reason a SIP.js offer/answer is rejected. `code` is stable; match on
 * it, not on the message.
 */
export type KeylatchErrorCode =
  | 'key-missing'
  | 'key-over-insecure-transport'
  | 'challenge-failed'
  | 'relay-unreachable'
  | 'bad-remote-sdp'
  | 'no-common-codec';

export class KeylatchPluginError extends Error {
  override name = 'KeylatchPluginError';
  constructor(readonly code: KeylatchErrorCode, message: string) {
    super(message);
  }
}

/** requireKey is set but keylatch gave no leg key: the signalling path was not TLS/WSS, or keylatch is not in the path. */
export class KeyMissingError extends KeylatchPluginError {
  override name = 'KeyMissingError';
  constructor(transport: string) {
    super('key-missing', `no keylatch leg key in the remote SDP (signalling over ${transport}); sign in over WSS or TLS`);
  }
}

/** A key arrived over signalling anyone on the path could read: using it would prove nothing. */
export class KeyOverInsecureTransportError extends KeylatchPluginError {
  override name = 'KeyOverInsecureTransportError';
  constructor(transport: string) {
    super('key-over-insecure-transport', `refusing a keylatch leg key received over insecure ${transport} signalling`);
  }
}

/**
 * The relay answered, but not with challenges or successes this key can verify. (A relay of
 * protocol revision 2 answers no hello it cannot authenticate, so a wrong key usually shows as
 * relay-unreachable instead: see RelayUnreachableError.)
 */
export class ChallengeFailedError extends KeylatchPluginError {
  override name = 'ChallengeFailedError';
  constructor(detail: string) {
    super('challenge-failed', `keylatch challenge failed: ${detail}`);
  }
}

/**
 * Nothing came back from the relay address in the SDP: blocked, not there, or our key is not
 * the one the relay gave. The relay is silent toward anything it cannot authenticate, so from
 * here those look the same; the message says so.
 */
export class RelayUnreachableError extends KeylatchPluginError {
  override name = 'RelayUnreachableError';
  constructor(relay: string, afterMs: number) {
    super('relay-unreachable', `no answer from the keylatch relay at ${relay} after ${afterMs} ms (unreachable, or our leg key is not the one it issued: it answers nothing it cannot authenticate)`);
  }
}
