import type { Signer as EthersSigner } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { approve } from '@trickle/chain/erc20';
import { toAddressInput, toChainId, type AddressInput, type ChainIdInput } from '@trickle/protocol/input';
import { channelIdOf } from '@trickle/protocol/eip712';
import { TrickleError } from '@trickle/protocol/errors';
import type { Lock } from '@trickle/protocol/locks';
import { ETH_TOKEN, type Bytes32, type ChannelId, type ChannelParams, type SignedState } from '@trickle/protocol/types';
import type { ClientChain } from './client.js';

/**
 * The {@link ClientChain} of a device on a deployed adjudicator, sending transactions from `wallet` (an ethers
 * Signer connected to a provider, holding the device key and some ETH for gas). `chainId` may be a number (as
 * JSON-RPC tools print it) or a bigint, `adjudicator` any `0x…` literal (its EIP-55 checksum is checked).
 * @throws TrickleError `INVALID_ARGUMENT` for a chain id that is not a positive integer or a malformed address
 * @example
 * ```ts
 * const chain = adjudicatorClientChain({ wallet: new Wallet(key, provider), chainId: 31337, adjudicator: '0x…' });
 * ```
 */
export function adjudicatorClientChain(o: {
  wallet: EthersSigner;
  chainId: ChainIdInput;
  adjudicator: AddressInput;
}): ClientChain {
  const chainId = toChainId(o.chainId);
  const adj = new Adjudicator(toAddressInput(o.adjudicator, 'adjudicator'), o.wallet);
  return {
    chainId,
    adjudicator: adj.address,
    async openChannel(params: ChannelParams, deposit: bigint) {
      if (params.token !== ETH_TOKEN && deposit > 0n) await approve(o.wallet, params.token, adj.address, deposit);
      const r = await adj.open(params, deposit);
      return { deposit: r.deposit };
    },
    async deposit(params: ChannelParams, amount: bigint) {
      if (params.token !== ETH_TOKEN) await approve(o.wallet, params.token, adj.address, amount);
      const r = await adj.deposit(channelIdOf(params), amount, { token: params.token });
      return { total: r.total };
    },
    async cooperativeClose(signed: SignedState) {
      const r = await adj.cooperativeClose(signed);
      return { hash: r.hash };
    },
    async readFunding(channelId: ChannelId) {
      const c = await adj.getChannel(channelId);
      return { device: c.depositDevice, hub: c.depositHub };
    },
    async forceClose(signed: SignedState, locks?: readonly Lock[]) {
      const r = await adj.forceClose(signed, { locks });
      return { hash: r.hash, deadline: r.forceClosed.deadline };
    },
    async reveal(preimage: Bytes32) {
      const r = await adj.reveal(preimage);
      return { revealedAt: r.revealedAt };
    },
    revealedAt: (hash: Bytes32) => adj.revealedAt(hash),
    async chainTime() {
      const block = await o.wallet.provider?.getBlock('latest');
      if (!block) throw new TrickleError('INTERNAL', 'the wallet has no provider, or the node returned no block');
      return BigInt(block.timestamp);
    },
    async readChannel(channelId: ChannelId) {
      const c = await adj.getChannel(channelId);
      return { status: c.status, version: c.version, deadline: c.deadline, locksRoot: c.locksRoot };
    },
    async challenge(signed: SignedState, locks: readonly Lock[]) {
      return { hash: (await adj.challenge(signed, { locks })).hash };
    },
    async settle(channelId: ChannelId, locks: readonly Lock[]) {
      return { hash: (await adj.settle(channelId, { locks })).hash };
    },
  };
}
