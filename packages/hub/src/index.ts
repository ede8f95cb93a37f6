// The public API of @trickle/hub.
export { createHub, type Hub, type HubOptions } from './hub.js';
export { DEFAULT_HUB_LIMITS, resolveHubLimits, type HubLimits } from './options.js';
export { DEFAULT_ROUTE_RETENTION_HOURS, type RouteRetentionOptions } from './route-retention.js';
export { openLmdbStore, type LmdbStoreOptions } from './store/lmdb.js';
export {
  openPostgresStore,
  POSTGRES_SCHEMA_VERSION,
  type PostgresStore,
  type PostgresStoreOptions,
} from './store/postgres.js';
export { fencedChannels, type ChannelLeases } from './leases.js';
export type {
  HubStore,
  ChannelRecord,
  RouteRecord,
  StoreWrite,
  EvidenceRecord,
  ChannelStatus,
  PruneRoutesOptions,
  PruneRoutesResult,
} from './store/types.js';
export {
  adjudicatorHubChain,
  startChainFollower,
  type HubChain,
  type ChainChange,
  type AdjudicatorHubChainOptions,
  type ChainFollower,
} from './chain-watcher.js';
export { startTransport, type Transport, type TransportOptions, type TlsOptions } from './transport.js';
export { LiquidityPolicy, hubSpendable, resolveLiquidity, type LiquidityOptions } from './liquidity.js';
export type { DashboardOptions } from './dashboard/http.js';
export type { DashboardStats, StatsPoint, RoundPoint, ChainEventPoint } from './dashboard/stats.js';
export type { ChannelRow, ChannelPage, SortKey } from './dashboard/channels-view.js';
export type { HubMetrics, HubTally, HistogramTally } from './metrics.js';
export {
  MarketClock,
  DEFAULT_MAX_ROUND_ORDERS,
  type MarketOptions,
  type MarketClockDeps,
  type MarketClusterDeps,
} from './market-clock.js';
export type { MarketRounds, MarketTransaction, MarketWrite } from './market-rounds.js';
export { inlineCrypto, workerCrypto, type HubCrypto, type StateAnswer, type StateDomain } from './crypto.js';
export { spawnHub, HUB_BIN, type HubProcess } from './spawn.js';
