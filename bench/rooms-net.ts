/**
 * Where bench:rooms puts the relay and the generator on the network: loopback (127.0.0.1), or
 * two network namespaces joined by a veth pair. The namespaces, the veth pair, receive steering
 * and cleanup are bench/netns-pair.ts's, shared with bench:relay; this module binds them to
 * bench:rooms's names (namespaces klrooms<pid>g / klrooms<pid>r, BENCH_ROOMS_NET_PLAN).
 */
import { netnsPair } from './netns-pair';

export { kernelRx, kernelRxRate, type KernelRx, type NetPlan, type RxSteering } from './netns-pair';

const pair = netnsPair({ bench: 'bench:rooms', nsPrefix: 'klrooms', planEnv: 'BENCH_ROOMS_NET_PLAN', loopback: { relayAddress: '127.0.0.1', peerAddress: '127.0.0.1' } });

/** The plan this process runs with: loopback, or the veth plan its outer process handed down. */
export const currentPlan = pair.currentPlan;
/** Whether this process must build the namespaces and run the bench inside them. */
export const mustEnterVeth = pair.mustEnterVeth;
/** One line saying why --net veth cannot run here, or null. */
export const vethUnavailable = pair.vethUnavailable;
/** Builds the two namespaces, runs this bench again in the generator's, cleans up; resolves to its exit code. */
export const runAcrossVeth = pair.runAcrossVeth;
