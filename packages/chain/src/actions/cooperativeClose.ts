import { TrickleError } from '@trickle/protocol/errors';
import type { SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ClosedEvent } from '../events.js';
import { sendTx } from '../internal/send.js';
import { signedArgs } from '../internal/signed.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link cooperativeClose}. */
export interface CooperativeCloseReturnType extends TxResult {
  /** The payouts (pushed, or credited to `owed` when a push failed: see `PayoutDeferred` events). */
  readonly closed: ClosedEvent;
}

/**
 * Close a channel with a final state signed by both parties; paid out in the same transaction. Anyone may submit.
 * Also accepted while a force close is pending.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param signed - a state with `isFinal` and both signatures
 * @param opts - gas limit / nonce
 * @returns the receipt and the `Closed` event
 * @throws TrickleError `INVALID_ARGUMENT` when a signature is missing; `CHAIN_REVERTED` (`NotFinal`, `WrongSigner`,
 *   `StateExceedsDeposits`, `ChannelNotActive`, ...)
 * @example
 * ```ts
 * const { closed } = await cooperativeClose(adjudicator, { state, deviceSig, hubSig });
 * ```
 */
export async function cooperativeClose(
  target: AdjudicatorTarget,
  signed: SignedState,
  opts: TxOptions = {},
): Promise<CooperativeCloseReturnType> {
  const result = await sendTx(target.contract, 'cooperativeClose', signedArgs('cooperativeClose', signed), opts);
  const closed = eventsNamed(result.events, 'Closed')[0];
  if (closed === undefined) throw new TrickleError('INTERNAL', 'cooperativeClose emitted no Closed event');
  return { ...result, closed };
}

/** Parameters of {@link cooperativeClose}. */
export type CooperativeCloseParameters = Parameters<typeof cooperativeClose>;
