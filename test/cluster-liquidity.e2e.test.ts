import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { balanceOf, mintTestToken, transfer } from '@trickle/chain/erc20';
import { nobleSigner } from '@trickle/protocol/signer';
import type { ChannelId } from '@trickle/protocol/types';
import { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import { adjudicatorClientChain } from '@trickle/client/chain';
import { clusterWorld, sql, until } from './helpers/cluster-world.js';

/**
 * The liquidity policy (`--auto-deposit`) of `trickle-hub` processes sharing one PostgreSQL database (real server,
 * real chain, real processes; devices connected to a chosen process): one budget for the whole cluster, and each
 * channel topped up by the process holding it only.
 */
describe('hub cluster: auto-deposit liquidity', () => {
  const LEASE_MS = 1500;
  const w = clusterWorld({ name: 'trickle-cluster-liquidity', accounts: 4, firstFunded: 2, leaseMs: LEASE_MS });
  const liquidity = (budget: bigint) => ['--auto-deposit', '1000', '--auto-deposit-budget', String(budget)];

  /** Device `account` connected to the process on `port`, its channels in store `name`. */
  async function device(port: number, account: number, name: string): Promise<TrickleClient> {
    const c = await TrickleClient.connect({
      url: `ws://127.0.0.1:${port}/`,
      signer: nobleSigner(w.chain.accounts[account]!),
      store: fileChannelStore(join(w.dir, name)),
      chain: adjudicatorClientChain({
        wallet: w.chain.wallet(account),
        chainId: w.chain.chainId,
        adjudicator: w.adjudicator,
      }),
      reconnect: { initialDelayMs: 50, maxDelayMs: 300 },
      requestTimeoutMs: 5_000,
    });
    w.clients.push(c);
    return c;
  }
  /** The hub's deposit in a channel, on-chain. */
  const hubDeposit = async (channelId: ChannelId) =>
    (await new Adjudicator(w.adjudicator, w.chain.wallet(0)).getChannel(channelId)).depositHub;
  /** Give the hub's key (account 1) exactly `amount` tokens. */
  async function hubTokens(amount: bigint): Promise<void> {
    const hub = w.chain.addresses[1]!;
    const has = await balanceOf(w.chain.wallet(0), w.token, hub);
    if (has > amount) await transfer(w.chain.wallet(1), w.token, w.chain.addresses[0]!, has - amount);
    if (has < amount) await mintTestToken(w.chain.wallet(0), w.token, hub, amount - has);
  }
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('the budget bounds the deposits of every process together', async () => {
    await hubTokens(10_000n);
    const { url, ports } = await w.startCluster(liquidity(1_000n));
    const a = await device(ports[0]!, 2, 'budget-a');
    const chA = await a.openChannel({ token: w.token, deposit: 1_000n });
    await until(async () => (await hubDeposit(chA.channelId)) === 1_000n, 20_000);

    // A channel as low on another process (scanning every 200 ms): the budget is spent, by the first process.
    // Before: that process counted only its own deposits (none) and deposited 1,000 more, 2,000 in all.
    const b = await device(ports[1]!, 3, 'budget-b');
    const chB = await b.openChannel({ token: w.token, deposit: 1_000n });
    await sleep(3_000);
    expect(await hubDeposit(chB.channelId)).toBe(0n);
    expect(await hubDeposit(chA.channelId)).toBe(1_000n);
    const reserved = await sql<{ value: string }>(
      url,
      `SELECT value FROM trickle_meta WHERE starts_with(key, 'liquidity/reserved/')`,
    );
    expect(reserved.map((r) => r.value)).toEqual(['1000']);
  });

  it('a channel that moved is topped up by its holder only, and the process it left goes on for its other channels', async () => {
    await hubTokens(0n); // deposits fail (reverted) until the hub's key gets tokens
    const { url, ports } = await w.startCluster(liquidity(100_000n));
    const [p1, p2] = [ports[0]!, ports[1]!];
    const owner = async (channelId: ChannelId) =>
      (
        await sql<{ owner_url: string }>(
          url,
          'SELECT owner_url FROM trickle_leases WHERE channel_id = $1 AND expires_at > clock_timestamp()',
          [channelId],
        )
      )[0]?.owner_url;

    // Channel X opens on process 1, which cannot top it up yet: low there.
    const first = await device(p1, 2, 'moved');
    const x = await first.openChannel({ token: w.token, deposit: 1_000n });
    await first.disconnect();
    // Its device moves to process 2, which takes X over; process 1 keeps its record of X from before, low.
    await device(p2, 2, 'moved');
    await until(async () => (await owner(x.channelId)) === `ws://127.0.0.1:${p2}/`, 10_000);

    // The hub's key gets tokens: X is topped up once, by its holder. Before: process 1 topped up its stale record of X
    // too (2,000 in X), and its write of that deposit into X, fenced, stopped its policy for every channel.
    await hubTokens(10_000n);
    await until(async () => (await hubDeposit(x.channelId)) >= 1_000n, 20_000);
    await sleep(2_000);
    expect(await hubDeposit(x.channelId)).toBe(1_000n);

    // Process 1 still serves its own channels: one opened there now is topped up.
    const other = await device(p1, 3, 'other');
    const y = await other.openChannel({ token: w.token, deposit: 1_000n });
    await until(async () => (await hubDeposit(y.channelId)) === 1_000n, 20_000);
    expect(await hubDeposit(x.channelId)).toBe(1_000n);
  });
});
