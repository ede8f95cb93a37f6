import { TrickleError } from '@trickle/protocol/errors';
import type { ChannelId } from '@trickle/protocol/types';
import { eventsNamed, type ClosedEvent } from '../events.js';
import { sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link settle}. */
export interface SettleReturnType extends TxResult {
  readonly closed: ClosedEvent;
}

/**
 * Pay out the registered state of a force-closed channel once its deadline has passed. Anyone may call.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param channelId - the channel
 * @param opts - gas limit / nonce
 * @returns the receipt and the `Closed` event
 * @throws TrickleError `CHAIN_REVERTED` (`ChallengePeriodNotOver`, `ChannelNotClosing`)
 * @example
 * ```ts
 * const { closed } = await settle(adjudicator, channelId);
 * ```
 */
export async function settle(target: AdjudicatorTarget, channelId: ChannelId, opts: TxOptions = {}): Promise<SettleReturnType> {
  const result = await sendTx(target.contract, 'settle', [channelId], opts);
  const closed = eventsNamed(result.events, 'Closed')[0];
  if (closed === undefined) throw new TrickleError('INTERNAL', 'settle emitted no Closed event');
  return { ...result, closed };
}

/** Parameters of {@link settle}. */
export type SettleParameters = Parameters<typeof settle>;
