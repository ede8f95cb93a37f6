// The public API of @trickle/client.
export {
  TrickleClient,
  DEFAULT_CLIENT_OPTIONS,
  type ClientOptions,
  type ClientChain,
  type CloseResult,
  type OnChainView,
  LOCK_GUARD_DEFAULTS,
  type LockGuardEvent,
  type LockGuardOptions,
} from './client.js';
export {
  ClientChannel,
  type IncomingPayment,
  type PaymentReceipt,
  type ChannelBalance,
  type CreditGuard,
} from './channel.js';
export {
  fileChannelStore,
  memoryChannelStore,
  encodeChannelRecord,
  decodeChannelRecord,
  decodeChannelFile,
  readChannelRecordFile,
  CHANNEL_RECORD_FILE,
  CHANNEL_FILE_SUFFIX,
  LEGACY_CHANNEL_FILE_SUFFIX,
  type ChannelStore,
  type DeviceChannelRecord,
  type FileChannelStoreOptions,
} from './store.js';
export type { HubIdentity, ReconnectOptions, RetryInfo, TrustedCa } from './connection.js';
export { adjudicatorClientChain } from './chain.js';
export { MarketSession, type PlacedOrder } from './market.js';
export type { DeviceMarketOrder, MarketOrderStore } from './market-orders.js';
export type { PublishedClearing } from '@trickle/market';
export {
  PaymentStream,
  openStream,
  onStream,
  DEFAULT_STREAM_OPTIONS,
  type StreamOptions,
  type StreamStatus,
  type StreamChange,
  type StreamEvent,
  type OnStreamOptions,
  DEFAULT_SILENCE_MS,
} from './stream.js';
export { payForReceipt, type PayForReceiptArgs } from './receipts.js';
