import type { Signer as EthersSigner } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { approve } from '@trickle/chain/erc20';
import { ETH_TOKEN, type Address, type ChannelId, type ChannelParams, type SignedState } from '@trickle/protocol/types';
import type { ClientChain } from './client.js';

/**
 * The {@link ClientChain} of a device on a deployed adjudicator, sending transactions from `wallet` (an ethers
 * Signer connected to a provider, holding the device key and some ETH for gas).
 * @example
 * ```ts
 * const chain = adjudicatorClientChain({ wallet: new Wallet(key, provider), chainId: 31337n, adjudicator });
 * ```
 */
export function adjudicatorClientChain(o: { wallet: EthersSigner; chainId: bigint; adjudicator: Address }): ClientChain {
  const adj = new Adjudicator(o.adjudicator, o.wallet);
  return {
    chainId: o.chainId,
    adjudicator: adj.address,
    async openChannel(params: ChannelParams, deposit: bigint) {
      if (params.token !== ETH_TOKEN && deposit > 0n) await approve(o.wallet, params.token, adj.address, deposit);
      const r = await adj.open(params, deposit);
      return { deposit: r.deposit };
    },
    async cooperativeClose(signed: SignedState) {
      const r = await adj.cooperativeClose(signed);
      return { hash: r.hash };
    },
    async readFunding(channelId: ChannelId) {
      const c = await adj.getChannel(channelId);
      return { device: c.depositDevice, hub: c.depositHub };
    },
    async forceClose(signed: SignedState) {
      const r = await adj.forceClose(signed);
      return { hash: r.hash, deadline: r.forceClosed.deadline };
    },
  };
}
