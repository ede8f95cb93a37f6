import type { Signer as EthersSigner } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { approve } from '@trickle/chain/erc20';
import { toAddressInput, toChainId, type AddressInput, type ChainIdInput } from '@trickle/protocol/input';
import { channelIdOf } from '@trickle/protocol/eip712';
import { TrickleError } from '@trickle/protocol/errors';
import type { Lock } from '@trickle/protocol/locks';
import { ETH_TOKEN, type Bytes32, type ChannelId, type ChannelParams, type SignedState } from '@trickle/protocol/types';
import type { ClientChain } from './client.js';
import { DEV_CHAIN_IDS } from '@trickle/chain/types';

/**
 * The {@link ClientChain} of a device on a deployed adjudicator, sending transactions from `wallet` (an ethers
 * Signer connected to a provider, holding the device key and some ETH for gas). `chainId` may be a number (as
 * JSON-RPC tools print it) or a bigint, `adjudicator` any `0x…` literal (its EIP-55 checksum is checked).
 *
 * `readFunding` reads the deposits `fundingConfirmations` blocks behind the head: a hub credit above the hub's deposit
 * the device knows is countersigned only once the deposit covering it is that deep, as the hub counts deposits only
 * at its own confirmed depth. A deposit still in the newest blocks may be reorganised away (or its transaction
 * replaced), leaving the device with a state above the deposits, which the adjudicator refuses to register.
 * @throws TrickleError `INVALID_ARGUMENT` for a chain id that is not a positive integer, a malformed address, or a
 *   `fundingConfirmations` that is not a non-negative integer
 * @example
 * ```ts
 * const chain = adjudicatorClientChain({ wallet: new Wallet(key, provider), chainId: 31337, adjudicator: '0x…' });
 * ```
 */
export function adjudicatorClientChain(o: {
  wallet: EthersSigner;
  chainId: ChainIdInput;
  adjudicator: AddressInput;
  /**
   * Blocks a deposit must have on top of it (the head less this many is where `readFunding` reads) before the device
   * counts it; default 2, or 0 on a development chain (chain id 31337 or 1337), as the hub's `--confirmations`. The
   * device's own deposits (`openChannel`, `topUp`) are recorded from their receipts all the same.
   */
  fundingConfirmations?: number | undefined;
}): ClientChain {
  const chainId = toChainId(o.chainId);
  const adj = new Adjudicator(toAddressInput(o.adjudicator, 'adjudicator'), o.wallet);
  const confirmations = o.fundingConfirmations ?? (DEV_CHAIN_IDS.has(chainId) ? 0 : 2);
  if (!Number.isSafeInteger(confirmations) || confirmations < 0)
    throw new TrickleError('INVALID_ARGUMENT', 'fundingConfirmations must be a non-negative integer', {
      details: { fundingConfirmations: o.fundingConfirmations },
    });
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
      let blockTag: number | undefined;
      if (confirmations > 0) {
        const provider = o.wallet.provider;
        if (!provider) throw new TrickleError('INTERNAL', 'the wallet has no provider');
        blockTag = (await provider.getBlockNumber()) - confirmations;
        // A chain not yet that long holds no deposit that deep.
        if (blockTag < 0) return { device: 0n, hub: 0n };
      }
      const c = await adj.getChannel(channelId, { blockTag });
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
