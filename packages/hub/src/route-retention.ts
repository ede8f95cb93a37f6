import { TrickleError } from '@trickle/protocol/errors';
import type { HubStore } from './store/types.js';

/** Default hours a finished routed payment is kept: 7 days. */
export const DEFAULT_ROUTE_RETENTION_HOURS = 168;
/** Default interval of the route pruner (ms). */
export const DEFAULT_ROUTE_PRUNE_EVERY_MS = 600_000;
/**
 * Default batch of the route pruner. Smaller batches cost the commits beside them less (LMDB, 100,000 routes pruned
 * while commits ran one at a time, `node packages/hub/bench/route-startup.mjs 100000 100 <batch>`: commit p50 / p99
 * 1.8 / 21 ms with 250, 7.0 / 56 ms with 1,000) for a little throughput (20,000 against 24,000 routes/s).
 */
export const DEFAULT_ROUTE_PRUNE_BATCH = 250;
/** The largest batch of the route pruner. */
export const MAX_ROUTE_PRUNE_BATCH = 1000;

/**
 * The retention of finished routed payments (`createHub`'s `routeRetention`). Past the window, a delivered or refunded
 * route's record, its `credited` markers and (cluster) its outbox row are deleted; a pending route, a conditional route
 * whose payer's lock has not expired, and an outbox row not settled are never deleted. A payment id whose route was
 * deleted is a new payment if it is presented again: its payer pays again.
 */
export interface RouteRetentionOptions {
  /** Hours a finished route is kept, counted from when it finished (default 168: 7 days; 0: for ever). */
  readonly hours?: number | undefined;
  /** How often the pruner runs (ms; default 600,000). It also runs once as the hub starts. */
  readonly everyMs?: number | undefined;
  /** The most routes one batch deletes (default 250, at most 1,000); the event loop is yielded between batches. */
  readonly batch?: number | undefined;
  /** The hub's clock (ms; default `Date.now`): stamped on routes as they finish, and read for the window. */
  readonly now?: (() => number) | undefined;
}

/** Validated {@link RouteRetentionOptions}. */
export interface RouteRetention {
  /** 0: keep for ever. */
  readonly windowMs: number;
  readonly everyMs: number;
  readonly batch: number;
  readonly now: () => number;
}

/**
 * Defaults filled in and checked.
 * @throws TrickleError('INVALID_ARGUMENT') naming the bad option
 */
export function resolveRouteRetention(o: RouteRetentionOptions = {}): RouteRetention {
  const hours = o.hours ?? DEFAULT_ROUTE_RETENTION_HOURS;
  const everyMs = o.everyMs ?? DEFAULT_ROUTE_PRUNE_EVERY_MS;
  const batch = o.batch ?? DEFAULT_ROUTE_PRUNE_BATCH;
  if (!Number.isFinite(hours) || hours < 0)
    throw new TrickleError('INVALID_ARGUMENT', 'routeRetention.hours must be 0 (keep for ever) or more');
  if (!Number.isSafeInteger(everyMs) || everyMs < 1)
    throw new TrickleError('INVALID_ARGUMENT', 'routeRetention.everyMs must be a whole number of ms ≥ 1');
  if (!Number.isSafeInteger(batch) || batch < 1 || batch > MAX_ROUTE_PRUNE_BATCH)
    throw new TrickleError('INVALID_ARGUMENT', `routeRetention.batch must be from 1 to ${MAX_ROUTE_PRUNE_BATCH}`);
  return { windowMs: Math.round(hours * 3_600_000), everyMs, batch, now: o.now ?? Date.now };
}

/** A running route pruner. */
export interface RoutePruner {
  /** Stop the timer and wait for a pass in progress to end (after its current batch). */
  stop(): Promise<void>;
}

/**
 * Prune finished routes now and every `everyMs`: each pass calls the store's `pruneRoutes` in batches of `batch`
 * until one comes back not full, yielding the event loop between batches, so a large backlog (a first start after an
 * upgrade) never holds it for long. One pass at a time; a failed pass is logged and the next one tries again. In a
 * cluster every process prunes: the store's batches are idempotent and skip rows another process is deleting.
 * Nothing runs with a window of 0 or a store without `pruneRoutes`.
 */
export function startRoutePruner(deps: {
  readonly store: HubStore;
  readonly retention: RouteRetention;
  readonly onPruned: (n: number) => void;
  readonly log: (level: 'info' | 'warn', msg: string, fields: Record<string, unknown>) => void;
}): RoutePruner {
  const { store, retention } = deps;
  const prune = store.pruneRoutes?.bind(store);
  if (retention.windowMs === 0 || !prune) return { stop: async () => undefined };
  let stopped = false;
  let running: Promise<void> | undefined;
  const pass = async () => {
    let pruned = 0;
    let stamped = 0;
    for (;;) {
      const now = retention.now();
      const r = await prune({ before: now - retention.windowMs, now, limit: retention.batch });
      pruned += r.pruned;
      stamped += r.stamped;
      if (r.pruned > 0) deps.onPruned(r.pruned);
      if (!r.more || stopped) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (pruned > 0 || stamped > 0)
      deps.log('info', 'finished routed payments past the retention window pruned', {
        pruned,
        stamped,
        retentionHours: retention.windowMs / 3_600_000,
      });
  };
  const run = () => {
    running ??= pass()
      .catch((e: unknown) =>
        deps.log('warn', 'pruning finished routed payments failed; trying again at the next interval', {
          error: String(e),
        }),
      )
      .finally(() => (running = undefined));
  };
  const timer = setInterval(run, retention.everyMs);
  timer.unref();
  run();
  return {
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
