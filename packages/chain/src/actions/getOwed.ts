import type { Address } from '@trickle/protocol/types';
import { callView } from '../internal/send.js';
import type { AdjudicatorTarget } from '../types.js';

/**
 * What `account` can pull with `withdraw` in `token`.
 * @param target - the adjudicator (any runner)
 * @param token - ERC20 address, or the zero address for ETH
 * @param account - the owed account
 * @returns base units owed
 * @example
 * ```ts
 * const amount = await getOwed(adjudicator, ETH_TOKEN, device.address);
 * ```
 */
export async function getOwed(target: AdjudicatorTarget, token: Address, account: Address): Promise<bigint> {
  return callView<bigint>(target.contract, 'owed', [token, account]);
}

/** Parameters of {@link getOwed}. */
export type GetOwedParameters = Parameters<typeof getOwed>;
