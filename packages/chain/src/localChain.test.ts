import { Wallet } from 'ethers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
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

  it('validates its options', async () => {
    await expect(startLocalChain({ accounts: 0 })).rejects.toSatisfy((e) => isTrickleError(e, 'INVALID_ARGUMENT'));
    expect(() => chain.wallet(99)).toThrow(/no account/);
  });
});
