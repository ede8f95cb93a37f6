import { TrickleError } from '@trickle/protocol/errors';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import { adjudicatorInterface, parseLogs, type ChallengedEvent, type ForceClosedEvent } from '../events.js';
import type { AdjudicatorTarget, Registration } from '../types.js';
import { registrationHash, registrationOf } from './locks.js';

const REGISTRATION_TOPICS = [
  adjudicatorInterface.getEvent('ForceClosed')!.topicHash,
  adjudicatorInterface.getEvent('Challenged')!.topicHash,
];

/**
 * The registration of a closing channel and the event that carries it: the `ForceClosed` / `Challenged` event in
 * `block` whose registration (with the device slot) hashes to `hash`.
 * @throws TrickleError `INTERNAL` when the node returns no such event
 */
export async function findRegistration(
  target: AdjudicatorTarget,
  channelId: ChannelId,
  block: number,
  hash: Bytes32,
  device: Address,
  depositDevice: bigint,
): Promise<{ readonly reg: Registration; readonly event: ForceClosedEvent | ChallengedEvent }> {
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
    if (registrationHash(channelId, reg) === hash) return { reg, event: e };
  }
  throw new TrickleError('INTERNAL', `no registration event for closing channel ${channelId} in block ${block}`, {
    details: { channelId, block, hash },
  });
}
