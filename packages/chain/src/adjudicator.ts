/**
 * `Adjudicator`: a thin, typed handle on a deployed adjudicator. Each method is one of the per-operation functions
 * in `./actions/` bound to this contract; use those directly for tree-shaking or when composing.
 */
import { Contract, type ContractRunner, type Log, type Provider } from 'ethers';
import { TrickleError } from '@trickle/protocol/errors';
import { toAddress } from '@trickle/protocol/hex';
import type { Lock } from '@trickle/protocol/locks';
import type { Address, Bytes32, ChannelId, ChannelParams, SignedState, State } from '@trickle/protocol/types';
import { challenge, type ChallengeOptions, type ChallengeReturnType } from './actions/challenge.js';
import { cooperativeClose, type CooperativeCloseReturnType } from './actions/cooperativeClose.js';
import { cooperativeCloseMany, type CooperativeCloseManyReturnType } from './actions/cooperativeCloseMany.js';
import { deposit, type DepositOptions, type DepositReturnType } from './actions/deposit.js';
import { forceClose, type ForceCloseOptions, type ForceCloseReturnType } from './actions/forceClose.js';
import { getChannel } from './actions/getChannel.js';
import { getOwed } from './actions/getOwed.js';
import { onChainChannelId, onChainDomainSeparator, onChainLocksRoot, onChainStateDigest } from './actions/hashing.js';
import { openChannel, type OpenChannelReturnType } from './actions/openChannel.js';
import { getRevealedAt, reveal, type RevealReturnType } from './actions/reveal.js';
import { settle, type SettleOptions, type SettleReturnType } from './actions/settle.js';
import { settleMany, type SettleManyOptions, type SettleManyReturnType } from './actions/settleMany.js';
import { withdraw, type WithdrawReturnType } from './actions/withdraw.js';
import { adjudicatorInterface, parseLogs, queryEvents, type AdjudicatorEvent, type EventFilter } from './events.js';
import type { AdjudicatorTarget, OnChainChannel, TxOptions } from './types.js';

/**
 * A deployed adjudicator bound to a runner: a `Signer` to send transactions, or a provider for reads only.
 * Transactions wait for their receipt and return it with the decoded events; reverts throw `TrickleError`
 * `CHAIN_REVERTED` with the custom error's name in `details.error`.
 * @example
 * ```ts
 * const adj = new Adjudicator(address, hubWallet);
 * const { channelId } = await adj.open(params, 10_000_000n);
 * const asDevice = adj.connect(deviceWallet);
 * await asDevice.deposit(channelId, 1_000_000n);
 * ```
 */
export class Adjudicator implements AdjudicatorTarget {
  readonly address: Address;
  readonly contract: Contract;

  /**
   * @param address - the adjudicator's address
   * @param runner - a Signer (for transactions) or a Provider (reads)
   * @throws MalformedError when `address` is not an address
   */
  constructor(address: string, runner: ContractRunner) {
    this.address = toAddress(address);
    this.contract = new Contract(this.address, adjudicatorInterface, runner);
  }

  /** The same adjudicator with another runner (e.g. the counterparty's signer). */
  connect(runner: ContractRunner): Adjudicator {
    return new Adjudicator(this.address, runner);
  }

  /** The runner's provider. @throws TrickleError `INVALID_ARGUMENT` when the runner has none. */
  get provider(): Provider {
    const provider = this.contract.runner?.provider;
    if (provider == null) throw new TrickleError('INVALID_ARGUMENT', 'the runner has no provider');
    return provider;
  }

  /** Open a channel and deposit for the caller. See {@link openChannel}. */
  open(params: ChannelParams, amount: bigint, opts?: TxOptions): Promise<OpenChannelReturnType> {
    return openChannel(this, params, amount, opts);
  }

  /** Top up the caller's deposit. See {@link deposit}. */
  deposit(channelId: ChannelId, amount: bigint, opts?: DepositOptions): Promise<DepositReturnType> {
    return deposit(this, channelId, amount, opts);
  }

