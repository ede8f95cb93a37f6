import { TrickleError } from '@trickle/protocol/errors';
import type { Lock } from '@trickle/protocol/locks';
import type { SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ChallengedEvent } from '../events.js';
import { locksArg, NO_REGISTRATION, registrationOf } from '../internal/locks.js';
import { sendTx } from '../internal/send.js';
import { signedArgs, withoutOwnSignature } from '../internal/signed.js';
import type { AdjudicatorTarget, Registration, TxOptions, TxResult } from '../types.js';
import { getChannel } from './getChannel.js';

/** Options of {@link challenge}. */
export interface ChallengeOptions extends TxOptions {
  /** The newer state's pending locks in committed order (required when its `locksRoot` is not zero). */
  readonly locks?: readonly Lock[] | undefined;
  /** When the runner is a participant, send its own signature too (by default it is left out). */
  readonly sendOwnSignature?: boolean | undefined;
}

/** Result of {@link challenge}. */
export interface ChallengeReturnType extends TxResult {
  readonly challenged: ChallengedEvent;
  /** The new registration, as `settle` takes it back. */
  readonly registration: Registration;
}

/**
 * Replace the registered state of a pending force close with a strictly newer one signed by both, before the
 * deadline (which does not move). Anyone may submit, e.g. a watchtower. The current registration is read from the
 * chain ({@link getChannel}) and passed back to the adjudicator.
 * @param target - the adjudicator, connected to the submitter's signer
 * @param signed - the newer state with both signatures
 * @param opts - the state's locks, gas limit / nonce, replace-by-fee (whose deadline defaults to the registration's)
 * @returns the receipt and the `Challenged` event
 * @throws TrickleError `INVALID_ARGUMENT` when a signature is missing; `CHAIN_REVERTED` (`StaleVersion`,
 *   `ChallengePeriodOver`, `ChannelNotClosing`, `WrongSigner`, `WrongLocks`, ...)
 * @example
 * ```ts
 * await challenge(adjudicator, newest);
 * ```
 */
export async function challenge(
  target: AdjudicatorTarget,
  signed: SignedState,
  opts: ChallengeOptions = {},
): Promise<ChallengeReturnType> {
  let args = signedArgs('challenge', signed);
  const c = await getChannel(target, signed.state.channelId);
  const reg = c.registration ?? NO_REGISTRATION;
  if (c.registration !== undefined && opts.sendOwnSignature !== true)
    args = await withoutOwnSignature(target, args, c.registration);
  const [state, deviceSig, hubSig] = args;
  // A replace-by-fee send stops re-pricing once the challenge period is over: no copy could land after it.
  if (opts.replace !== undefined && opts.replace.deadline === undefined && c.status === 'closing')
    opts = { ...opts, replace: { ...opts.replace, deadline: c.deadline } };
  const result =
    opts.locks === undefined || opts.locks.length === 0
      ? await sendTx(target.contract, 'challenge', [reg, state, deviceSig, hubSig], opts)
      : await sendTx(
          target.contract,
          'challengeWithLocks',
          [reg, state, locksArg(opts.locks), deviceSig, hubSig],
          opts,
        );
  const challenged = eventsNamed(result.events, 'Challenged')[0];
  if (challenged === undefined) throw new TrickleError('INTERNAL', 'challenge emitted no Challenged event');
  return { ...result, challenged, registration: registrationOf(challenged, reg.device, reg.depositDevice) };
}

/** Parameters of {@link challenge}. */
export type ChallengeParameters = Parameters<typeof challenge>;
