/**
 * Types of the on-chain side: channel records as the adjudicator stores them, and transaction options/results.
 * Amounts are `bigint`; addresses and ids use the branded types of `@trickle/protocol/types`.
 */
import type { Contract, TransactionReceipt } from 'ethers';
import type { Address, Bytes32, ChannelId, Hex } from '@trickle/protocol/types';
import type { AdjudicatorEvent } from './events.js';

/** Life-cycle of a channel id on-chain, in the order of the Solidity `Status` enum. `none`: never used. */
export const CHANNEL_STATUSES = ['none', 'open', 'closing', 'closed'] as const;

/** A channel's on-chain status. `closed` is permanent: an id is never reused. */
export type ChannelStatus = (typeof CHANNEL_STATUSES)[number];

/**
 * What a force close registered (Solidity `IAdjudicator.Registration`). The adjudicator keeps its hash and the device
 * slot; the other fields travel in the `ForceClosed` / `Challenged` event. It is passed back to `challenge` and
 * `settle`.
 * Payouts are before locks: each pending lock then goes whole to one side.
 */
export interface Registration {
  readonly device: Address;
  readonly depositDevice: bigint;
  readonly token: Address;
  readonly hub: Address;
  readonly depositHub: bigint;
  readonly version: bigint;
  readonly deadline: bigint;
  readonly payoutDevice: bigint;
  readonly payoutHub: bigint;
  readonly locksRoot: Bytes32;
}

/**
 * A channel as the adjudicator records it (`getChannel`). After `closed` every field but `status` is zero.
 * While `closing`, the fields come from the current {@link Registration} (read from the event of the block the
 * adjudicator names), and `version`, `deadline`, `payoutDevice` and `payoutHub` describe the registered state
 * (payouts before its pending locks); they are zero otherwise.
 */
export interface OnChainChannel {
  readonly channelId: ChannelId;
  readonly status: ChannelStatus;
  readonly device: Address;
  readonly hub: Address;
  /** ERC20 token, or the zero address for ETH. */
  readonly token: Address;
  /** Seconds; fixed at open. 0 while closing (the adjudicator keeps the deadline instead). */
  readonly challengeDuration: bigint;
  /** What actually arrived from the device (fee-on-transfer tokens are credited by balance delta). */
  readonly depositDevice: bigint;
  readonly depositHub: bigint;
  /** Version of the registered state (force close / challenge). */
  readonly version: bigint;
  /** Unix seconds from which `settle` is accepted and `challenge` is not. */
  readonly deadline: bigint;
  readonly payoutDevice: bigint;
  readonly payoutHub: bigint;
  /** The registered state's lock commitment (zero when none or not closing). */
  readonly locksRoot: Bytes32;
  /** The current registration while `closing`. */
  readonly registration?: Registration | undefined;
}

/** Options every transaction-sending function takes. */
export interface TxOptions {
  /** Gas limit; estimated (which surfaces reverts before sending) when absent. */
  readonly gasLimit?: bigint | undefined;
  /** Explicit nonce, for callers that pipeline transactions from one account. */
  readonly nonce?: number | undefined;
}

/** A mined, successful transaction with the adjudicator events it emitted. */
export interface TxResult {
  readonly hash: Hex;
  readonly blockNumber: number;
  readonly gasUsed: bigint;
  /** Adjudicator events from this transaction, in log order. */
  readonly events: readonly AdjudicatorEvent[];
  readonly receipt: TransactionReceipt;
}

/**
 * What the per-operation functions (`@trickle/chain/actions/*`) need of an adjudicator: its address and an ethers
 * `Contract` bound to a runner (a `Signer` for transactions, any provider for views). {@link Adjudicator} is one.
 */
export interface AdjudicatorTarget {
  readonly address: Address;
  readonly contract: Contract;
}
