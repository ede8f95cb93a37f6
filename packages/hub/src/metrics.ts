import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The hub's Prometheus metrics, in their own registry (several hubs can live in one process, as in tests). */
export interface HubMetrics {
  readonly registry: Registry;
  readonly connections: Gauge;
  readonly channels: Gauge;
  readonly updates: Counter<'outcome'>;
  readonly frames: Counter<'direction'>;
  readonly commitSeconds: Histogram;
  readonly commitWrites: Histogram;
  /** Device update arrival to the hub's ack that covers it (commit and countersignature included). */
  readonly ackSeconds: Histogram;
  readonly routes: Counter<'result'>;
  readonly rounds: Counter;
  readonly disconnects: Counter<'reason'>;
}

/** @param options.defaultMetrics - also export Node's process metrics (on by default) */
export function createHubMetrics(options: { defaultMetrics?: boolean } = {}): HubMetrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'trickle_hub_' });
  const registers = [registry];
  return {
    registry,
    connections: new Gauge({ name: 'trickle_connections', help: 'Open authenticated device connections', registers }),
    channels: new Gauge({ name: 'trickle_channels', help: 'Channels known to the hub', registers }),
    updates: new Counter({
      name: 'trickle_updates_total',
      help: 'Device updates by outcome: accepted, or the reject code',
      labelNames: ['outcome'],
      registers,
    }),
    frames: new Counter({
      name: 'trickle_frames_total',
      help: 'WebSocket frames by direction',
      labelNames: ['direction'],
      registers,
    }),
    commitSeconds: new Histogram({
      name: 'trickle_store_commit_seconds',
      help: 'Durable store commit latency (group commits)',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    commitWrites: new Histogram({
      name: 'trickle_store_commit_writes',
      help: 'Writes per group commit',
      buckets: [1, 2, 5, 10, 50, 100, 500, 1000, 5000],
      registers,
    }),
    ackSeconds: new Histogram({
      name: 'trickle_ack_seconds',
      help: 'Latency from a device update arriving to the ack that covers it',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    routes: new Counter({
      name: 'trickle_routes_total',
      help: 'Routed payments by result',
      labelNames: ['result'],
      registers,
    }),
    rounds: new Counter({ name: 'trickle_market_rounds_total', help: 'Market rounds cleared', registers }),
    disconnects: new Counter({
      name: 'trickle_disconnects_total',
      help: 'Connections closed by the hub, by reason',
      labelNames: ['reason'],
      registers,
    }),
  };
}
