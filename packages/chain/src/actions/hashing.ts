import type { Lock } from '@trickle/protocol/locks';
import type { Bytes32, ChannelId, ChannelParams, State } from '@trickle/protocol/types';
import { locksArg } from '../internal/locks.js';
import { callView } from '../internal/send.js';
import { stateArg } from '../internal/signed.js';
import type { AdjudicatorTarget } from '../types.js';

/**
 * The EIP-712 digest of `state` as the adjudicator computes it: for checking `@trickle/protocol`'s hashing
 * against the contract (test vectors), not for everyday signing (`stateDigest` in protocol is local and free).
 * @example
 * ```ts
 * expect(await onChainStateDigest(adjudicator, state)).toBe(stateDigestHex(sep, state));
 * ```
 */
export async function onChainStateDigest(target: AdjudicatorTarget, state: State): Promise<Bytes32> {
  return (
    (await callView<string>(target.contract, 'stateDigest', [stateArg(state)])) as string
  ).toLowerCase() as Bytes32;
}

/**
 * The `locksRoot` of a lock list as the adjudicator computes it (for checking `@trickle/protocol/locks`).
 * @example
 * ```ts
 * expect(await onChainLocksRoot(adjudicator, locks)).toBe(locksRoot(locks));
 * ```
 */
export async function onChainLocksRoot(target: AdjudicatorTarget, locks: readonly Lock[]): Promise<Bytes32> {
  return (
    (await callView<string>(target.contract, 'locksRootOf', [locksArg(locks)])) as string
  ).toLowerCase() as Bytes32;
}

/**
 * The channel id of `params` as the adjudicator computes it (`keccak256(abi.encode(params))`).
 * @example
 * ```ts
 * expect(await onChainChannelId(adjudicator, params)).toBe(channelIdOf(params));
 * ```
 */
export async function onChainChannelId(target: AdjudicatorTarget, params: ChannelParams): Promise<ChannelId> {
  return ((await callView<string>(target.contract, 'channelIdOf', [params])) as string).toLowerCase() as ChannelId;
}

/**
 * The adjudicator's EIP-712 domain separator.
 * @example
 * ```ts
 * const sep = await onChainDomainSeparator(adjudicator);
 * ```
 */
export async function onChainDomainSeparator(target: AdjudicatorTarget): Promise<Bytes32> {
  return ((await callView<string>(target.contract, 'domainSeparator', [])) as string).toLowerCase() as Bytes32;
}