  /** Close with a final state signed by both. See {@link cooperativeClose}. */
  cooperativeClose(signed: SignedState, opts?: TxOptions): Promise<CooperativeCloseReturnType> {
    return cooperativeClose(this, signed, opts);
  }

  /** Close several channels cooperatively (already-closed entries skipped). See {@link cooperativeCloseMany}. */
  cooperativeCloseMany(signed: readonly SignedState[], opts?: TxOptions): Promise<CooperativeCloseManyReturnType> {
    return cooperativeCloseMany(this, signed, opts);
  }

  /** Start a unilateral close (with the state's locks, if any). See {@link forceClose}. */
  forceClose(signed: SignedState, opts?: ForceCloseOptions): Promise<ForceCloseReturnType> {
    return forceClose(this, signed, opts);
  }

  /** Register a strictly newer state before the deadline. See {@link challenge}. */
  challenge(signed: SignedState, opts?: ChallengeOptions): Promise<ChallengeReturnType> {
    return challenge(this, signed, opts);
  }

  /** Pay out a force-closed channel after its deadline, deciding its locks. See {@link settle}. */
  settle(channelId: ChannelId, opts?: SettleOptions): Promise<SettleReturnType> {
    return settle(this, channelId, opts);
  }

  /** Settle every settleable channel among `channelIds` (others skipped). See {@link settleMany}. */
  settleMany(channelIds: readonly ChannelId[], opts?: SettleManyOptions): Promise<SettleManyReturnType> {
    return settleMany(this, channelIds, opts);
  }

  /** Record a lock preimage on-chain. See {@link reveal}. */
  reveal(preimage: Bytes32, opts?: TxOptions): Promise<RevealReturnType> {
    return reveal(this, preimage, opts);
  }

  /** When the preimage of `hash` was first revealed, 0n if never. See {@link getRevealedAt}. */
  revealedAt(hash: Bytes32): Promise<bigint> {
    return getRevealedAt(this, hash);
  }

  /** The lock root computed by the contract. See {@link onChainLocksRoot}. */
  locksRoot(locks: readonly Lock[]): Promise<Bytes32> {
    return onChainLocksRoot(this, locks);
  }

  /** Pull what the caller is owed in `token`, to `to` (default: the caller). See {@link withdraw}. */
  withdraw(token: Address, to?: Address, opts?: TxOptions): Promise<WithdrawReturnType> {
    return withdraw(this, token, to, opts);
  }

  /** The channel's on-chain record. See {@link getChannel}. */
  getChannel(
    channelId: ChannelId,
    opts?: { readonly blockTag?: number | string | undefined },
  ): Promise<OnChainChannel> {
    return getChannel(this, channelId, opts);
  }

  /** What `account` can withdraw in `token`. See {@link getOwed}. */
  owed(token: Address, account: Address): Promise<bigint> {
    return getOwed(this, token, account);
  }

  /** The state's EIP-712 digest computed by the contract. See {@link onChainStateDigest}. */
  stateDigest(state: State): Promise<Bytes32> {
    return onChainStateDigest(this, state);
  }

  /** The channel id of `params` computed by the contract. See {@link onChainChannelId}. */
  channelIdOf(params: ChannelParams): Promise<ChannelId> {
    return onChainChannelId(this, params);
  }

  /** The contract's EIP-712 domain separator. */
  domainSeparator(): Promise<Bytes32> {
    return onChainDomainSeparator(this);
  }

  /** This adjudicator's events in a block range (inclusive). See {@link queryEvents}. */
  queryEvents(
    fromBlock: number | bigint,
    toBlock: number | bigint | 'latest',
    filter?: EventFilter,
  ): Promise<AdjudicatorEvent[]> {
    return queryEvents(this.provider, this.address, fromBlock, toBlock, filter);
  }

  /** Decode this adjudicator's events among `logs`. See {@link parseLogs}. */
  parseLogs(logs: readonly Log[]): AdjudicatorEvent[] {
    return parseLogs(logs, this.address);
  }
}
