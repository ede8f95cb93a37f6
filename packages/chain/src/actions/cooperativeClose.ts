import { TrickleError } from '@trickle/protocol/errors';
import type { SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ClosedEvent } from '../events.js';
import { isChainRevert } from '../errors.js';
import { sendTx } from '../internal/send.js';
import { getChannel } from './getChannel.js';
import { signedArgs } from '../internal/signed.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';

/** Result of {@link cooperativeClose}. */
export interface CooperativeCloseReturnType extends TxResult {
  /** The payouts (pushed, or credited to `owed` when a push failed: see `PayoutDeferred` events). */
  readonly closed: ClosedEvent;
}

/**
 * Close a channel with a final state signed by both parties; paid out in the same transaction. Anyone may submit.
 * Also accepted while a force close is pending: the adjudicator then refuses `cooperativeClose` (`ChannelNotOpen`,
 * status closing) and the registration is read from the chain and passed to `cooperativeCloseDisputed`.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param signed - a state with `isFinal` and both signatures
 * @param opts - gas limit / nonce
 * @returns the receipt and the `Closed` event
 * @throws TrickleError `INVALID_ARGUMENT` when a signature is missing; `CHAIN_REVERTED` (`NotFinal`, `WrongSigner`,
 *   `StateExceedsDeposits`, `ChannelNotOpen`, `LocksPending` for a state with pending locks, `StaleVersion` for a final
 *   state older than a pending force close's registration, ...)
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
  const args = signedArgs('cooperativeClose', signed);
  let result;
  try {
    result = await sendTx(target.contract, 'cooperativeClose', args, opts);
  } catch (e) {
    // A force close is pending: the adjudicator holds only the registration hash, so pass the registration back.
    if (
      !isChainRevert(e, 'ChannelNotOpen') ||
      (e.details as { namedArgs: { status?: unknown } }).namedArgs.status !== 2n
    )
      throw e;
    const c = await getChannel(target, signed.state.channelId);
    if (c.registration === undefined) throw e;
    result = await sendTx(target.contract, 'cooperativeCloseDisputed', [c.registration, ...args], opts);
  }
  const closed = eventsNamed(result.events, 'Closed')[0];
  if (closed === undefined) throw new TrickleError('INTERNAL', 'cooperativeClose emitted no Closed event');
  return { ...result, closed };
}

/** Parameters of {@link cooperativeClose}. */
export type CooperativeCloseParameters = Parameters<typeof cooperativeClose>;
