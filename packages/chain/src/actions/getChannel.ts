import { TrickleError } from '@trickle/protocol/errors';
import { ZERO_ROOT, type Address, type Bytes32, type ChannelId } from '@trickle/protocol/types';
import { adjudicatorInterface, parseLogs } from '../events.js';
import { callView } from '../internal/send.js';
import { registrationHash, registrationOf } from '../internal/locks.js';
import { CHANNEL_STATUSES, type AdjudicatorTarget, type OnChainChannel, type Registration } from '../types.js';

const REGISTRATION_TOPICS = [
  adjudicatorInterface.getEvent('ForceClosed')!.topicHash,
  adjudicatorInterface.getEvent('Challenged')!.topicHash,
];

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
    const reg = await readRegistration(
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

/** The registration of a closing channel, from the event in `block` whose hash (with the device slot) matches `hash`. */
async function readRegistration(
  target: AdjudicatorTarget,
  channelId: ChannelId,
  block: number,
  hash: Bytes32,
  device: Address,
  depositDevice: bigint,
): Promise<Registration> {
  const provider = target.contract.runner?.provider;
  if (provider == null)
    throw new TrickleError('INVALID_ARGUMENT', 'reading a closing channel needs a runner with a provider');
  const logs = await provider.getLogs({
    address: target.address,
    fromBlock: block,
    toBlock: block,
    topics: [REGISTRATION_TOPICS, channelId],
  });
  for (const e of parseLogs(logs, target.address).reverse()) {
    if (e.name !== 'ForceClosed' && e.name !== 'Challenged') continue;
    const reg = registrationOf(e, device, depositDevice);
    if (registrationHash(channelId, reg) === hash) return reg;
  }
  throw new TrickleError('INTERNAL', `no registration event for closing channel ${channelId} in block ${block}`, {
    details: { channelId, block, hash },
  });
}

/** Parameters of {@link getChannel}. */
export type GetChannelParameters = Parameters<typeof getChannel>;
