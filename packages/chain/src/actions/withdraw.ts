import type { Signer } from 'ethers';
import { TrickleError } from '@trickle/protocol/errors';
import type { Address } from '@trickle/protocol/types';
import { eventsNamed } from '../events.js';
import { sendTx } from '../internal/send.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link withdraw}. */
export interface WithdrawReturnType extends TxResult {
  readonly amount: bigint;
}

/**
 * Pull everything the adjudicator owes the caller in `token` (payouts whose push failed).
 * @param target - the adjudicator, connected to the owed account's signer
 * @param token - ERC20 address, or the zero address for ETH
 * @param to - recipient; defaults to the caller (pass another address when the caller cannot receive, e.g. blocked)
 * @param opts - gas limit / nonce
 * @returns the receipt and the amount sent
 * @throws TrickleError `CHAIN_REVERTED` (`NothingOwed`, `EthTransferFailed`, `SafeERC20FailedOperation`)
 * @example
 * ```ts
 * const owedNow = await adjudicator.owed(token, me);
 * if (owedNow > 0n) await withdraw(adjudicator.connect(signer), token, coldWallet);
 * ```
 */
export async function withdraw(
  target: AdjudicatorTarget,
  token: Address,
  to?: Address,
  opts: TxOptions = {},
): Promise<WithdrawReturnType> {
  let recipient: string | undefined = to;
  if (recipient === undefined) {
    const runner = target.contract.runner as Partial<Signer> | null;
    if (runner?.getAddress === undefined) {
      throw new TrickleError('INVALID_ARGUMENT', 'withdraw needs a signer, or an explicit recipient');
    }
    recipient = await runner.getAddress();
  }
  const result = await sendTx(target.contract, 'withdraw', [token, recipient], opts);
  const event = eventsNamed(result.events, 'Withdrawn')[0];
  if (event === undefined) throw new TrickleError('INTERNAL', 'withdraw emitted no Withdrawn event');
  return { ...result, amount: event.amount };
}

/** Parameters of {@link withdraw}. */
export type WithdrawParameters = Parameters<typeof withdraw>;
