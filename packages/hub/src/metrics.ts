import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type HistogramConfiguration,
  type MetricObjectWithValues,
  type MetricValueWithName,
} from 'prom-client';
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
  /**
   * Device update arrival to the hub's ack that covers it (commit and countersignature included). The hub tallies
   * these in `tally.ackSeconds` (one per ack); the series adds that tally at each scrape.
   */
  readonly ackSeconds: Histogram;
  readonly routes: Counter<'result'>;
  /** Finished routed payments deleted past the route retention window (see `route-retention.ts`). */
  readonly routesPruned: Counter;
  readonly rounds: Counter;
  readonly disconnects: Counter<'reason'>;
  /** Plain HTTP requests answered 429 because their address was past `httpRequestsPerSecond` (no labels). */
  readonly httpRateLimited: Counter;
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
  /** Read into {@link HubMetrics.ackSeconds}. */
  readonly ackSeconds: HistogramTally;
}

/**
 * A histogram's observations counted as plain numbers: what prom-client's `observe` does per value (a labels object,
 * a closure and a lookup each, ~1% of the hub's event loop at one per ack) left to the scrape.
 */
export class HistogramTally {
  /** Per bucket, in the order of the bounds and then +Inf: the values at most its bound and above the one before. */
  readonly counts: number[];
  sum = 0;
  count = 0;
  readonly #bounds: readonly number[];

  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }

  /** Count one value (a value that is not a finite number is left out, as prom-client refuses it). */
  observe(value: number): void {
    if (!Number.isFinite(value)) return;
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }

  /** The count of values at most `le` (a bound, or +Inf), as a histogram's bucket series reads. */
  cumulative(le: number): number {
    const b = this.#bounds;
    let n = 0;
    for (let i = 0; i < b.length && b[i]! <= le; i++) n += this.counts[i]!;
    return le === Infinity ? n + this.counts[b.length]! : n;
  }

  reset(): void {
    this.counts.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

type HistogramData = MetricObjectWithValues<MetricValueWithName<string>>;
const promString = (Histogram.prototype as unknown as { getForPromString(): Promise<HistogramData> }).getForPromString;

/** A label-less histogram whose series also carry a {@link HistogramTally}'s counts, added at each read. */
class TalliedHistogram extends Histogram {
  readonly #tally: HistogramTally;

  constructor(config: HistogramConfiguration<string>, tally: HistogramTally) {
    super(config);
    this.#tally = tally;
  }

  /** What the registry reads at a scrape (and `get()` through it). */
  async getForPromString(): Promise<HistogramData> {
    const data = await promString.call(this);
    const t = this.#tally;
    for (const v of data.values) {
      const name = v.metricName ?? '';
      if (name.endsWith('_bucket')) {
        const le = (v.labels as { le?: number | string }).le;
        v.value += t.cumulative(le === '+Inf' ? Infinity : Number(le));
      } else if (name.endsWith('_sum')) v.value += t.sum;
      else if (name.endsWith('_count')) v.value += t.count;
    }
    return data;
  }

  override reset(): void {
    super.reset();
    if (#tally in this) this.#tally.reset(); // prom-client's constructor resets before the tally is set
  }
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
  const ackBuckets = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1];
  const tally: HubTally = { framesIn: 0, framesOut: 0, accepted: 0, ackSeconds: new HistogramTally(ackBuckets) };
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
    ackSeconds: new TalliedHistogram(
      {
        name: 'trickle_ack_seconds',
        help: 'Latency from a device update arriving to the ack that covers it',
        buckets: ackBuckets,
        registers,
      },
      tally.ackSeconds,
    ),
    routes: new Counter({
      name: 'trickle_routes_total',
      help: 'Routed payments by result',
      labelNames: ['result'],
      registers,
    }),
    routesPruned: new Counter({
      name: 'trickle_routes_pruned_total',
      help: 'Finished routed payments deleted past the route retention window, with their credit markers and outbox rows',
      registers,
    }),
    rounds: new Counter({ name: 'trickle_market_rounds_total', help: 'Market rounds cleared', registers }),
    disconnects: new Counter({
      name: 'trickle_disconnects_total',
      help: 'Connections closed by the hub, by reason',
      labelNames: ['reason'],
      registers,
    }),
    httpRateLimited: new Counter({
      name: 'trickle_http_rate_limited_total',
      help: 'Plain HTTP requests (health, metrics, dashboard) answered 429: their address was past its request budget',
      registers,
    }),
  };
}

/** The chain follower's gauge, read at each scrape: seconds since its last completed poll of the chain. */
export function registerChainMetrics(metrics: HubMetrics, lastPollAt: () => number): void {
  new Gauge({
    name: 'trickle_chain_poll_age_seconds',
    help: 'Seconds since the hub last completed a poll of the chain; while it grows, force closes go unseen and unanswered',
    registers: [metrics.registry],
    collect() {
      this.set((Date.now() - lastPollAt()) / 1000);
    },
  });
}

/**
 * Hub-signed credits and locks that devices refused but may still hold, read at each scrape: what waits on them (a
 * payer's refund) waits until the device countersigns a later state or the channel closes on-chain.
 */
export function registerUnsettledMetrics(metrics: HubMetrics, count: () => number): void {
  new Gauge({
    name: 'trickle_unsettled_credits',
    help: 'Hub-signed credits devices refused but may still hold; the refunds of their routed payments wait for them to settle',
    registers: [metrics.registry],
    collect() {
      this.set(count());
    },
  });
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
