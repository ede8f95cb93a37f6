// A hub channel record for the hub's unit tests: ETH, chain id 31337, a 3,600 s challenge period, the zero state
// both unsigned unless `state` says otherwise. Plain JS (typed by hub-channel.d.mts) so package tests import it.
import { channelIdOf } from '@trickle/protocol/eip712';
import { ETH_TOKEN, ZERO_ROOT } from '@trickle/protocol/types';

/**
 * @param o.hub, o.device, o.adjudicator - addresses
 * @param o.salt - one byte as two hex digits, repeated to 32 bytes (channels of one device differ by it)
 * @param o.funding - default 1,000 each
 * @param o.state - fields of the latest state over the zero state
 */
export function hubChannelRecord(o) {
  const params = {
    chainId: 31337n,
    adjudicator: o.adjudicator,
    device: o.device,
    hub: o.hub,
    token: ETH_TOKEN,
    challengeDuration: 3600n,
    salt: `0x${o.salt.repeat(32)}`,
  };
  const channelId = channelIdOf(params);
  const state = {
    channelId,
    version: 0n,
    paidByDevice: 0n,
    paidByHub: 0n,
    round: 0n,
    locksRoot: ZERO_ROOT,
    lockedByDevice: 0n,
    lockedByHub: 0n,
    isFinal: false,
    ...o.state,
  };
  return {
    params,
    channelId,
    funding: o.funding ?? { device: 1000n, hub: 1000n },
    status: 'open',
    latest: { state },
    hubSignedVersion: state.version,
  };
}
