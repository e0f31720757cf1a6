/**
 * keylatch for SIP.js: plain RTP through keylatch, with the key proved on the media path.
 * See plugins/sipjs/README.md.
 */
export { keylatchSessionDescriptionHandlerFactory, KeylatchSessionDescriptionHandler, mediaOf, isSecureProtocol } from './session-description-handler';
export type { KeylatchHandlerOptions, KeylatchDescriptionOptions } from './session-description-handler';
export { MediaSession, DEFAULT_MEDIA_OPTIONS, SAMPLES_PER_FRAME } from './media-session';
export type { PlaySource } from './player';
export { StreamMixer } from './stream-mixer';
export type { SpeakerStats } from './stream-mixer';
export type { MediaSessionOptions, MediaStats, MediaState, FrameInfo } from './media-session';
export { NodeWebSocketTransport } from './ws-transport';
export { NodeTlsTransport, SipStreamFramer } from './tls-transport';
export type { NodeTlsTransportOptions } from './tls-transport';
export { ConnectionTransport } from './stream-transport';
export type { NodeWebSocketTransportOptions } from './ws-transport';
export * from './errors';
export { readWav, WavWriter, WavFormatError } from './wav';

/** Put in the Registerer's extraContactHeaderParams: tells keylatch this client can hold a key. */
export const KEYLATCH_CONTACT_PARAMS = ['+keylatch'];
