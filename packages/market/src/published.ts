import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { Order } from './order.js';
import type { ClearingRecord } from './record.js';

/**
 * What a hub publishes for each round (the `clearing` frame's record, as JSON): the record, the orders it was
 * cleared from with each participant's signature, the fee, and the escrows refunded because their order was never
 * placed or was refused. Enough for any participant to recompute the round and the credit it is owed.
 */
export interface PublishedClearing {
  readonly record: ClearingRecord;
  readonly orders: readonly (Order & { readonly sig: string })[];
  readonly feeBps: bigint;
  readonly refunds: readonly { readonly participant: Address; readonly orderId: Bytes32; readonly amount: bigint }[];
}
