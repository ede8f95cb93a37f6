import { afterAll, beforeAll } from 'vitest';
import type { JsonRpcApiProvider, Signer } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { ReplaceOptions } from '@trickle/chain/types';
import { adjudicatorHubChain, type HubChain } from '@trickle/hub/chain-watcher';
import type { ChannelId, SignedState } from '@trickle/protocol/types';
import { createWorld, type World } from './harness.js';

/** A world (4 accounts) for the describe block this is called in; automine is turned back on before it closes. */
export function feeSpikeWorld(): () => World {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
  });
  afterAll(async () => {
    await w?.chain.provider.send('evm_setAutomine', [true]);
    await w?.close();
  });
  return () => w;
}

/**
 * The hub's chain on `provider` sending as `runner`, its dispute sends re-priced every 2 blocks (never by time), the
 * receipt polled every 20 ms; `replace` adds to that (a fee cap, onSend, a stuck-copy store).
 */
export function repricingHubChain(
  w: World,
  provider: JsonRpcApiProvider,
  runner: Signer,
  replace: ReplaceOptions = {},
): HubChain {
  return adjudicatorHubChain({
    provider,
    chainId: w.chain.chainId,
    adjudicator: w.adjudicator,
    runner,
    replace: { everyBlocks: 2, everyMs: 3_600_000, pollMs: 20, ...replace },
  });
}

/** Polls `cond` until it holds (no time bound asserted: the test's own timeout ends a hang). */
export async function until(cond: () => boolean | Promise<boolean>): Promise<void> {
  while (!(await cond())) await new Promise((r) => setTimeout(r, 20));
}

/**
 * Device `index` opens a channel with the running hub (600 s challenge), pays 100 then 200 and goes offline; then it
 * force-closes with the older state while blocks are mined by hand (automine off from here on: the test mines, and
 * turns automine back on when it ends). Resolves once the force close is mined.
 * @returns the channel, the stale state registered, the latest version both signed and the challenge deadline
 */
export async function staleForceClose(
  w: World,
  index: number,
): Promise<{ channelId: ChannelId; stale: SignedState; latest: bigint; deadline: bigint }> {
  const device = await w.client(index);
  const ch = await device.openChannel({ token: w.token, deposit: 1_000n, challengeDuration: 600n });
  await ch.pay(100n);
  const stale = ch.latest;
  await ch.pay(200n);
  const latest = ch.latest.state.version;
  await device.disconnect();
  const { forceClosed } = await forceCloseByHand(
    w.chain.provider,
    new Adjudicator(w.adjudicator, w.chain.wallet(index)),
    stale,
  );
  return { channelId: ch.channelId, stale, latest, deadline: forceClosed.deadline };
}

/**
 * `adjudicator` (connected to the closing party's wallet) force-closes with `signed`, and blocks are mined by hand
 * from here on (automine off): the close is mined in one block as soon as it is pending. Followed by polling its
 * receipt (`replace`, never re-priced here), not ethers' `wait()`: that checks the receipt, then follows blocks from
 * the head it reads next, so the one block mined in between was never looked at, and with no later block the close
 * waited for ever (~1 run in 10 of fee-bump-restart.e2e, looped).
 */
export async function forceCloseByHand(
  provider: JsonRpcApiProvider,
  adjudicator: Adjudicator,
  signed: SignedState,
): ReturnType<Adjudicator['forceClose']> {
  const rpc = (method: string, params: unknown[] = []) => provider.send(method, params);
  await rpc('evm_setAutomine', [false]);
  const closing = adjudicator.forceClose(signed, {
    replace: { everyBlocks: 1_000_000, everyMs: 3_600_000, pollMs: 20 },
  });
  await until(
    async () =>
      ((await rpc('eth_getBlockByNumber', ['pending', false])) as { transactions: unknown[] }).transactions.length > 0,
  );
  await rpc('evm_mine');
  return closing;
}
