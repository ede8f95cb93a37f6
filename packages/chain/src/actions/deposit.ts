import { TrickleError } from '@trickle/protocol/errors';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { eventsNamed } from '../events.js';
import { sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';
import { getChannel } from './getChannel.js';

/** Options of {@link deposit}. */
export interface DepositOptions extends TxOptions {
  /** The channel's token, when known: saves the `getChannel` call that decides whether to send ETH. */
  readonly token?: Address | undefined;
}

/** Result of {@link deposit}. */
export interface DepositReturnType extends TxResult {
  /** What was credited (less than `amount` for a fee-on-transfer token). */
  readonly credited: bigint;
  /** The caller's deposit in the channel now. */
  readonly total: bigint;
}

/**
 * Top up the caller's deposit in an open channel (the runner must be the channel's device or hub).
 * @param target - the adjudicator, connected to the participant's signer
 * @param channelId - the channel
 * @param amount - base units; token channels need an allowance first
 * @param opts - `token` if known, gas limit / nonce
 * @returns the receipt and the new total
 * @throws TrickleError `CHAIN_REVERTED` (`ChannelNotOpen`, `NotParticipant`, `ZeroDeposit`, ...)
 * @example
 * ```ts
 * const { total } = await deposit(adjudicator.connect(hub), channelId, 5_000_000n);
 * ```
 */
export async function deposit(
  target: AdjudicatorTarget,
  channelId: ChannelId,
  amount: bigint,
  opts: DepositOptions = {},
): Promise<DepositReturnType> {
  if (amount < 0n) throw new TrickleError('INVALID_ARGUMENT', 'deposit must not be negative', { details: { amount } });
  const token = opts.token ?? (await getChannel(target, channelId)).token;
  const isEth = BigInt(token) === 0n;
  const result = await sendTx(target.contract, 'deposit', [channelId, amount], { ...opts, value: isEth ? amount : 0n });
  const event = eventsNamed(result.events, 'Deposited')[0];
  if (event === undefined) throw new TrickleError('INTERNAL', 'deposit emitted no Deposited event');
  return { ...result, credited: event.amount, total: event.total };
}

/** Parameters of {@link deposit}. */
export type DepositParameters = Parameters<typeof deposit>;
