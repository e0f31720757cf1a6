/**
 * One relay worker process (forked by RelayCluster): a full Relay on its share of the port
 * range, executing the ng commands the dispatcher routes to it. It has no sockets of its own
 * besides the media ports; control arrives over the fork IPC channel.
 */
import type { Registry } from 'prom-client';
import { answerNg, relayCommands } from '../../control/ng-server';
import { createLogger, type Logger } from '../../log';
import { tuneFastPath } from '../media-socket';
import { relayMetrics } from '../metrics';
import type { FromWorker, ToWorker } from './protocol';
import { WorkerRelay } from './worker-relay';

function send(msg: FromWorker): void {
  process.send?.(msg);
}

let relay: WorkerRelay | null = null;
let registry: Registry | null = null;
let log: Logger | null = null;

async function stop(code: number): Promise<never> {
  await relay?.close();
  process.exit(code);
}

process.on('message', (msg: ToWorker) => {
  switch (msg.type) {
    case 'start': {
      log = createLogger(msg.logLevel).child({ worker: msg.index });
      try {
        tuneFastPath(msg.media);
        relay = new WorkerRelay(msg.media, msg.fullRange, { logger: log });
      } catch (err) {
        send({ type: 'failed', index: msg.index, message: (err as Error).message });
        void stop(1);
        return;
      }
      registry = relayMetrics(relay);
      const handle = relayCommands(relay);
      process.on('message', (m: ToWorker) => {
        if (m.type === 'ng') void answerNg(handle, m.req, log!).then((reply) => send({ type: 'ng-reply', id: m.id, reply }));
        else if (m.type === 'metrics') void registry!.getMetricsAsJSON().then((metrics) => send({ type: 'metrics-reply', id: m.id, metrics }));
      });
      log.info({ pid: process.pid, ports: `${msg.media.portMin}-${msg.media.portMax}` }, 'relay worker started');
      send({ type: 'ready', index: msg.index });
      return;
    }
    case 'stop':
      void stop(0);
      return;
    default:
      return;
  }
});

// The dispatcher is gone (it exited or crashed): a worker alone would hold ports nobody controls.
process.on('disconnect', () => void stop(0));
process.on('SIGTERM', () => void stop(0));
process.on('SIGINT', () => undefined); // a terminal's ^C reaches the whole group: the dispatcher stops us
