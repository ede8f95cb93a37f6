/**
 * `@trickle/market`: periodic double-auction clearing and netting for Trickle hubs and devices. Pure: no I/O,
 * clock, randomness or globals. The hub calls `clearRound` at round end and signs `publishedClearingDigest` (the
 * record and its refunds); each device calls `verifyClearing` before countersigning its round update.
 */
export type { Order, Side } from './order.js';
export { escrowFor, MARKET_NAME_PATTERN, validateOrder } from './order.js';
export type { OrderTerms } from './hashOrder.js';
export { hashOrder, hashOrderStruct, ORDER_TYPE, ORDER_TYPES } from './hashOrder.js';
export { appendOrderDigest, digestOrders, EMPTY_ORDERS_DIGEST } from './digestOrders.js';
export type { ClearingRecord, Credit, Fill, MarketClearing, Net } from './record.js';
export type { ClearOptions } from './clearRound.js';
export { CLEAR_DEFAULTS, clearRound } from './clearRound.js';
export type { VerifyOptions } from './verifyClearing.js';
export { verifyClearing } from './verifyClearing.js';
export { CLEARING_TAG, hashClearing } from './hashClearing.js';
export {
  CLEARING_TYPE,
  CLEARING_TYPE_V2,
  clearingDigest,
  clearingDigestV2,
  publishedClearingDigest,
} from './clearingDigest.js';
export { REFUNDS_TAG, hashRefunds } from './hashRefunds.js';
export type { PublishedClearing, Refund } from './published.js';
export type { AuditOptions } from './verifyPublished.js';
export { verifyPublished } from './verifyPublished.js';
export type { HeldClearing } from './clearingParts.js';
export { joinClearing, MAX_CLEARING_PARTS, splitClearing } from './clearingParts.js';
