import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Wallet, toQuantity, type JsonRpcApiProvider } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { SentCopy } from '@trickle/chain/types';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { forceCloseByHand, until } from './helpers/fee-spike.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * A watchtower stopped in the middle of a challenge that a gas price spike keeps out of the blocks, and started again
 * on its database. The stopped one sends nothing more (it used to go on re-pricing its challenge after stop() had
 * resolved, until the deadline); the copy it left in the mempool is in its database, and the restarted one replaces it
 * (same nonce, fees at least 12.5% above) instead of queuing a challenge behind it, and lands before the deadline.
 */
const DEVICE = 1;
const HUB = 2;
const TOWER = 3;

describe('red team (chain): a watchtower restarted mid-challenge during a fee spike', () => {
  let chain: LocalChain;
  let dir: string;
  const towers: Watchtower[] = [];

  beforeAll(async () => {
    chain = await startLocalChain({ accounts: 5 });
    dir = mkdtempSync(join(tmpdir(), 'trickle-rt-watch-restart-'));
  });
  afterAll(async () => {
    for (const t of towers) await t.stop();
    await chain?.provider.send('evm_setAutomine', [true]);
    await chain?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the stopped watchtower sends nothing more; the restarted one replaces its stuck challenge and lands it in time', async () => {
    const rpc = (method: string, params: unknown[] = []) => chain.provider.send(method, params);
    /** A provider of its own on the same chain, as a new process has. */
    const freshProvider = () =>
      new (chain.provider.constructor as new (eip1193: unknown, chainId: bigint) => JsonRpcApiProvider)(
        chain.eip1193,
        chain.chainId,
      );
    const { adj, params, channelId, sign } = await openWatchedChannel(chain, { device: DEVICE, hub: HUB, salt: '5a' });
    const stale = sign(1n, 100n);
    const latest = sign(2n, 300n);

    const fee = (await chain.provider.getFeeData()).maxFeePerGas!;
    const cap = (fee * 3n) / 2n;
    const dbPath = join(dir, 'tower-db');
    const tower = (provider: JsonRpcApiProvider, maxFeePerGas: bigint, copies: SentCopy[]) => {
      const t = createWatchtower({
        provider,
        adjudicator: adj.address,
        sender: new Wallet(chain.accounts[TOWER]!, provider),
        dbPath,
        confirmations: 0,
        pollMs: 50,
        recheckMs: 200,
        retryInitialMs: 100,
        retryMaxMs: 500,
        replace: { everyBlocks: 2, everyMs: 3_600_000, pollMs: 20, maxFeePerGas, onSend: (c) => copies.push(c) },
        log: () => undefined,
      });
      towers.push(t);
      return t;
    };

    const p1 = freshProvider();
    const copies: SentCopy[] = [];
    const first = tower(p1, cap, copies);
    await first.start();
    await first.addState({ params, latest });

    // The device force-closes with the stale state; from here on blocks are mined by hand.
    const { forceClosed } = await forceCloseByHand(chain.provider, adj.connect(chain.wallet(DEVICE)), stale);

    // The watchtower's challenge goes out and a fee spike keeps it out of the next blocks.
    await until(() => copies.length === 1);
    const nonce = copies[0]!.nonce;
    for (let i = 0; i < 2; i++) {
      await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(cap * 4n)]);
      await rpc('evm_mine');
    }
    await until(() => copies.length === 2); // re-priced after two blocks, at the cap: still below the spike
    await first.stop();
    p1.destroy();

    // Stopped: blocks go by (more than enough for a re-priced copy), and nothing more is sent from its account.
    const sent = copies.length;
    for (let i = 0; i < 4; i++) {
      await rpc('hardhat_setNextBlockBaseFeePerGas', [toQuantity(cap * 4n)]);
      await rpc('evm_mine');
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(copies.length).toBe(sent);
    expect(await chain.provider.getTransactionCount(chain.addresses[TOWER]!, 'latest')).toBe(nonce);

    // Restarted on the same database, a provider of its own, a cap above the spike.
    const p2 = freshProvider();
    const retry: SentCopy[] = [];
    const second = tower(p2, fee * 100n, retry);
    await second.start();
    await until(() => retry.length === 1);
    const last = copies[copies.length - 1]!;
    expect(retry[0]!.nonce).toBe(nonce);
    expect(retry[0]!.maxFeePerGas * 8n).toBeGreaterThanOrEqual(last.maxFeePerGas * 9n);
    expect(retry[0]!.maxPriorityFeePerGas * 8n).toBeGreaterThanOrEqual(last.maxPriorityFeePerGas * 9n);
    await rpc('evm_mine');
    const reader = new Adjudicator(adj.address, chain.provider);
    await until(async () => (await reader.getChannel(channelId)).version === 2n);
    const receipt = await chain.provider.getTransactionReceipt(retry[0]!.hash);
    expect(receipt?.status).toBe(1);
    expect(BigInt((await chain.provider.getBlock(receipt!.blockNumber))!.timestamp)).toBeLessThan(forceClosed.deadline);
    for (const c of copies) expect(await chain.provider.getTransactionReceipt(c.hash)).toBeNull();
    expect(await chain.provider.getTransactionCount(chain.addresses[TOWER]!, 'latest')).toBe(nonce + 1);
    await second.stop();
    p2.destroy();
  });
});
