import { TrickleError } from '@trickle/protocol/errors';
import type { Lock } from '@trickle/protocol/locks';
import type { ChannelId } from '@trickle/protocol/types';
import { eventsNamed, type ClosedEvent } from '../events.js';
import { locksArg, NO_REGISTRATION } from '../internal/locks.js';
import { sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';
import { getChannel } from './getChannel.js';

/** Options of {@link settle}. */
export interface SettleOptions extends TxOptions {
  /** The registered state's locks in committed order (required when its `locksRoot` is not zero). */
  readonly locks?: readonly Lock[] | undefined;
}

/** Result of {@link settle}. */
export interface SettleReturnType extends TxResult {
  readonly closed: ClosedEvent;
}

/**
 * Pay out the registered state of a force-closed channel once its deadline has passed and each of its locks is
 * decided (claimed: the preimage was revealed by its expiry; or expired). Anyone may call. The registration is read
 * from the chain ({@link getChannel}).
 * @param target - the adjudicator, connected to the submitter's signer
 * @param channelId - the channel
 * @param opts - the registered state's locks, gas limit / nonce
 * @returns the receipt and the `Closed` event (payouts after locks)
 * @throws TrickleError `CHAIN_REVERTED` (`ChallengePeriodNotOver`, `ChannelNotClosing`, `LockNotExpired`, `WrongLocks`)
 * @example
 * ```ts
 * const { closed } = await settle(adjudicator, channelId);
 * ```
 */
export async function settle(
  target: AdjudicatorTarget,
  channelId: ChannelId,
  opts: SettleOptions = {},
): Promise<SettleReturnType> {
  const c = await getChannel(target, channelId);
  const reg = c.registration ?? NO_REGISTRATION;
  const result =
    opts.locks === undefined || opts.locks.length === 0
      ? await sendTx(target.contract, 'settle', [channelId, reg], opts)
      : await sendTx(target.contract, 'settleWithLocks', [channelId, reg, locksArg(opts.locks)], opts);
  const closed = eventsNamed(result.events, 'Closed')[0];
  if (closed === undefined) throw new TrickleError('INTERNAL', 'settle emitted no Closed event');
  return { ...result, closed };
}

/** Parameters of {@link settle}. */
export type SettleParameters = Parameters<typeof settle>;
