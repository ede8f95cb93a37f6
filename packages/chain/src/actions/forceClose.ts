import { TrickleError } from '@trickle/protocol/errors';
import type { SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ForceClosedEvent } from '../events.js';
import { sendTx } from '../internal/send.js';
import { signedArgs } from '../internal/signed.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link forceClose}. */
export interface ForceCloseReturnType extends TxResult {
  /** The registered state's version, counters and the deadline. */
  readonly forceClosed: ForceClosedEvent;
}

/**
 * Start a unilateral close (the runner must be the device or the hub): registers a state signed by both, or the
 * zero state (version 0, counters 0, round 0), which needs no signatures. The counterparty (or a watchtower) may
 * challenge with a newer state until `deadline`; from then on anyone can `settle`.
 * @param target - the adjudicator, connected to a participant's signer
 * @param signed - the state and its signatures (none needed for the zero state)
 * @param opts - gas limit / nonce
 * @returns the receipt and the `ForceClosed` event
 * @throws TrickleError `INVALID_ARGUMENT` when a non-zero state lacks a signature; `CHAIN_REVERTED` (`ChannelNotOpen`,
 *   `NotParticipant`, `WrongSigner`, `StateExceedsDeposits`, ...)
 * @example
 * ```ts
 * const { forceClosed } = await forceClose(adjudicator.connect(device), latest);
 * console.log('settle after', forceClosed.deadline);
 * ```
 */
export async function forceClose(
  target: AdjudicatorTarget,
  signed: SignedState,
  opts: TxOptions = {},
): Promise<ForceCloseReturnType> {
  const result = await sendTx(target.contract, 'forceClose', signedArgs('forceClose', signed, true), opts);
  const forceClosed = eventsNamed(result.events, 'ForceClosed')[0];
  if (forceClosed === undefined) throw new TrickleError('INTERNAL', 'forceClose emitted no ForceClosed event');
  return { ...result, forceClosed };
}

/** Parameters of {@link forceClose}. */
export type ForceCloseParameters = Parameters<typeof forceClose>;
