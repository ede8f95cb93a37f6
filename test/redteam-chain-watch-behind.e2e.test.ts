import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startChainServer, type ChainServer } from '@trickle/devchain/chainServer';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { connectChain } from '@trickle/chain/rpc';
import { fileChannelStore } from '@trickle/client/store';
import { createWatchtower, type Watchtower } from '@trickle/cli/watch/watchtower';
import { until } from './helpers/fee-spike.js';
import { rpcRelay } from './helpers/rpc-relay.js';
import { openWatchedChannel } from './helpers/watched-channel.js';

/**
 * A watchtower whose node went away for a while and, like many hosted nodes, refuses `eth_getLogs` over more than a
 * few blocks. A force close made during the outage is read once the node is back although the follower fell more
 * blocks behind than the node serves in one request (it asked for the whole backlog at once, was refused on every
 * poll, and never saw the force close: no challenge), and is challenged before the deadline.
 */
const DEVICE = 1;
const HUB = 2;
const TOWER = 3;
/** Most blocks the node serves per `eth_getLogs`. */
const NODE_LOG_RANGE = 10;

/**
 * A JSON-RPC relay in front of `target`: `down` answers 503; `eth_getLogs` over more than NODE_LOG_RANGE blocks is
 * refused, and one it serves is answered `logDelayMs` late.
 */
async function flakyNode(target: string): Promise<{
  url: string;
  state: { down: boolean; refusedRanges: number; logDelayMs: number };
  server: Server;
}> {
  const state = { down: false, refusedRanges: 0, logDelayMs: 0 };
  const relay = await rpcRelay(target, (body, res) => {
    if (state.down) {
      res.writeHead(503).end('node unavailable');
      return undefined;
    }
    const msg = JSON.parse(body.toString('utf8')) as { id: unknown; method: string; params: unknown[] };
    if (msg.method !== 'eth_getLogs') return body;
    const f = msg.params[0] as { fromBlock: string; toBlock: string };
    if (Number(BigInt(f.toBlock)) - Number(BigInt(f.fromBlock)) + 1 <= NODE_LOG_RANGE) {
      if (state.logDelayMs === 0) return body;
      // A slow log index: answered after the delay.
      setTimeout(() => {
        fetch(target, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
          .then(async (r) => res.writeHead(r.status, { 'content-type': 'application/json' }).end(await r.text()))
          .catch(() => res.writeHead(502).end());
      }, state.logDelayMs);
      return undefined;
    }
    state.refusedRanges++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        jsonrpc: '2.0',
        id: msg.id,
        error: { code: -32005, message: `query exceeds max block range ${NODE_LOG_RANGE}` },
      }),
    );
    return undefined;
  });
  return { ...relay, state };
}

describe('red team (chain): a watchtower behind on blocks after a node outage', () => {
  let chain: ChainServer;
  let relay: Awaited<ReturnType<typeof flakyNode>>;
  let dir: string;
  let tower: Watchtower | undefined;

  beforeAll(async () => {
    chain = await startChainServer({ accounts: 5 });
    relay = await flakyNode(chain.url);
    dir = mkdtempSync(join(tmpdir(), 'trickle-rt-watch-behind-'));
  });
  afterAll(async () => {
    await tower?.stop();
    await new Promise((r) => relay?.server.close(r));
    await chain?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the force close made during the outage in ranges the node serves, and challenges it in time', async () => {
    const { adj, params, channelId, sign } = await openWatchedChannel(chain, { device: DEVICE, hub: HUB, salt: 'b7' });
    const { provider } = await connectChain(relay.url, { timeoutMs: 5_000, pollingIntervalMs: 50 });
    tower = createWatchtower({
      provider,
      adjudicator: adj.address,
      sender: chain.wallet(TOWER).connect(provider),
      dbPath: join(dir, 'tower-db'),
      confirmations: 0,
      pollMs: 50,
      recheckMs: 200,
      retryInitialMs: 100,
      retryMaxMs: 500,
      log: () => undefined,
    });
    await tower.start();
    await tower.addState({ params, latest: sign(2n, 300n) });
    await until(() => tower!.status().caughtUp);

    // The node goes away; meanwhile the chain moves on and the device force-closes with its stale state.
    relay.state.down = true;
    await until(() => tower!.status().lastError !== undefined);
    await chain.mine(3 * NODE_LOG_RANGE);
    const { forceClosed } = await adj.connect(chain.wallet(DEVICE)).forceClose(sign(1n, 100n));
    await chain.mine(3 * NODE_LOG_RANGE);
    relay.state.down = false;

    const reader = new Adjudicator(adj.address, chain.provider);
    await until(async () => (await reader.getChannel(channelId)).version === 2n);
    expect(relay.state.refusedRanges).toBeGreaterThan(0); // it did ask for more than the node serves, and adapted
    const head = await chain.provider.getBlock('latest');
    expect(BigInt(head!.timestamp)).toBeLessThan(forceClosed.deadline);
    await until(() => tower!.status().caughtUp);
    expect(tower.channels()[0]!.dispute).toMatchObject({ outcome: 'challenged', registeredVersion: 2n });
  });

  it('reads a device store while it catches up over many ranges, not only once caught up', async () => {
    const { adj, channelId, sign, record } = await openWatchedChannel(chain, {
      device: DEVICE,
      hub: HUB,
      salt: 'b8',
    });
    const { provider } = await connectChain(relay.url, { timeoutMs: 5_000, pollingIntervalMs: 50 });
    const storeDir = join(dir, 'device-store');
    mkdirSync(storeDir);
    const logs: { event: string; block: number }[] = [];
    const catchingUp = createWatchtower({
      provider,
      adjudicator: adj.address,
      sender: chain.wallet(TOWER).connect(provider),
      dbPath: join(dir, 'catch-up-db'),
      storeDir,
      storePollMs: 50,
      confirmations: 0,
      pollMs: 50,
      recheckMs: 200,
      log: (_level, event) => void logs.push({ event, block: catchingUp.status().cursor?.block ?? -1 }),
    });
    try {
      await catchingUp.start();
      await until(() => catchingUp.status().caughtUp);
      // 100 blocks, at most 10 per read, each read 100 ms late: a catch-up of a second or more. The device writes a
      // new state once it is under way.
      const before = catchingUp.status().cursor!.block;
      relay.state.logDelayMs = 100;
      await chain.mine(100);
      const head = await chain.provider.getBlockNumber();
      await until(() => catchingUp.status().cursor!.block > before + 10);
      const store = fileChannelStore(storeDir);
      await store.save(record(sign(2n, 300n)));
      await store.close?.();
      await until(() => logs.some((l) => l.event === 'state-accepted'));
      expect(logs.find((l) => l.event === 'state-accepted')!.block).toBeLessThan(head);
    } finally {
      relay.state.logDelayMs = 0;
      await catchingUp.stop();
    }
  });
});
