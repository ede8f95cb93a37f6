import type { Adjudicator } from '@trickle/chain/adjudicator';
import type { DeviceChannelRecord } from '@trickle/client/store';
import { deployAdjudicator } from '@trickle/chain/deploy';
import type { LocalChain } from '@trickle/devchain/localChain';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import { ETH_TOKEN, NO_LOCKS, type Bytes32, type ChannelParams, type SignedState } from '@trickle/protocol/types';

/**
 * A fresh adjudicator on `chain` (deployed by account 0; or `o.adjudicator`) and an ETH channel on it between accounts
 * `device` and `hub` (10,000 deposited by the device, a one-hour challenge, `salt` repeated to 32 bytes), for a
 * watchtower to watch; `sign(version, paidByDevice)` makes a state of it that both signed, and `record(latest)` the
 * device's record holding it (as a device's store keeps it, for a store a watchtower or the CLI reads).
 */
export async function openWatchedChannel(
  chain: Pick<LocalChain, 'chainId' | 'wallet' | 'addresses' | 'accounts'>,
  o: { device: number; hub: number; salt: string; adjudicator?: Adjudicator },
) {
  const adj = o.adjudicator ?? (await deployAdjudicator(chain.wallet(0)));
  const params: ChannelParams = {
    chainId: chain.chainId,
    adjudicator: adj.address,
    device: chain.addresses[o.device]!,
    hub: chain.addresses[o.hub]!,
    token: ETH_TOKEN,
    challengeDuration: 3_600n,
    salt: `0x${o.salt.repeat(32)}` as Bytes32,
  };
  const { channelId } = await adj.connect(chain.wallet(o.device)).open(params, 10_000n);
  const ctx = channelContext(params, { device: 10_000n, hub: 0n });
  const sign = (version: bigint, paidByDevice: bigint): SignedState => {
    const state = { channelId, version, paidByDevice, paidByHub: 0n, round: 0n, ...NO_LOCKS, isFinal: false };
    const digest = stateDigest(ctx.separator, state);
    return {
      state,
      deviceSig: signatureToHex(nobleSigner(chain.accounts[o.device]!).signDigest(digest)),
      hubSig: signatureToHex(nobleSigner(chain.accounts[o.hub]!).signDigest(digest)),
    };
  };
  const record = (latest: SignedState): DeviceChannelRecord => ({
    params,
    channelId,
    funding: { device: 10_000n, hub: 0n },
    latest,
    signedVersion: latest.state.version,
  });
  return { adj, params, channelId, sign, record };
}
