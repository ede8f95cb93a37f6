import { join } from 'node:path';
import { toQuantity } from 'ethers';
import { describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { SentCopy } from '@trickle/chain/types';
import { feeSpikeWorld, repricingHubChain, staleForceClose, until } from './helpers/fee-spike.js';

/**
 * A fee spike on a live chain, made on the dev chain: automine off and the next block's base fee raised above the
 * hub's challenge's maxFeePerGas. The challenge of a stale force close sits in the mempool; the hub sends it again
 * with higher fees (replace-by-fee) and the newer state is registered before the deadline.
 */
describe("the hub's challenge stuck below a fee spike", () => {
  const world = feeSpikeWorld();

  it('is re-sent with the same nonce and higher fees and lands before the deadline; the first copy is never mined', async () => {
    const w = world();
    const rpc = (method: string, params: unknown[] = []) => w.chain.provider.send(method, params);
    const copies: SentCopy[] = [];
    await w.startHub({
      storePath: join(w.dir, 'hub-fee-bump'),
      more: {
        chain: repricingHubChain(w, w.chain.provider, w.chain.wallet(1), { onSend: (c) => copies.push(c) }),
      },
    });
    // The device force-closes with a stale state; from here on blocks are mined by hand.
    const { channelId, stale, latest, deadline } = await staleForceClose(w, 2);

    // The hub answers; its challenge is priced below the next block's base fee.
    await until(() => copies.length === 1);
    const hubAddress = w.chain.addresses[1]!;
    const nonce = await w.chain.provider.getTransactionCount(hubAddress, 'latest');
    await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(copies[0]!.maxFeePerGas * 4n)]);
    await rpc('evm_mine');
    await rpc('evm_mine');
    const adj = new Adjudicator(w.adjudicator, w.chain.provider);
    expect((await adj.getChannel(channelId)).version).toBe(stale.state.version); // stuck for 2 blocks

    await until(() => copies.length === 2);
    await rpc('evm_mine');
    const c = await adj.getChannel(channelId);
    expect(c.version).toBe(latest);
    const [first, second] = copies as [SentCopy, SentCopy];
    expect(second.nonce).toBe(first.nonce);
    expect(first.nonce).toBe(nonce);
    expect(second.maxFeePerGas).toBeGreaterThan(first.maxFeePerGas);
    expect(second.maxPriorityFeePerGas).toBeGreaterThan(first.maxPriorityFeePerGas);
    const receipt = await w.chain.provider.getTransactionReceipt(second.hash);
    expect(receipt?.status).toBe(1);
    const block = await w.chain.provider.getBlock(receipt!.blockNumber);
    expect(BigInt(block!.timestamp)).toBeLessThan(deadline);
    await rpc('evm_mine');
    expect(await w.chain.provider.getTransactionReceipt(first.hash)).toBeNull();
    expect(await w.chain.provider.getTransactionCount(hubAddress, 'latest')).toBe(nonce + 1);
  });
});
