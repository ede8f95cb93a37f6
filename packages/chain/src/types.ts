/**
 * Types of the on-chain side: channel records as the adjudicator stores them, and transaction options/results.
 * Amounts are `bigint`; addresses and ids use the branded types of `@trickle/protocol/types`.
 */
import type { Contract, TransactionReceipt } from 'ethers';
import type { Address, Bytes32, ChannelId, Hex } from '@trickle/protocol/types';
import type { AdjudicatorEvent } from './events.js';

/**
 * Chain ids of development chains (Hardhat/EDR, Anvil, Ganache, `@trickle/devchain`'s): a block is mined per
 * transaction and none otherwise, and one mined is final. The hub, the device client and the CLI wait for no
 * confirmations there by default, and the watchtower does not judge the node by the age of its head.
 */
export const DEV_CHAIN_IDS: ReadonlySet<bigint> = new Set([31337n, 1337n]);

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
  /**
   * Replace-by-fee: when the transaction is not mined within a bound, send the same call again with the same nonce
   * and higher fees, until one of them is mined, the deadline passes or the fee cap is reached. Off when absent.
   * A send that gives up leaves its last copy in the mempool holding its nonce; the process remembers it, and the
   * account's next replace-by-fee send without an explicit `nonce` (whatever its call) takes that nonce, priced at
   * least 12.5% above the stuck copy, instead of queuing behind it (`LIMIT_EXCEEDED` at once, nothing sent, when its
   * cap is below that). With `replace.stuckCopies`, a restarted process remembers them too.
   */
  readonly replace?: ReplaceOptions | undefined;
}

/**
 * Replace-by-fee of a transaction stuck in the mempool (a time-bound dispute send priced below a fee spike). Every
 * copy is the same call with the same nonce, so exactly one of them is mined. Fees are EIP-1559 (`maxFeePerGas`,
 * `maxPriorityFeePerGas`); a chain without them gets its legacy `gasPrice` raised the same way.
 */
export interface ReplaceOptions {
  /** Re-price after this many new blocks without a copy mined (default 2). */
  readonly everyBlocks?: number | undefined;
  /** ...or after this many milliseconds, whichever comes first (default 15,000). */
  readonly everyMs?: number | undefined;
  /**
   * Percent each replacement raises both fees by at least (default 20; at least 13: nodes refuse replacements below
   * +10% (geth) or +12.5% (others)). A replacement is also priced at least at the node's current fee data.
   */
  readonly bumpPercent?: number | undefined;
  /**
   * Highest `maxFeePerGas` (wei) any copy may carry (default: 10 times the node's fee when the send starts, which is
   * the first copy's unless it replaces an abandoned one). When the next replacement would need more, the send stops
   * with `LIMIT_EXCEEDED` after the capped copy had its bound to be mined.
   */
  readonly maxFeePerGas?: bigint | undefined;
  /**
   * Chain time (unix seconds) after which the call is useless (a challenge's deadline, a lock's expiry): once the
   * newest block's timestamp reaches it with no copy mined, the send stops with `TIMEOUT`. `challenge` sets the
   * registration's deadline when this is absent.
   */
  readonly deadline?: bigint | undefined;
  /** How often the chain is polled for a copy's receipt (default 1,000 ms). */
  readonly pollMs?: number | undefined;
  /** Told of every copy sent (the first one too), e.g. to log it. */
  readonly onSend?: ((sent: SentCopy) => void) | undefined;
  /**
   * Where the sending account's stuck copies (the last copy of each send that gave up unmined, and the newest copy of
   * each send still waiting, saved as it goes out) are kept across restarts, one store per chain. Without it they are remembered in memory only, and a restarted process's next send
   * queues behind (geth) or collides with (EDR: `INTERNAL`, replacement underpriced) the copy an earlier process
   * abandoned. See {@link StuckCopyStore}.
   */
  readonly stuckCopies?: StuckCopyStore | undefined;
  /**
   * Give up when this is aborted (the sending process is stopping): no copy is sent after it, and the send stops with
   * `TIMEOUT` (`details.aborted: true`) at its next poll, its last copy remembered (and saved to `stuckCopies`) as on
   * any give-up, so that the next send, a restarted process's too, replaces it instead of queuing behind it.
   */
  readonly signal?: AbortSignal | undefined;
}

