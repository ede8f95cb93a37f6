import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ChannelLeases } from './leases.js';
import type { MarketRounds } from './market-rounds.js';

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
  /**
   * The per-frame and per-update counts, kept as plain numbers: the hub adds to them on its hot path and `frames`
   * and `updates` read them at each scrape (a labelled prom-client `inc` per frame cost ~1–2% of the event loop).
   */
  readonly tally: HubTally;
}

/** Counts read into {@link HubMetrics.frames} (`direction`) and {@link HubMetrics.updates} (`outcome="accepted"`). */
export interface HubTally {
  framesIn: number;
  framesOut: number;
  accepted: number;
}

/** Adds to `counter`'s `labels` series what `total` gained since the last scrape (`reported` keeps the last total). */
function catchUp<L extends string>(
  counter: Counter<L>,
  labels: Partial<Record<L, string>>,
  total: number,
  reported: { n: number },
): void {
  if (total > reported.n) counter.inc(labels, total - reported.n);
  reported.n = total;
}

/** @param options.defaultMetrics - also export Node's process metrics (on by default) */
export function createHubMetrics(options: { defaultMetrics?: boolean } = {}): HubMetrics {
  const registry = new Registry();
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'trickle_hub_' });
  const registers = [registry];
  const tally: HubTally = { framesIn: 0, framesOut: 0, accepted: 0 };
  const reported = { framesIn: { n: 0 }, framesOut: { n: 0 }, accepted: { n: 0 } };
  return {
    registry,
    tally,
    connections: new Gauge({ name: 'trickle_connections', help: 'Open authenticated device connections', registers }),
    channels: new Gauge({ name: 'trickle_channels', help: 'Channels known to the hub', registers }),
    updates: new Counter({
      name: 'trickle_updates_total',
      help: 'Device updates by outcome: accepted, or the reject code',
      labelNames: ['outcome'],
      registers,
      collect() {
        catchUp(this, { outcome: 'accepted' }, tally.accepted, reported.accepted);
      },
    }),
    frames: new Counter({
      name: 'trickle_frames_total',
      help: 'WebSocket frames by direction',
      labelNames: ['direction'],
      registers,
      collect() {
        catchUp(this, { direction: 'in' }, tally.framesIn, reported.framesIn);
        catchUp(this, { direction: 'out' }, tally.framesOut, reported.framesOut);
      },
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

/**
 * A cluster process's gauges, read at each scrape: the channels whose lease it holds, whether it holds the market's
 * round lease (only with a market), and whether its last lease query reached the database.
 */
export function registerClusterMetrics(
  metrics: HubMetrics,
  leases: ChannelLeases,
  rounds: MarketRounds | undefined,
): void {
  const registers = [metrics.registry];
  new Gauge({
    name: 'trickle_cluster_leased_channels',
    help: 'Channels whose lease this hub process holds',
    registers,
    collect() {
      this.set(leases.held());
    },
  });
  new Gauge({
    name: 'trickle_cluster_database_up',
    help: 'Whether the last lease query of this hub process reached the database (1) or not (0)',
    registers,
    collect() {
      this.set(leases.databaseReachable() ? 1 : 0);
    },
  });
  if (rounds)
    new Gauge({
      name: 'trickle_cluster_round_lease',
      help: 'Whether this hub process holds the market round lease and clears the rounds (1) or not (0)',
      registers,
      collect() {
        this.set(rounds.leading() ? 1 : 0);
      },
    });
}
