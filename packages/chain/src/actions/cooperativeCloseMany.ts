import type { SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ClosedEvent } from '../events.js';
import { sendTx } from '../internal/send.js';
import { signedArgs } from '../internal/signed.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link cooperativeCloseMany}. */
export interface CooperativeCloseManyReturnType extends TxResult {
  /** One event per channel this call closed; entries whose channel was already closed are skipped. */
  readonly closed: readonly ClosedEvent[];
}

/**
 * Close several channels cooperatively in one transaction. Entries whose channel is already closed are skipped;
 * any other invalid entry (bad signature, not final, unknown channel, ...) reverts the whole batch.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param signed - final states with both signatures
 * @param opts - gas limit / nonce
 * @returns the receipt and the `Closed` events
 * @throws TrickleError `INVALID_ARGUMENT` when a signature is missing; `CHAIN_REVERTED` for an invalid entry
 * @example
 * ```ts
 * const { closed } = await cooperativeCloseMany(adjudicator.connect(hub), finals);
 * ```
 */
export async function cooperativeCloseMany(
  target: AdjudicatorTarget,
  signed: readonly SignedState[],
  opts: TxOptions = {},
): Promise<CooperativeCloseManyReturnType> {
  const entries = signed.map((s) => {
    const [state, deviceSig, hubSig] = signedArgs('cooperativeCloseMany', s);
    return { state, deviceSig, hubSig };
  });
  const result = await sendTx(target.contract, 'cooperativeCloseMany', [entries], opts);
  return { ...result, closed: eventsNamed(result.events, 'Closed') };
}

/** Parameters of {@link cooperativeCloseMany}. */
export type CooperativeCloseManyParameters = Parameters<typeof cooperativeCloseMany>;
