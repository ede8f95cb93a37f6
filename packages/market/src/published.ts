import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { Order } from './order.js';
import type { ClearingRecord } from './record.js';

/**
 * An escrow a round pays back: the whole of one whose order was never placed, was refused or is an ask, or what a
 * bid's escrow paid above the bid's worst case (quantity × limit price).
 */
export interface Refund {
  /** Who paid the escrow (an EIP-55 address). */
  readonly participant: Address;
  /** The order id the escrow was paid under (lowercase 32-byte hex). */
  readonly orderId: Bytes32;
  /** Paid back, > 0. */
  readonly amount: bigint;
}

/**
 * What a hub publishes for each round (the `clearing` frame's record, as JSON): the record, the orders it was
 * cleared from with each participant's signature, the fee, and the escrows refunded because their order was never
 * placed or was refused. Enough for any participant to recompute the round and the credit it is owed. The hub's
 * signature covers the record and the refunds (`publishedClearingDigest`); the orders are bound by the record's
 * orders digest and their participants' signatures, the fee by the record (`verifyClearing` recomputes it).
 */
export interface PublishedClearing {
  readonly record: ClearingRecord;
  readonly orders: readonly (Order & { readonly sig: string })[];
  readonly feeBps: bigint;
  readonly refunds: readonly Refund[];
}
