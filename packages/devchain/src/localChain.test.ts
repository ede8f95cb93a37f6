import { Wallet } from 'ethers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import { ETH_TOKEN as ETH } from '@trickle/protocol/types';
import { localAccounts, startLocalChain, type LocalChain } from './localChain.js';

let chain: LocalChain;
let startupMs = 0;
beforeAll(async () => {
  const t0 = performance.now();
  chain = await startLocalChain({ accounts: 3, chainId: 1337 });
  startupMs = performance.now() - t0;
});
afterAll(() => chain.close());

describe('startLocalChain', () => {
  it('starts fast with the requested chain id and funded deterministic accounts', async () => {
    expect(startupMs).toBeLessThan(5_000);
    expect(chain.chainId).toBe(1337n);
    expect(await chain.provider.send('eth_chainId', [])).toBe('0x539');
    expect(chain.accounts).toEqual(localAccounts(3).privateKeys);
    expect(chain.addresses).toEqual(chain.accounts.map((k) => new Wallet(k).address));
    for (const a of chain.addresses) expect(await chain.provider.getBalance(a)).toBe(10_000n * 10n ** 18n);
  });

  it('mines each transaction at once (automine) from a wallet', async () => {
    const before = await chain.provider.getBlockNumber();
    const tx = await chain.wallet(0).sendTransaction({ to: chain.addresses[1], value: 1n });
    const receipt = await tx.wait();
    expect(receipt?.blockNumber).toBe(before + 1);
  });

  it('travels in time and mines blocks', async () => {
    const t0 = await chain.latestTimestamp();
    const t1 = await chain.increaseTime(3600);
    expect(t1 - t0 >= 3600n).toBe(true);
    await chain.setNextBlockTimestamp(t1 + 100n);
    await chain.mine();
    expect(await chain.latestTimestamp()).toBe(t1 + 100n);
    const n = await chain.provider.getBlockNumber();
    await chain.mine(5);
    expect(await chain.provider.getBlockNumber()).toBe(n + 5);
  });

  it('snapshots and reverts, once per snapshot', async () => {
    const snap = await chain.snapshot();
    const n = await chain.provider.getBlockNumber();
    await chain.mine(3);
    await chain.revert(snap);
    expect(await chain.provider.getBlockNumber()).toBe(n);
    await expect(chain.revert(snap)).rejects.toSatisfy((e) => isTrickleError(e, 'INVALID_ARGUMENT'));
  });

  it('takes the chain id as a bigint too', async () => {
    const other = await startLocalChain({ accounts: 1, chainId: 4242n });
    try {
      expect(other.chainId).toBe(4242n);
      expect(await other.provider.send('eth_chainId', [])).toBe('0x1092');
    } finally {
      await other.close();
    }
  });

  it('validates its options', async () => {
    await expect(startLocalChain({ accounts: 0 })).rejects.toSatisfy((e) => isTrickleError(e, 'INVALID_ARGUMENT'));
    await expect(startLocalChain({ chainId: 0n })).rejects.toSatisfy((e) => isTrickleError(e, 'INVALID_ARGUMENT'));
    await expect(startLocalChain({ chainId: 2n ** 60n })).rejects.toSatisfy((e) =>
      isTrickleError(e, 'INVALID_ARGUMENT'),
    );
    expect(() => chain.wallet(99)).toThrow(/no account/);
  });
});

describe('startLocalChain({ throwOnTransactionFailures: false })', () => {
  it('behaves like a production node, and a mined revert is still decoded (replayed as a call)', async () => {
    const { deployAdjudicator } = await import('@trickle/chain/deploy');
    const { isChainRevert } = await import('@trickle/chain/errors');
    const real = await startLocalChain({ accounts: 2, throwOnTransactionFailures: false });
    try {
      const adj = await deployAdjudicator(real.wallet(0));
      const before = await real.provider.getBlockNumber();
      // A fixed gas limit skips estimation: the transaction is mined with status 0 and no revert data.
      const err = await adj.withdraw(ETH, undefined, { gasLimit: 100_000n }).catch((e: unknown) => e);
      expect(await real.provider.getBlockNumber()).toBe(before + 1);
      expect(isChainRevert(err, 'NothingOwed')).toBe(true);
    } finally {
      await real.close();
    }
  });
});

describe('LocalChain.wallet', () => {
  it('serializes concurrent transactions from one account (no nonce collisions)', async () => {
    const w = chain.wallet(2);
    expect(chain.wallet(2)).toBe(w);
    const before = await chain.provider.getBalance(chain.addresses[0]!);
    const sends = Array.from({ length: 6 }, () =>
      w.sendTransaction({ to: chain.addresses[0], value: 7n }).then((tx) => tx.wait()),
    );
    const receipts = await Promise.all(sends);
    expect(receipts.every((r) => r?.status === 1)).toBe(true);
    expect((await chain.provider.getBalance(chain.addresses[0]!)) - before).toBe(42n);
  });
});
