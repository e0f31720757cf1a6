import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { MediaConfig } from '../../config/schema';
import type { NgDict } from '../../control/ng-options';

/** Parent -> worker, over the fork IPC channel. */
export type ToWorker =
  | { type: 'start'; index: number; media: MediaConfig; fullRange: { portMin: number; portMax: number }; logLevel: string }
  | { type: 'ng'; id: number; req: NgDict }
  | { type: 'metrics'; id: number }
  | { type: 'stop' };

/** Worker -> parent. */
export type FromWorker =
  | { type: 'ready'; index: number }
  | { type: 'failed'; index: number; message: string }
  | { type: 'ng-reply'; id: number; reply: NgDict }
  | { type: 'metrics-reply'; id: number; metrics: MetricObjectWithValues<MetricValue<string>>[] };
