import { ZERO_ROOT, type Address, type Bytes32, type ChannelId } from '@trickle/protocol/types';
import { callView } from '../internal/send.js';
import { findRegistration } from '../internal/registration.js';
import { CHANNEL_STATUSES, type AdjudicatorTarget, type OnChainChannel } from '../types.js';

/**
 * Read a channel's on-chain record. For a closing channel the adjudicator keeps only a registration hash and the
 * block of the `ForceClosed` / `Challenged` event that carries the registration: it is read from that block's logs
 * and checked against the hash.
 * @param target - the adjudicator (a runner with a provider)
 * @param channelId - the channel
 * @param opts - `blockTag`: read the record as of that block (a number, or a tag such as `'latest'`, the default), e.g.
 *   a few blocks behind the head so that a deposit a reorganisation could remove is not counted yet
 * @returns the record; `status: 'none'` (all zero) for an id never used
 * @throws TrickleError `INTERNAL` when the node returns no event matching the registration hash
 * @example
 * ```ts
 * const { status, deadline } = await getChannel(adjudicator, channelId);
 * ```
 */
export async function getChannel(
  target: AdjudicatorTarget,
  channelId: ChannelId,
  opts: { readonly blockTag?: number | string | undefined } = {},
): Promise<OnChainChannel> {
  const r = await callView<{
    status: bigint;
    device: string;
    hub: string;
    token: string;
    challengeDuration: bigint;
    depositDevice: bigint;
    depositHub: bigint;
    registrationHash: string;
    registeredBlock: bigint;
  }>(
    target.contract,
    'getChannel',
    opts.blockTag === undefined ? [channelId] : [channelId, { blockTag: opts.blockTag }],
  );
  const status = CHANNEL_STATUSES[Number(r.status)] ?? 'none';
  if (status === 'closing') {
    const { reg } = await findRegistration(
      target,
      channelId,
      Number(r.registeredBlock),
      r.registrationHash.toLowerCase() as Bytes32,
      r.device as Address,
      r.depositDevice,
    );
    return {
      channelId,
      status,
      device: reg.device,
      hub: reg.hub,
      token: reg.token,
      challengeDuration: 0n,
      depositDevice: reg.depositDevice,
      depositHub: reg.depositHub,
      version: reg.version,
      deadline: reg.deadline,
      payoutDevice: reg.payoutDevice,
      payoutHub: reg.payoutHub,
      locksRoot: reg.locksRoot,
      registration: reg,
    };
  }
  return {
    channelId,
    status,
    device: r.device as Address,
    hub: r.hub as Address,
    token: r.token as Address,
    challengeDuration: r.challengeDuration,
    depositDevice: r.depositDevice,
    depositHub: r.depositHub,
    version: 0n,
    deadline: 0n,
    payoutDevice: 0n,
    payoutHub: 0n,
    locksRoot: ZERO_ROOT,
  };
}

/** Parameters of {@link getChannel}. */
export type GetChannelParameters = Parameters<typeof getChannel>;
