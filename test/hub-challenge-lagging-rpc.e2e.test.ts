import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toQuantity, Wallet, type JsonRpcApiProvider } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { balanceOf } from '@trickle/chain/erc20';
import type { LocalChain } from '@trickle/devchain/localChain';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import type { SignedState } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';

/** Reads the lagging backend answers before the force close: two challenges' worth (its channel read and estimate). */
const LAGGED_READS = 4;

/**
 * The chain behind a load-balanced endpoint whose backends are blocks apart: while `lag.block` is set, the next
 * `lag.left` `eth_call`s and `eth_estimateGas`es are answered at that block (a backend behind), everything else at
 * the head.
 */
function laggingProvider(chain: LocalChain, lag: { block?: number; left: number; served: number }): JsonRpcApiProvider {
  const inner = chain.eip1193;
  const eip1193: LocalChain['eip1193'] = {
    request({ method, params }) {
      if ((method === 'eth_call' || method === 'eth_estimateGas') && lag.block !== undefined && lag.left > 0) {
        lag.left--;
        lag.served++;
        return inner.request({ method, params: [params![0], toQuantity(lag.block)] });
      }
      return inner.request({ method, params });
    },
  };
  // The local chain's provider class (an ethers provider over an in-process EIP-1193 provider), on this one.
  const Provider = chain.provider.constructor as new (eip1193: unknown, chainId: bigint) => JsonRpcApiProvider;
  return new Provider(eip1193, chain.chainId);
}

/**
 * A hub whose endpoint's backends are a few blocks apart: the one that serves its log reads has the device's stale
 * force close, the one that serves its challenge (the channel read and the gas estimate) does not yet and refuses it
 * with `ChannelNotClosing`. The hub tries again (it used to take that for final and stop answering: the stale state
 * settled and the device took back what it had paid) and its challenge lands once the backend has caught up: the
 * channel settles on the hub's newer state.
 */
describe('the hub challenges a stale force close through an endpoint whose backends lag', () => {
  let w: World;
  let provider: JsonRpcApiProvider;
  const lag: { block?: number; left: number; served: number } = { left: 0, served: 0 };
  beforeAll(async () => {
    w = await createWorld({ accounts: 4 });
    provider = laggingProvider(w.chain, lag);
    await w.startHub({
      storePath: join(w.dir, 'hub-lagging'),
      more: {
        chain: adjudicatorHubChain({
          provider: w.chain.provider,
          chainId: w.chain.chainId,
          adjudicator: w.adjudicator,
          runner: new Wallet(w.chain.accounts[1]!, provider),
        }),
      },
    });
  });
  afterAll(async () => {
    await w?.close();
    provider?.destroy();
  });

  it('a challenge refused ChannelNotClosing by a backend behind is sent again and lands; the newer state settles', async () => {
    const device = await w.client(2);
    const ch = await device.openChannel({ token: w.token, deposit: 1_000n, challengeDuration: 120n });
    await ch.pay(100n);
    const stale: SignedState = ch.latest;
    await ch.pay(200n);
    const latest = ch.latest.state.version;
    expect(ch.latest.state.paidByDevice).toBe(300n);
    await device.disconnect();

    // From here, the challenge's reads reach a backend still at the block before the force close.
    lag.block = await w.chain.provider.getBlockNumber();
    lag.left = LAGGED_READS;
    const { forceClosed } = await new Adjudicator(w.adjudicator, w.chain.wallet(2)).forceClose(stale);

    const adj = new Adjudicator(w.adjudicator, w.chain.wallet(3));
    const until = Date.now() + 20_000;
    while ((await adj.getChannel(ch.channelId)).version !== latest) {
      if (Date.now() > until) throw new Error(`no challenge landed; the backend behind answered ${lag.served} reads`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(lag.served).toBe(LAGGED_READS); // refused as many times as the backend was behind, then sent again
    const head = await w.chain.provider.getBlock('latest');
    expect(BigInt(head!.timestamp)).toBeLessThan(forceClosed.deadline);

    await w.chain.increaseTime(121);
    const before = await balanceOf(w.chain.provider, w.token, device.address);
    await adj.settle(ch.channelId);
    expect((await balanceOf(w.chain.provider, w.token, device.address)) - before).toBe(1_000n - 300n);
  });
});
