import type { ChannelId } from '@trickle/protocol/types';
import { eventsNamed, type ClosedEvent } from '../events.js';
import { sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link settleMany}. */
export interface SettleManyReturnType extends TxResult {
  /** One event per channel this call settled. */
  readonly closed: readonly ClosedEvent[];
}

/**
 * Settle several channels in one transaction. Entries that cannot be settled (not closing, deadline not reached,
 * already settled) are skipped, not reverted: a hub can submit every candidate without racing its counterparties.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param channelIds - candidates
 * @param opts - gas limit / nonce
 * @returns the receipt and the `Closed` event of each channel settled
 * @example
 * ```ts
 * const { closed } = await settleMany(adjudicator.connect(hub), expired);
 * ```
 */
export async function settleMany(
  target: AdjudicatorTarget,
  channelIds: readonly ChannelId[],
  opts: TxOptions = {},
): Promise<SettleManyReturnType> {
  const result = await sendTx(target.contract, 'settleMany', [channelIds], opts);
  return { ...result, closed: eventsNamed(result.events, 'Closed') };
}

/** Parameters of {@link settleMany}. */
export type SettleManyParameters = Parameters<typeof settleMany>;
