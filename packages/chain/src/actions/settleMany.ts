import type { Lock } from '@trickle/protocol/locks';
import type { ChannelId } from '@trickle/protocol/types';
import { eventsNamed, type ClosedEvent } from '../events.js';
import { locksArg, NO_REGISTRATION } from '../internal/locks.js';
import { sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';
import { getChannel } from './getChannel.js';

/** Options of {@link settleMany}. */
export interface SettleManyOptions extends TxOptions {
  /** The registered locks of the channels that have any, by channel id. */
  readonly locks?: ReadonlyMap<ChannelId, readonly Lock[]> | undefined;
}

/** Result of {@link settleMany}. */
export interface SettleManyReturnType extends TxResult {
  /** One event per channel this call settled. */
  readonly closed: readonly ClosedEvent[];
}

/**
 * Settle several channels in one transaction. Entries that cannot be settled (not closing, deadline not reached, a
 * lock still pending, already settled) are skipped, not reverted: a hub can submit every candidate without racing
 * its counterparties. Each closing channel's registration is read from the chain first.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param channelIds - candidates
 * @param opts - locks per channel, gas limit / nonce
 * @returns the receipt and the `Closed` event of each channel settled
 * @example
 * ```ts
 * const { closed } = await settleMany(adjudicator.connect(hub), expired);
 * ```
 */
export async function settleMany(
  target: AdjudicatorTarget,
  channelIds: readonly ChannelId[],
  opts: SettleManyOptions = {},
): Promise<SettleManyReturnType> {
  const entries = await Promise.all(
    channelIds.map(async (channelId) => {
      const c = await getChannel(target, channelId);
      return { channelId, reg: c.registration ?? NO_REGISTRATION, locks: locksArg(opts.locks?.get(channelId)) };
    }),
  );
  const result = await sendTx(target.contract, 'settleMany', [entries], opts);
  return { ...result, closed: eventsNamed(result.events, 'Closed') };
}

/** Parameters of {@link settleMany}. */
export type SettleManyParameters = Parameters<typeof settleMany>;
