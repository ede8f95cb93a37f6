import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Filter, FilterByBlockHash, Provider } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import type { SignedState } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';

/** Most blocks one `eth_getLogs` may span at this endpoint (hosted endpoints cap it: 500 to 10,000 blocks). */
const CAP = 2_000;

/**
 * The chain endpoint refuses an `eth_getLogs` over more than {@link CAP} blocks, as hosted JSON-RPC endpoints do;
 * everything else goes to the chain as it is. Counts the refusals.
 */
function cappedProvider(inner: Provider, refused: { n: number }, reads: number[] = []): Provider {
  return new Proxy(inner, {
    get(target, key) {
      if (key === 'getLogs')
        return async (f: Filter | FilterByBlockHash) => {
          if ('fromBlock' in f && typeof f.fromBlock === 'number' && typeof f.toBlock === 'number') {
            reads.push(f.fromBlock);
            if (f.toBlock - f.fromBlock + 1 > CAP) {
              refused.n++;
              throw new Error(`eth_getLogs is limited to a ${CAP} block range`);
            }
          }
          return target.getLogs(f);
        };
      const v: unknown = Reflect.get(target, key, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

/**
 * A hub that was down while many blocks were mined reads the adjudicator's events since its cursor in ranges its
 * chain endpoint accepts: it sees a stale force close made meanwhile and challenges it.
 */
describe('the hub catches up with the chain after a downtime', () => {
  let w: World;
  const refused = { n: 0 };
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
  });
  afterAll(async () => w?.close());

  const start = () =>
    w.startHub({
      storePath: join(w.dir, 'hub-catch-up'),
      more: {
        chain: adjudicatorHubChain({
          provider: cappedProvider(w.chain.provider, refused),
          chainId: w.chain.chainId,
          adjudicator: w.adjudicator,
          runner: w.chain.wallet(1),
        }),
      },
    });

  it(`challenges a stale force close made ${3 * CAP} blocks after the block it had read up to`, async () => {
    let hub = await start();
    const device = await w.client(2);
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n, challengeDuration: 3_600n });
    await ch.pay(100n);
    const stale: SignedState = ch.latest;
    await ch.pay(200n);
    const latest = ch.latest.state.version;
    expect(latest).toBeGreaterThan(stale.state.version);
    await device.disconnect();
    await hub.close();

    // While the hub is down: many blocks, then the device force-closes with the state from before its last payment.
    await w.chain.mine(3 * CAP);
    await new Adjudicator(w.adjudicator, w.chain.wallet(2)).forceClose(stale);

    hub = await start();
    const adj = new Adjudicator(w.adjudicator, w.chain.provider);
    const until = Date.now() + 30_000;
    while ((await adj.getChannel(ch.channelId)).version !== latest) {
      if (Date.now() > until) throw new Error(`no challenge; endpoint refused ${refused.n} log reads`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(refused.n).toBe(0);
    expect(hub.channels.get(ch.channelId)?.status).toBe('closing');
  });

  it('a hub on a fresh store (no channels) starts reading at the head, not at block 0', async () => {
    const reads: number[] = [];
    await w.chain.mine(3 * CAP);
    const head = await w.chain.provider.getBlockNumber();
    const hub = await w.startHub({
      storePath: join(w.dir, 'hub-fresh'),
      more: {
        chain: adjudicatorHubChain({
          provider: cappedProvider(w.chain.provider, { n: 0 }, reads),
          chainId: w.chain.chainId,
          adjudicator: w.adjudicator,
          runner: w.chain.wallet(1),
        }),
      },
    });
    // A block after the start: the follower reads it, and nothing before the start.
    await w.chain.mine(1);
    const until = Date.now() + 10_000;
    while (reads.length === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    await hub.close();
    expect(reads.length).toBeGreaterThan(0);
    expect(Math.min(...reads)).toBeGreaterThan(head - 2);
  });
});
