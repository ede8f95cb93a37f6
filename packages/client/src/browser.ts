// The public API of @trickle/client in a browser bundle (package.json `exports`, condition `browser`): index.ts
// without the parts that need Node — the file store (node:fs; bring a ChannelStore, e.g. on IndexedDB, or
// memoryChannelStore) and the chain helper (ethers; pass any ClientChain). Nothing here imports a Node built-in:
// test/browser-bundle.e2e.test.ts bundles it for `platform: 'browser'` and checks, and that index.ts exports
// nothing else that is not listed there as Node-only.
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
  memoryChannelStore,
  encodeChannelRecord,
  decodeChannelRecord,
  type ChannelStore,
  type DeviceChannelRecord,
} from './channel-store.js';
export type { HubIdentity, ReconnectOptions, TrustedCa } from './connection.js';
// The market is opt-in here (`market` option of connect(), MarketSession from '@trickle/client/market').
export type { MarketSession, PlacedOrder } from './market.js';
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
