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
 * How long to wait before reading the block's logs again when they hold no matching event: the adjudicator's record
 * names the block, so the node has it; a load-balanced endpoint whose log index lags behind its state serves the
 * range empty for a moment (a challenge mined just before the deadline, read right after it by `settle`).
 */
const LAGGING_INDEX_RETRY_MS = [250, 500, 1_000, 2_000] as const;

/**
 * The registration of a closing channel and the event that carries it: the `ForceClosed` / `Challenged` event in
 * `block` whose registration (with the device slot) hashes to `hash`. Read again a few times (~4 s in all) while the
 * node returns none, as an endpoint whose log index lags does.
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
  for (let attempt = 0; ; attempt++) {
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
    const wait = LAGGING_INDEX_RETRY_MS[attempt];
    if (wait === undefined)
      throw new TrickleError('INTERNAL', `no registration event for closing channel ${channelId} in block ${block}`, {
        details: { channelId, block, hash, attempts: attempt + 1 },
      });
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}
