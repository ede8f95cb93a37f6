import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { Side } from './order.js';

/** What one order got in a round: its filled quantity and the amount that changed hands for it. */
export interface Fill {
  readonly orderId: Bytes32;
  readonly participant: Address;
  readonly side: Side;
  /** Units filled, > 0 and at most the order's quantity. */
  readonly quantity: bigint;
  /** quantity × the market's clearing price, exactly: paid by a buyer, received by a seller before the fee. */
  readonly amount: bigint;
}

/** The outcome of one market in a round. */
export interface MarketClearing {
  readonly market: string;
  /** The uniform clearing price per unit, or `null` when no bid crosses an ask. */
  readonly price: bigint | null;
  /** Units traded; equal to the filled quantity of the bids and to that of the asks. */
  readonly volume: bigint;
  /** Filled bids in price-time priority, then filled asks in price-time priority. */
  readonly fills: readonly Fill[];
}

/** A participant's net position for the round: receipts as seller (after fee) − payments as buyer. */
export interface Net {
  readonly participant: Address;
  readonly net: bigint;
}

/** The one payment the hub sends a participant at round end (see `clearRound`). */
export interface Credit {
  readonly participant: Address;
  readonly amount: bigint;
}

/** The result of clearing one round, which the hub signs (`hashClearing`) and every participant can recompute. */
export interface ClearingRecord {
  readonly round: bigint;
  /** Commitment to the round's orders and their sequencing (`digestOrders`). */
  readonly ordersDigest: Bytes32;
  /** One entry per market that had orders, by market name (UTF-16 code-unit order, i.e. ASCII order). */
  readonly markets: readonly MarketClearing[];
  /** One entry per participant with any order, by address (numeric order). Sums to −fee. */
  readonly nets: readonly Net[];
  /** One entry per participant with any order, by address; amounts ≥ 0, zero included. */
  readonly credits: readonly Credit[];
  /** Total hub fee taken from seller proceeds. */
  readonly fee: bigint;
}
