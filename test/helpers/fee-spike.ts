import { Adjudicator } from '@trickle/chain/adjudicator';
import type { ChannelId, SignedState } from '@trickle/protocol/types';
import type { World } from './harness.js';

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
  const rpc = (method: string, params: unknown[] = []) => w.chain.provider.send(method, params);
  const device = await w.client(index);
  const ch = await device.openChannel({ token: w.token, deposit: 1_000n, challengeDuration: 600n });
  await ch.pay(100n);
  const stale = ch.latest;
  await ch.pay(200n);
  const latest = ch.latest.state.version;
  await device.disconnect();
  await rpc('evm_setAutomine', [false]);
  const closing = new Adjudicator(w.adjudicator, w.chain.wallet(index)).forceClose(stale);
  await until(
    async () =>
      ((await rpc('eth_getBlockByNumber', ['pending', false])) as { transactions: unknown[] }).transactions.length > 0,
  );
  await rpc('evm_mine');
  const { forceClosed } = await closing;
  return { channelId: ch.channelId, stale, latest, deadline: forceClosed.deadline };
}
