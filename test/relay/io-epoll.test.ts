/** The relay's behaviour suites with io_uring forced off: the epoll set and recvmmsg (media.io: epoll; see io-paths.ts). */
import { runRelaySuitesOn } from './io-paths';

runRelaySuitesOn('epoll');
