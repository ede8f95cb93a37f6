import type { ChannelId } from '@trickle/protocol/types';

/** One second of hub activity, as the dashboard charts it. */
export interface StatsPoint {
  /** Unix seconds at the end of the interval. */
  readonly t: number;
  /** Device updates accepted per second. */
  readonly updates: number;
  /** Ack latency (update arrival to its ack), ms; null when nothing was acked. */
  readonly ackP50: number | null;
  readonly ackP99: number | null;
  /** Store group-commit latency, ms; null when nothing was committed. */
  readonly commitP50: number | null;
  readonly commitP99: number | null;
  /** Group commits and the writes they held. */
  readonly commits: number;
  readonly writes: number;
}

/** A market round as the dashboard shows it: per market, the clearing price (null: no cross) and quantity. */
export interface RoundPoint {
  readonly round: string;
  readonly at: number;
  readonly markets: readonly { readonly market: string; readonly price: string | null; readonly quantity: string }[];
  readonly fee: string;
}

/** An on-chain dispute-related event of one of the hub's channels, or a liquidity deposit by the hub. */
export interface ChainEventPoint {
  readonly at: number;
  readonly kind: 'forceClosed' | 'challenged' | 'challengeSent' | 'closed' | 'deposit';
  readonly channelId: ChannelId;
  readonly version?: string | undefined;
  readonly by?: string | undefined;
  readonly amount?: string | undefined;
}

/** Percentile of a sorted array (nearest rank). */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const MAX_SAMPLES = 4096;

/** Told of a market round or a chain event as {@link DashboardStats} records it. */
export type StatsListener = (event: 'round' | 'chain', point: RoundPoint | ChainEventPoint) => void;

/**
 * Rolling statistics for the dashboard, in memory: one point per second for the last `keepSeconds`, the last market
 * rounds, chain events, and each channel's last activity. The hub feeds it; nothing here touches I/O or the clock
 * (`tick(now)` closes the current second).
 */
export class DashboardStats {
  readonly #keep: number;
  readonly #series: StatsPoint[] = [];
  readonly rounds: RoundPoint[] = [];
  readonly events: ChainEventPoint[] = [];
  readonly #lastActivity = new Map<ChannelId, number>();
  readonly #listeners: StatsListener[] = [];
  #updates = 0;
  #acks: number[] = [];
  #commitsMs: number[] = [];
  #commits = 0;
  #writes = 0;
  /** Totals since start. */
  totalUpdates = 0;
  totalCommits = 0;

  constructor(keepSeconds = 300) {
    this.#keep = keepSeconds;
  }

  accepted(n: number): void {
    this.#updates += n;
    this.totalUpdates += n;
  }

  ack(ms: number): void {
    if (this.#acks.length < MAX_SAMPLES) this.#acks.push(ms);
  }

  commit(seconds: number, writes: number): void {
    this.#commits++;
    this.totalCommits++;
    this.#writes += writes;
    if (this.#commitsMs.length < MAX_SAMPLES) this.#commitsMs.push(seconds * 1000);
  }

  touch(channelId: ChannelId, now: number): void {
    this.#lastActivity.set(channelId, now);
  }

  lastActivity(channelId: ChannelId): number | undefined {
    return this.#lastActivity.get(channelId);
  }

  /**
   * Be told of every market round and chain event recorded from now on (the dashboard's live stream subscribes
   * when it is built, after the parts that report them).
   */
  listen(listener: StatsListener): void {
    this.#listeners.push(listener);
  }

  round(p: RoundPoint): void {
    this.rounds.push(p);
    if (this.rounds.length > 200) this.rounds.shift();
    for (const l of this.#listeners) l('round', p);
  }

  chainEvent(p: ChainEventPoint): void {
    this.events.push(p);
    if (this.events.length > 500) this.events.shift();
    for (const l of this.#listeners) l('chain', p);
  }

  /** Close the current interval at `now` (ms) and start the next. @returns the closed point */
  tick(now: number): StatsPoint {
    const acks = this.#acks.sort((a, b) => a - b);
    const commits = this.#commitsMs.sort((a, b) => a - b);
    const point: StatsPoint = {
      t: Math.floor(now / 1000),
      updates: this.#updates,
      ackP50: percentile(acks, 50),
      ackP99: percentile(acks, 99),
      commitP50: percentile(commits, 50),
      commitP99: percentile(commits, 99),
      commits: this.#commits,
      writes: this.#writes,
    };
    this.#series.push(point);
    if (this.#series.length > this.#keep) this.#series.shift();
    this.#updates = 0;
    this.#acks = [];
    this.#commitsMs = [];
    this.#commits = 0;
    this.#writes = 0;
    return point;
  }

  /** The kept points, oldest first. */
  series(): readonly StatsPoint[] {
    return this.#series;
  }
}
