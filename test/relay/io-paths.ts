/**
 * The relay's behaviour suites again, with the native fast path receiving through one path
 * (media.io): io-uring.test.ts and io-epoll.test.ts each run them all on theirs, so that both
 * the io_uring path and the epoll path it falls back to stay correct whatever "auto" picks on
 * the machine running the tests. Each suite's own file runs them once more on "auto".
 */
import { ioStats } from '../../src/media/media-socket';

/** The suites of test/relay that exercise forwarding, latching and socket life (every one here but the io ones). */
const SUITES = [
  './bad-input.test',
  './batched-sends.test',
  './guarded-latching.test',
  './hairpin.test',
  './key-latching.test',
  './relay-lifecycle.test',
  './relay-workers.test',
  './source-ranking.test',
];

export function runRelaySuitesOn(io: 'uring' | 'epoll'): void {
  process.env.KEYLATCH_TEST_MEDIA_IO = io;
  const before = ioStats();
  for (const suite of SUITES) {
    describe(`${suite} on ${io}`, () => {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a suite registers its tests when loaded, inside this describe
      require(suite);
    });
  }
  afterAll(() => {
    // The suites really ran on this path: every socket this process opened took it.
    const after = ioStats();
    const opened = { uring: after.uringOpened - before.uringOpened, epoll: after.epollOpened - before.epollOpened };
    expect(opened[io]).toBeGreaterThan(0);
    expect(opened[io === 'uring' ? 'epoll' : 'uring']).toBe(0);
    // On the ring every socket took a slot of its file table, and every closed one gave it back.
    expect(after.fixedOpened - before.fixedOpened).toBe(io === 'uring' ? opened.uring : 0);
    expect(after.fixedSockets).toBe(after.uringSockets);
  });
}
