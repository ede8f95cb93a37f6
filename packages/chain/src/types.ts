/**
 * Types of the on-chain side: channel records as the adjudicator stores them, and transaction options/results.
 * Amounts are `bigint`; addresses and ids use the branded types of `@trickle/protocol/types`.
 */
import type { Contract, TransactionReceipt } from 'ethers';
import type { Address, ChannelId, Hex } from '@trickle/protocol/types';
import type { AdjudicatorEvent } from './events.js';

/** Life-cycle of a channel id on-chain, in the order of the Solidity `Status` enum. `none`: never used. */
export const CHANNEL_STATUSES = ['none', 'open', 'closing', 'closed'] as const;

/** A channel's on-chain status. `closed` is permanent: an id is never reused. */
export type ChannelStatus = (typeof CHANNEL_STATUSES)[number];

/**
 * A channel as the adjudicator records it (`getChannel`). After `closed` every field but `status` is zero.
 * `version`, `deadline`, `payoutDevice` and `payoutHub` describe the registered state of a pending force close
 * and are zero otherwise.
 */
export interface OnChainChannel {
  readonly channelId: ChannelId;
  readonly status: ChannelStatus;
  readonly device: Address;
  readonly hub: Address;
  /** ERC20 token, or the zero address for ETH. */
  readonly token: Address;
  /** Seconds; fixed at open. */
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
