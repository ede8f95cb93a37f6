import { TrickleError } from '@trickle/protocol/errors';
import { lockCommitment, type Lock } from '@trickle/protocol/locks';
import { ZERO_ROOT, type Address, type Bytes32, type ChannelId } from '@trickle/protocol/types';
import { adjudicatorInterface } from '../events.js';
import { findRegistration } from '../internal/registration.js';
import { callView } from '../internal/send.js';
import { CHANNEL_STATUSES, type AdjudicatorTarget } from '../types.js';

/** Entry points whose calldata carries the lock list of the state they register. */
const WITH_LOCKS: ReadonlySet<string> = new Set(['forceCloseWithLocks', 'challengeWithLocks']);

/**
 * The lock list of a closing channel's registered state, in committed order, recovered from the calldata of the
 * transaction that registered it (`forceCloseWithLocks` / `challengeWithLocks`) and checked against the registered
 * root. `settle` needs the list, and the adjudicator keeps only its root: a party whose own store holds another state
 * (the counterparty force-closed with an older one, and nobody challenged) can still settle, even if the registrant
 * never does.
 * @param target - the adjudicator (a runner with a provider)
 * @param channelId - a closing channel
 * @returns the locks (empty when the registered state has none)
 * @throws TrickleError `CHANNEL_NOT_OPEN` when the channel is not closing; `UNKNOWN_LOCK` when the registering
 *   transaction did not call the adjudicator directly (e.g. through a wallet contract) or its list does not match
 * @example
 * ```ts
 * await settle(adjudicator, channelId, { locks: await getRegisteredLocks(adjudicator, channelId) });
 * ```
 */
export async function getRegisteredLocks(target: AdjudicatorTarget, channelId: ChannelId): Promise<Lock[]> {
  const r = await callView<{
    status: bigint;
    device: string;
    depositDevice: bigint;
    registrationHash: string;
    registeredBlock: bigint;
  }>(target.contract, 'getChannel', [channelId]);
  const status = CHANNEL_STATUSES[Number(r.status)] ?? 'none';
  if (status !== 'closing')
    throw new TrickleError('CHANNEL_NOT_OPEN', `channel ${channelId} is ${status}: no registered state`, {
      details: { channelId, status },
    });
  const { reg, event } = await findRegistration(
    target,
    channelId,
    Number(r.registeredBlock),
    r.registrationHash.toLowerCase() as Bytes32,
    r.device as Address,
    r.depositDevice,
  );
  if (reg.locksRoot === ZERO_ROOT) return [];
  const unknown = (why: string) =>
    new TrickleError('UNKNOWN_LOCK', `the lock list of channel ${channelId}'s registered state: ${why}`, {
      details: { channelId, tx: event.log.transactionHash, locksRoot: reg.locksRoot },
    });
  const tx = await target.contract.runner!.provider!.getTransaction(event.log.transactionHash);
  if (tx === null) throw unknown('the node does not return its registering transaction');
  if (tx.to === null || BigInt(tx.to) !== BigInt(target.address))
    throw unknown('its registering transaction did not call the adjudicator directly');
  const call = adjudicatorInterface.parseTransaction({ data: tx.data, value: tx.value });
  if (call === null || !WITH_LOCKS.has(call.name)) throw unknown(`registered by ${call?.name ?? 'an unknown call'}`);
  const locks = (call.args['locks'] as readonly { amount: bigint; hash: string; expiry: bigint; payer: bigint }[]).map(
    (l): Lock => ({
      amount: l.amount,
      hash: l.hash.toLowerCase() as Bytes32,
      expiry: l.expiry,
      payer: l.payer === 1n ? 'hub' : 'device',
    }),
  );
  if (lockCommitment(locks).locksRoot !== reg.locksRoot) throw unknown('the list in its transaction does not match');
  return locks;
}

/** Parameters of {@link getRegisteredLocks}. */
export type GetRegisteredLocksParameters = Parameters<typeof getRegisteredLocks>;
