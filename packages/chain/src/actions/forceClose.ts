import { TrickleError } from '@trickle/protocol/errors';
import type { Lock } from '@trickle/protocol/locks';
import type { SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ForceClosedEvent } from '../events.js';
import { locksArg } from '../internal/locks.js';
import { sendTx } from '../internal/send.js';
import { signedArgs, withoutOwnSignature } from '../internal/signed.js';
import type { AdjudicatorTarget, TxOptions, TxResult } from '../types.js';
import { getChannel } from './getChannel.js';

/** Options of {@link forceClose}. */
export interface ForceCloseOptions extends TxOptions {
  /** The state's pending locks in committed order (required when its `locksRoot` is not zero). */
  readonly locks?: readonly Lock[] | undefined;
  /** Send the runner's own signature too (checked on-chain like the other); by default it is left out. */
  readonly sendOwnSignature?: boolean | undefined;
}

/** Result of {@link forceClose}. */
export interface ForceCloseReturnType extends TxResult {
  /** The registration (version, deadline, pre-lock payouts, lock root). */
  readonly forceClosed: ForceClosedEvent;
}

/**
 * Start a unilateral close (the runner must be the device or the hub): registers a state signed by both, or the
 * zero state (version 0, counters 0, round 0, no locks), which needs no signatures. The runner's own signature is
 * not sent (the transaction is its consent). The counterparty (or a watchtower) may challenge with a newer state
 * until `deadline`; from then on anyone can `settle`.
 * @param target - the adjudicator, connected to a participant's signer
 * @param signed - the state and its signatures (none needed for the zero state)
 * @param opts - the state's locks, gas limit / nonce
 * @returns the receipt and the `ForceClosed` event
 * @throws TrickleError `INVALID_ARGUMENT` when a non-zero state lacks a signature; `CHAIN_REVERTED` (`ChannelNotOpen`,
 *   `NotParticipant`, `WrongSigner`, `StateExceedsDeposits`, `WrongLocks`, ...)
 * @example
 * ```ts
 * const { forceClosed } = await forceClose(adjudicator.connect(device), latest);
 * console.log('settle after', forceClosed.deadline);
 * ```
 */
export async function forceClose(target: AdjudicatorTarget, signed: SignedState, opts: ForceCloseOptions = {}): Promise<ForceCloseReturnType> {
  let [state, deviceSig, hubSig] = signedArgs('forceClose', signed, true);
  if (opts.sendOwnSignature !== true && deviceSig !== '0x' && hubSig !== '0x') {
    const c = await getChannel(target, state.channelId);
    if (c.status === 'open') [state, deviceSig, hubSig] = await withoutOwnSignature(target, [state, deviceSig, hubSig], c);
  }
  const result =
    opts.locks === undefined || opts.locks.length === 0
      ? await sendTx(target.contract, 'forceClose', [state, deviceSig, hubSig], opts)
      : await sendTx(target.contract, 'forceCloseWithLocks', [state, locksArg(opts.locks), deviceSig, hubSig], opts);
  const forceClosed = eventsNamed(result.events, 'ForceClosed')[0];
  if (forceClosed === undefined) throw new TrickleError('INTERNAL', 'forceClose emitted no ForceClosed event');
  return { ...result, forceClosed };
}

/** Parameters of {@link forceClose}. */
export type ForceCloseParameters = Parameters<typeof forceClose>;
