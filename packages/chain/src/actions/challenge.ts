import { TrickleError } from '@trickle/protocol/errors';
import type { SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ChallengedEvent } from '../events.js';
import { sendTx } from '../internal/send.js';
import { signedArgs } from '../internal/signed.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link challenge}. */
export interface ChallengeReturnType extends TxResult {
  readonly challenged: ChallengedEvent;
}

/**
 * Replace the registered state of a pending force close with a strictly newer one signed by both, before the
 * deadline (which does not move). Anyone may submit, e.g. a watchtower.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param signed - the newer state with both signatures
 * @param opts - gas limit / nonce
 * @returns the receipt and the `Challenged` event
 * @throws TrickleError `INVALID_ARGUMENT` when a signature is missing; `CHAIN_REVERTED` (`StaleVersion`,
 *   `ChallengePeriodOver`, `ChannelNotClosing`, `WrongSigner`, ...)
 * @example
 * ```ts
 * await challenge(adjudicator, newest);
 * ```
 */
export async function challenge(
  target: AdjudicatorTarget,
  signed: SignedState,
  opts: TxOptions = {},
): Promise<ChallengeReturnType> {
  const result = await sendTx(target.contract, 'challenge', signedArgs('challenge', signed), opts);
  const challenged = eventsNamed(result.events, 'Challenged')[0];
  if (challenged === undefined) throw new TrickleError('INTERNAL', 'challenge emitted no Challenged event');
  return { ...result, challenged };
}

/** Parameters of {@link challenge}. */
export type ChallengeParameters = Parameters<typeof challenge>;
