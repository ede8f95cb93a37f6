import type { Address, ChannelId } from '@trickle/protocol/types';
import { callView } from '../internal/send.js';
import { CHANNEL_STATUSES, type AdjudicatorTarget, type OnChainChannel } from '../types.js';

/**
 * Read a channel's on-chain record.
 * @param target - the adjudicator (any runner)
 * @param channelId - the channel
 * @returns the record; `status: 'none'` (all zero) for an id never used
 * @example
 * ```ts
 * const { status, deadline } = await getChannel(adjudicator, channelId);
 * ```
 */
export async function getChannel(target: AdjudicatorTarget, channelId: ChannelId): Promise<OnChainChannel> {
  const r = await callView<{
    status: bigint;
    device: string;
    hub: string;
    token: string;
    challengeDuration: bigint;
    depositDevice: bigint;
    depositHub: bigint;
    version: bigint;
    deadline: bigint;
    payoutDevice: bigint;
    payoutHub: bigint;
  }>(target.contract, 'getChannel', [channelId]);
  return {
    channelId,
    status: CHANNEL_STATUSES[Number(r.status)] ?? 'none',
    device: r.device as Address,
    hub: r.hub as Address,
    token: r.token as Address,
    challengeDuration: r.challengeDuration,
    depositDevice: r.depositDevice,
    depositHub: r.depositHub,
    version: r.version,
    deadline: r.deadline,
    payoutDevice: r.payoutDevice,
    payoutHub: r.payoutHub,
  };
}

/** Parameters of {@link getChannel}. */
export type GetChannelParameters = Parameters<typeof getChannel>;