/**
 * The last copy of a replace-by-fee send still waiting to be mined, or that gave up while none of its copies was mined:
 * it holds its nonce.
 */
export interface StuckCopy {
  readonly nonce: number;
  /** `maxFeePerGas` (or legacy `gasPrice`) of the copy: a replacement must raise it by the node's rule. */
  readonly maxFeePerGas: bigint;
  readonly maxPriorityFeePerGas: bigint;
}

/**
 * Durable memory of an account's {@link StuckCopy}s, supplied by the caller (a hub's store, a watchtower's database),
 * so that the account's next replace-by-fee send after a restart replaces its stuck copy instead of queuing behind it.
 * `load` is read once per account and provider, before the first replace-by-fee send (a rejection fails that send
 * with `STORE_FAILURE`, nothing sent; the next send reads again); `save` is given the account's whole list whenever a
 * copy is sent (before the send waits on it, so that a process that dies mid-send leaves it known) and whenever a
 * send gives up (copies of nonces since mined may stay in it: they are skipped when read). A `save` that rejects
 * while a copy is sent does not fail the send (the copy is out; the next save writes the whole list again); one that
 * rejects at a give-up leaves the send's own error as it is (`LIMIT_EXCEEDED`, `TIMEOUT`…) with `details.stuckCopyUnsaved: true` and the
 * rejection as its `cause`.
 * @example
 * ```ts
 * const kept = new Map<string, readonly StuckCopy[]>(); // a real one writes to disk
 * const stuckCopies: StuckCopyStore = {
 *   load: async (account) => kept.get(account) ?? [],
 *   save: async (account, copies) => void kept.set(account, copies),
 * };
 * await adjudicator.reveal(preimage, { replace: { stuckCopies } });
 * ```
 */
export interface StuckCopyStore {
  /** The copies saved last for `account` (an EIP-55 address), in any order; `[]` when none. */
  load(account: Address): Promise<readonly StuckCopy[]>;
  /** Replace what is kept for `account` with `copies` (lowest nonce first; `[]`: nothing stuck); durable when it resolves. */
  save(account: Address, copies: readonly StuckCopy[]): Promise<void>;
}

/**
 * {@link StuckCopy}s as a key-value store keeps them: JSON, the fees as decimal strings (JSON has no bigint).
 * @example
 * ```ts
 * decodeStuckCopies(encodeStuckCopies([{ nonce: 7, maxFeePerGas: 3n, maxPriorityFeePerGas: 1n }])); // the same list
 * ```
 */
export function encodeStuckCopies(copies: readonly StuckCopy[]): string {
  return JSON.stringify(
    copies.map((c) => ({
      nonce: c.nonce,
      maxFeePerGas: String(c.maxFeePerGas),
      maxPriorityFeePerGas: String(c.maxPriorityFeePerGas),
    })),
  );
}

/** The copies {@link encodeStuckCopies} wrote. */
export function decodeStuckCopies(text: string): StuckCopy[] {
  const kept = JSON.parse(text) as { nonce: number; maxFeePerGas: string; maxPriorityFeePerGas: string }[];
  return kept.map((c) => ({
    nonce: c.nonce,
    maxFeePerGas: BigInt(c.maxFeePerGas),
    maxPriorityFeePerGas: BigInt(c.maxPriorityFeePerGas),
  }));
}

/** One copy of a replace-by-fee send. */
export interface SentCopy {
  readonly hash: Hex;
  readonly nonce: number;
  /** 0 for the first copy. */
  readonly attempt: number;
  /** `maxFeePerGas`, or `gasPrice` on a legacy chain. */
  readonly maxFeePerGas: bigint;
  /** `maxPriorityFeePerGas` (equal to `maxFeePerGas` on a legacy chain). */
  readonly maxPriorityFeePerGas: bigint;
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
