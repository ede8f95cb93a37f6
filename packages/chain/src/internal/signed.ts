import { TrickleError } from '@trickle/protocol/errors';
import { isZeroState } from '@trickle/protocol/channel';
import type { SignedState, State } from '@trickle/protocol/types';
import type { AdjudicatorTarget } from '../types.js';

/** The zero state (version 0, both counters 0, round 0) is the one state the adjudicator accepts unsigned. */
/** The ABI arguments (state, deviceSig, hubSig) of a signed state; both signatures required unless `allowZero`. */
export function signedArgs(op: string, signed: SignedState, allowZero = false): [State, string, string] {
  const { state, deviceSig, hubSig } = signed;
  if (deviceSig === undefined || hubSig === undefined) {
    if (!(allowZero && isZeroState(state))) {
      throw new TrickleError('INVALID_ARGUMENT', `${op} needs the state signed by both the device and the hub`, {
        details: {
          channelId: state.channelId,
          version: state.version,
          missing: deviceSig === undefined ? 'device' : 'hub',
        },
      });
    }
  }
  return [stateArg(state), deviceSig ?? '0x', hubSig ?? '0x'];
}

/**
 * The runner's own signature is left out (sent empty) when the runner is that party: the adjudicator takes the
 * transaction itself as its consent, which saves a signature recovery and its calldata.
 */
export async function withoutOwnSignature(
  target: AdjudicatorTarget,
  args: [State, string, string],
  parties: { readonly device: string; readonly hub: string },
): Promise<[State, string, string]> {
  const runner = target.contract.runner as { getAddress?: () => Promise<string> } | null;
  if (runner?.getAddress === undefined) return args;
  const me = (await runner.getAddress()).toLowerCase();
  const [state, deviceSig, hubSig] = args;
  if (me === parties.device.toLowerCase()) return [state, '0x', hubSig];
  if (me === parties.hub.toLowerCase()) return [state, deviceSig, '0x'];
  return args;
}

/** A protocol State as the ABI tuple object (exactly the Solidity struct's fields). */
export function stateArg(s: State): State {
  return {
    channelId: s.channelId,
    version: s.version,
    paidByDevice: s.paidByDevice,
    paidByHub: s.paidByHub,
    round: s.round,
    locksRoot: s.locksRoot,
    lockedByDevice: s.lockedByDevice,
    lockedByHub: s.lockedByHub,
    isFinal: s.isFinal,
  };
}
