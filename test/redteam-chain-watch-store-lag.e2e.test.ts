import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { connectChain } from '@trickle/chain/rpc';
import { fileChannelStore } from '@trickle/client/store';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { rpcRelay } from './helpers/rpc-relay.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * A watchtower reading a device's store through a node that lags: it reads a channel opened a moment ago as never
 * opened, and refuses the device's record (WRONG_CHANNEL). The device pays and goes offline, its record never changes
 * again: the refusal used to stand until the file changed, so the channel was never watched and a stale force close
 * won. The record is handed over again on later passes and taken once the node shows the channel.
 */
const DEVICE = 1;
const HUB = 2;
const TOWER = 3;

/** A relay whose `eth_call`s at `latest` run at block `lagAt` while it is set (a backend behind the others). */
async function laggingCalls(target: string): Promise<{ url: string; state: { lagAt?: string }; server: Server }> {
  const state: { lagAt?: string } = {};
  const relay = await rpcRelay(target, (body) => {
    const msg = JSON.parse(body.toString('utf8')) as { method: string; params: unknown[] };
    if (state.lagAt === undefined || msg.method !== 'eth_call' || msg.params[1] !== 'latest') return body;
    msg.params[1] = state.lagAt;
    return Buffer.from(JSON.stringify(msg));
  });
  return { ...relay, state };
}

describe('red team (chain): a device store record refused while the node lags', () => {
  let chain: ChainServer;
  let relay: Awaited<ReturnType<typeof laggingCalls>>;
  let dir: string;
  let tower: Watchtower | undefined;

  beforeAll(async () => {
    chain = await startChainServer({ accounts: 5 });
    relay = await laggingCalls(chain.url);
    dir = mkdtempSync(join(tmpdir(), 'trickle-rt-watch-store-lag-'));
  });
  afterAll(async () => {
    await tower?.stop();
    relay?.server.closeAllConnections();
    await new Promise((r) => relay?.server.close(r));
    await chain?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('is handed over again until the node shows the channel, then watched and its stale force close challenged', async () => {
    const adjudicator = await deployAdjudicator(chain.wallet(0));
    relay.state.lagAt = (await chain.provider.send('eth_blockNumber', [])) as string; // before the channel is opened
    const { adj, channelId, sign, record } = await openWatchedChannel(chain, {
      device: DEVICE,
      hub: HUB,
      salt: 'd4',
      adjudicator,
    });
    // The device's store: the channel paid to version 2, then the device goes offline.
    const storeDir = join(dir, 'device-store');
    mkdirSync(storeDir);
    const store = fileChannelStore(storeDir);
    const latest = sign(2n, 300n);
    await store.save(record(latest));
    await store.close?.();

    const { provider } = await connectChain(relay.url, { timeoutMs: 5_000, pollingIntervalMs: 50 });
    const logs: { event: string; fields: Record<string, unknown> }[] = [];
    tower = createWatchtower({
      provider,
      adjudicator: adj.address,
      sender: chain.wallet(TOWER).connect(provider),
      dbPath: join(dir, 'tower-db'),
      storeDir,
      storePollMs: 50,
      confirmations: 0,
      pollMs: 50,
      recheckMs: 200,
      retryInitialMs: 100,
      retryMaxMs: 500,
      log: (_level, event, fields) => void logs.push({ event, fields: fields ?? {} }),
    });
    await tower.start();
    const refused = logs.find((l) => l.event === 'store-record-refused');
    expect(refused?.fields['err']).toMatchObject({ code: 'WRONG_CHANNEL' });
    expect(tower.channels()).toEqual([]);

    relay.state.lagAt = undefined; // the node catches up
    await expect.poll(() => tower!.channels().map((c) => c.version), { timeout: 10_000 }).toEqual([2n]);
    const { forceClosed } = await adj.connect(chain.wallet(HUB)).forceClose(sign(1n, 100n));
    const reader = new Adjudicator(adj.address, chain.provider);
    await expect.poll(async () => (await reader.getChannel(channelId)).version, { timeout: 10_000 }).toBe(2n);
    expect(await chain.latestTimestamp()).toBeLessThan(forceClosed.deadline);
  });
});
