import { TrickleError } from '@trickle/protocol/errors';
import type { ChannelId, ChannelParams } from '@trickle/protocol/types';
import { eventsNamed } from '../events.js';
import { sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link openChannel}. */
export interface OpenChannelReturnType extends TxResult {
  readonly channelId: ChannelId;
  /** The opener's deposit as credited (less than `amount` for a fee-on-transfer token). */
  readonly deposit: bigint;
}

/**
 * Open a channel and deposit `amount` for the caller (the runner must be `params.device` or `params.hub`).
 * ETH channels send `amount` as value; token channels need an allowance first (see `approve` in `erc20`).
 * @param target - the adjudicator, connected to the opener's signer
 * @param params - channel parameters (`chainId`/`adjudicator` must be this chain and adjudicator)
 * @param amount - the opener's deposit in base units (may be 0)
 * @param opts - gas limit / nonce
 * @returns the receipt, the channel id and the credited deposit
 * @throws TrickleError `CHAIN_REVERTED` (e.g. `ChannelExists`, `SameDeviceAndHub`, `WrongDomain`)
 * @example
 * ```ts
 * const { channelId } = await openChannel(adjudicator.connect(device), params, 10n ** 18n);
 * ```
 */
export async function openChannel(
  target: AdjudicatorTarget,
  params: ChannelParams,
  amount: bigint,
  opts: TxOptions = {},
): Promise<OpenChannelReturnType> {
  if (amount < 0n) throw new TrickleError('INVALID_ARGUMENT', 'deposit must not be negative', { details: { amount } });
  const isEth = BigInt(params.token) === 0n;
  const result = await sendTx(target.contract, 'open', [params, amount], { ...opts, value: isEth ? amount : 0n });
  const opened = eventsNamed(result.events, 'ChannelOpened')[0];
  if (opened === undefined) throw new TrickleError('INTERNAL', 'open emitted no ChannelOpened event');
  return { ...result, channelId: opened.channelId, deposit: opened.deposit };
}

/** Parameters of {@link openChannel}. */
export type OpenChannelParameters = Parameters<typeof openChannel>;
