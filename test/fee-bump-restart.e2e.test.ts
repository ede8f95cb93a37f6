import { join } from 'node:path';
import { Wallet, toQuantity, type JsonRpcApiProvider } from 'ethers';
import { describe, expect, it } from 'vitest';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { decodeStuckCopies, type SentCopy } from '@trickle/chain/types';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { hubStuckCopies } from '@trickle/hub/stuck-copies';
import { feeSpikeWorld, repricingHubChain, staleForceClose, until } from './helpers/fee-spike.js';

/**
 * The hub's challenge of a stale force close gives up at its fee cap under a fee spike (its last copy left in the
 * mempool); the hub restarts on the same store with a provider of its own (nothing remembered in memory) and a higher
 * cap: its challenge replaces the stuck copy at its nonce instead of colliding with it, and lands before the deadline.
 */
describe("the hub's challenge given up at its fee cap, then the hub restarted", () => {
  const world = feeSpikeWorld();

  it('replaces the stuck copy (same nonce, fees 12.5% above) after the restart, kept in the hub store', async () => {
    const w = world();
    const rpc = (method: string, params: unknown[] = []) => w.chain.provider.send(method, params);
    /** A provider of its own on the same chain, as a new process has. */
    const freshProvider = () =>
      new (w.chain.provider.constructor as new (eip1193: unknown, chainId: bigint) => JsonRpcApiProvider)(
        w.chain.eip1193,
        w.chain.chainId,
      );
    const storePath = join(w.dir, 'hub-stuck');
    const fee = (await w.chain.provider.getFeeData()).maxFeePerGas!;
    const cap = (fee * 3n) / 2n;
    const hubChain = (provider: JsonRpcApiProvider, maxFeePerGas: bigint, copies: SentCopy[], store: () => never) =>
      repricingHubChain(w, provider, new Wallet(w.hubKey, provider), {
        maxFeePerGas,
        onSend: (c) => copies.push(c),
        stuckCopies: hubStuckCopies(store),
      });

    const p1 = freshProvider();
    const store1 = openLmdbStore({ path: storePath });
    const copies: SentCopy[] = [];
    const first = await w.startHub({
      more: { store: store1, chain: hubChain(p1, cap, copies, () => store1 as never) },
    });
    // The device force-closes with a stale state; from here on blocks are mined by hand.
    const { channelId, latest, deadline } = await staleForceClose(w, 2);

    // The hub's challenge sticks below the spike, is re-sent at the cap, and given up there.
    await until(() => copies.length === 1);
    const hubAddress = w.chain.addresses[1]!;
    const nonce = await w.chain.provider.getTransactionCount(hubAddress, 'latest');
    await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(copies[0]!.maxFeePerGas * 4n)]);
    await rpc('evm_mine');
    await rpc('evm_mine');
    await until(() => copies.length === 2);
    expect(copies[1]!.maxFeePerGas).toBe(cap);
    await rpc('evm_mine');
    await rpc('evm_mine');
    await until(async () => (await store1.getMeta(`stuck-copies/${hubAddress}`)) !== undefined);
    // The copy is saved as soon as it is sent, so the give-up at the cap may still be a block away: close() waits for
    // the challenge, which gives up only when a block shows the next copy would pass the cap. Mine (at most 4 more: the
    // base fee, falling 12.5% a block, stays above the cap copy's fee for 7) until the hub has closed.
    let closed = false;
    const closing = first.close().then(() => (closed = true));
    for (let i = 0; i < 4 && !closed; i++) {
      await new Promise((r) => setTimeout(r, 200));
      if (!closed) await rpc('evm_mine');
    }
    await closing;
    p1.destroy();

    // Restarted: a new store object on the same path, a provider of its own, a higher cap.
    const p2 = freshProvider();
    const store2 = openLmdbStore({ path: storePath });
    const retry: SentCopy[] = [];
    await w.startHub({ more: { store: store2, chain: hubChain(p2, fee * 100n, retry, () => store2 as never) } });
    await until(() => retry.length === 1);
    expect(retry[0]!.nonce).toBe(nonce);
    expect(retry[0]!.maxFeePerGas * 8n).toBeGreaterThanOrEqual(cap * 9n);
    expect(retry[0]!.maxPriorityFeePerGas * 8n).toBeGreaterThanOrEqual(copies[1]!.maxPriorityFeePerGas * 9n);
    await rpc('evm_mine');
    const adj = new Adjudicator(w.adjudicator, w.chain.provider);
    await until(async () => (await adj.getChannel(channelId)).version === latest);
    const receipt = await w.chain.provider.getTransactionReceipt(retry[0]!.hash);
    expect(receipt?.status).toBe(1);
    expect(BigInt((await w.chain.provider.getBlock(receipt!.blockNumber))!.timestamp)).toBeLessThan(deadline);
    for (const c of copies) expect(await w.chain.provider.getTransactionReceipt(c.hash)).toBeNull();
    expect(await w.chain.provider.getTransactionCount(hubAddress, 'latest')).toBe(nonce + 1);
  });
});

/**
 * The hub is closed while its challenge of a stale force close waits unmined (blocks mined by hand, none mined): the
 * re-pricing gives up at once instead of holding the shutdown until the challenge's deadline, nothing is sent after
 * the close, and the copy in the mempool is in the store for the next process to replace.
 */
describe('the hub closed while its challenge is being re-priced', () => {
  const world = feeSpikeWorld();

  it('stops re-pricing and closes; the stuck copy is kept in the store', async () => {
    const w = world();
    const storePath = join(w.dir, 'hub-closing');
    const store = openLmdbStore({ path: storePath });
    const fee = (await w.chain.provider.getFeeData()).maxFeePerGas!;
    const copies: SentCopy[] = [];
    const hub = await w.startHub({
      more: {
        store,
        chain: repricingHubChain(w, w.chain.provider, new Wallet(w.hubKey, w.chain.provider), {
          maxFeePerGas: fee * 100n,
          onSend: (c) => copies.push(c),
          stuckCopies: hubStuckCopies(() => store as never),
        }),
      },
    });
    await staleForceClose(w, 2);
    await until(() => copies.length === 1);
    await hub.close(); // hangs (until the test's timeout) while the challenge is re-priced to its deadline
    const rpc = (method: string) => w.chain.provider.send(method, []);
    for (let i = 0; i < 4; i++) await rpc('evm_mine'); // would make a re-priced copy due every 2 blocks
    await new Promise((r) => setTimeout(r, 200));
    expect(copies).toHaveLength(1);
    const reopened = openLmdbStore({ path: storePath });
    try {
      const saved = await reopened.getMeta(`stuck-copies/${w.chain.addresses[1]!}`);
      expect(decodeStuckCopies(saved!)).toEqual([
        {
          nonce: copies[0]!.nonce,
          maxFeePerGas: copies[0]!.maxFeePerGas,
          maxPriorityFeePerGas: copies[0]!.maxPriorityFeePerGas,
        },
      ]);
    } finally {
      await reopened.close();
    }
  });
});
