/** The relay's behaviour suites with the fast path forced onto io_uring (media.io: uring; see io-paths.ts). */
import { runRelaySuitesOn } from './io-paths';

runRelaySuitesOn('uring');
