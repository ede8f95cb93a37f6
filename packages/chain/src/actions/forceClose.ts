import { TrickleError } from '@trickle/protocol/errors';
import { fromHex, toHex } from '@trickle/protocol/hex';
import type { Lock } from '@trickle/protocol/locks';
import { SECP256K1_N } from '@trickle/protocol/signer';
import { isZeroState } from '@trickle/protocol/channel';
import type { Bytes32, SignatureHex, SignedState } from '@trickle/protocol/types';
import { eventsNamed, type ForceClosedEvent } from '../events.js';
import { locksArg, registrationOf } from '../internal/locks.js';
import { sendTx } from '../internal/send.js';
import { stateArg } from '../internal/signed.js';
import type { AdjudicatorTarget, Registration, TxOptions, TxResult } from '../types.js';
import { getChannel } from './getChannel.js';

/** Options of {@link forceClose}. */
export interface ForceCloseOptions extends TxOptions {
  /** The state's pending locks in committed order (required when its `locksRoot` is not zero). */
  readonly locks?: readonly Lock[] | undefined;
}

/** Result of {@link forceClose}. */
export interface ForceCloseReturnType extends TxResult {
  /** The event (version, deadline, pre-lock payouts, lock root). */
  readonly forceClosed: ForceClosedEvent;
  /** The full registration, as `challenge` and `settle` take it back. */
  readonly registration: Registration;
}

const ZERO_WORD = `0x${'00'.repeat(32)}` as Bytes32;

/**
 * A 65-byte r ‖ s ‖ v signature in EIP-2098 compact form (r, vs): the top bit of vs is v − 27. Only low-s
 * signatures have a compact form (the adjudicator's ECDSA refuses high s anyway).
 * @throws TrickleError `INVALID_ARGUMENT` when it is not 65 bytes with v 27 or 28 and s ≤ n/2
 */
export function compactSignature(sig: SignatureHex): [Bytes32, Bytes32] {
  const b = fromHex(sig);
  const v = b[64];
  if (b.length !== 65 || (v !== 27 && v !== 28))
    throw new TrickleError('INVALID_ARGUMENT', 'expected a 65-byte signature with v 27 or 28');
  if (BigInt(toHex(b.subarray(32, 64))) > SECP256K1_N / 2n)
    throw new TrickleError('INVALID_ARGUMENT', 'a high-s signature has no compact form');
  const vs = b.slice(32, 64);
  if (v === 28) vs[0]! |= 0x80;
  return [toHex(b.subarray(0, 32)) as string as Bytes32, toHex(vs) as string as Bytes32];
}

/**
 * Start a unilateral close (the runner must be the device or the hub): registers a state signed by the other party,
 * or the zero state (version 0, counters 0, round 0, no locks), which needs no signature. The runner's own consent is
 * the transaction, so only the counterparty's signature is sent (compact). The counterparty (or a watchtower) may
 * challenge with a newer state until `deadline`; from then on anyone can `settle`.
 * @param target - the adjudicator, connected to a participant's signer
 * @param signed - the state and its signatures (the counterparty's is needed unless it is the zero state)
 * @param opts - the state's locks, gas limit / nonce
 * @returns the receipt, the `ForceClosed` event and the registration
 * @throws TrickleError `INVALID_ARGUMENT` when the counterparty's signature is missing; `CHAIN_REVERTED`
 *   (`ChannelNotOpen`, `NotParticipant`, `WrongSigner`, `StateExceedsDeposits`, `WrongLocks`, ...)
 * @example
 * ```ts
 * const { forceClosed } = await forceClose(adjudicator.connect(device), latest);
 * console.log('settle after', forceClosed.deadline);
 * ```
 */
export async function forceClose(
  target: AdjudicatorTarget,
  signed: SignedState,
  opts: ForceCloseOptions = {},
): Promise<ForceCloseReturnType> {
  const { state } = signed;
  const c = await getChannel(target, state.channelId);
  const runner = target.contract.runner as { getAddress?: () => Promise<string> } | null;
  const me = runner?.getAddress === undefined ? undefined : (await runner.getAddress()).toLowerCase();
  const theirs = me === c.hub.toLowerCase() ? signed.deviceSig : signed.hubSig;
  let sig: [Bytes32, Bytes32] = [ZERO_WORD, ZERO_WORD];
  if (theirs !== undefined) sig = compactSignature(theirs);
  else if (!isZeroState(state)) {
    throw new TrickleError('INVALID_ARGUMENT', 'forceClose needs the state signed by the other party', {
      details: {
        channelId: state.channelId,
        version: state.version,
        missing: me === c.hub.toLowerCase() ? 'device' : 'hub',
      },
    });
  }
  const result =
    opts.locks === undefined || opts.locks.length === 0
      ? await sendTx(target.contract, 'forceClose', [stateArg(state), ...sig], opts)
      : await sendTx(target.contract, 'forceCloseWithLocks', [stateArg(state), locksArg(opts.locks), ...sig], opts);
  const forceClosed = eventsNamed(result.events, 'ForceClosed')[0];
  if (forceClosed === undefined) throw new TrickleError('INTERNAL', 'forceClose emitted no ForceClosed event');
  return { ...result, forceClosed, registration: registrationOf(forceClosed, c.device, c.depositDevice) };
}

/** Parameters of {@link forceClose}. */
export type ForceCloseParameters = Parameters<typeof forceClose>;
