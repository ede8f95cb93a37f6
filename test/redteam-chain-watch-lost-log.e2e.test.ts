import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { connectChain } from '@trickle/chain/rpc';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { logHidingRelay } from './helpers/rpc-relay.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * A watchtower behind a load-balanced node that serves `getBlock` from an up-to-date backend and `eth_getLogs` from one
 * that has not indexed the newest block yet: the range holding a force close comes back with no logs, once, and the
 * follower moves past it (the block's hash was the same before and after). The device is offline, so nothing else
 * makes the watchtower read the channel: before the sweep it never did, and the stale close would have won.
 */
const DEVICE = 1;
const HUB = 2;
const TOWER = 3;

describe('red team (chain): a force close whose log the node did not serve', () => {
  let chain: ChainServer;
  let relay: Awaited<ReturnType<typeof logHidingRelay>>;
  let dir: string;
  let tower: Watchtower | undefined;

  beforeAll(async () => {
    chain = await startChainServer({ accounts: 5 });
    relay = await logHidingRelay(chain.url);
    dir = mkdtempSync(join(tmpdir(), 'trickle-rt-watch-lost-log-'));
  });
  afterAll(async () => {
    await tower?.stop();
    await new Promise((r) => relay?.server.close(r));
    await chain?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is read by the sweep of watched channels and challenged before the deadline', async () => {
    const { adj, params, channelId, sign } = await openWatchedChannel(chain, { device: DEVICE, hub: HUB, salt: 'c3' });
    const { provider } = await connectChain(relay.url, { timeoutMs: 5_000, pollingIntervalMs: 50 });
    const events: string[] = [];
    tower = createWatchtower({
      provider,
      adjudicator: adj.address,
      sender: chain.wallet(TOWER).connect(provider),
      dbPath: join(dir, 'tower-db'),
      confirmations: 0,
      pollMs: 50,
      recheckMs: 100,
      sweepMs: 500,
      retryInitialMs: 100,
      retryMaxMs: 500,
      log: (_level, event) => void events.push(event),
    });
    await tower.start();
    await tower.addState({ params, latest: sign(2n, 300n) });
    await expect.poll(() => tower!.status().caughtUp).toBe(true);

    relay.state.times = 1;
    relay.state.block = (await chain.provider.getBlockNumber()) + 1; // automine: the force close's block
    const { forceClosed, blockNumber } = await adj.connect(chain.wallet(DEVICE)).forceClose(sign(1n, 100n));
    expect(blockNumber).toBe(relay.state.block);

    const reader = new Adjudicator(adj.address, chain.provider);
    await expect.poll(async () => (await reader.getChannel(channelId)).version, { timeout: 10_000 }).toBe(2n);
    expect(relay.state.hidden).toBe(1); // the log was withheld: the watchtower never saw the event
    expect(events).not.toContain('force-close-seen');
    // the watchtower logs the challenge when it has read its receipt, which can be a poll after the chain shows it
    await expect.poll(() => events.includes('challenge-mined'), { timeout: 5_000 }).toBe(true);
    const head = await chain.provider.getBlock('latest');
    expect(BigInt(head!.timestamp)).toBeLessThan(forceClosed.deadline);
    expect(tower.channels()[0]!.dispute).toMatchObject({ outcome: 'challenged', registeredVersion: 2n });
  });
});
