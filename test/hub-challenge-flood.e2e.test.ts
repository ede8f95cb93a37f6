import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { adjudicatorHubChain, startChainFollower, type ChainFollowerDeps } from '@trickle/hub/chain-watcher';
import { channelContext } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import {
  ETH_TOKEN,
  NO_LOCKS,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type State,
} from '@trickle/protocol/types';

/**
 * Flood and loot: a party with many channels force-closes them all with a stale state in one block. The hub must get a
 * challenge of each mined within the challenge period. Answered one at a time, each waiting to be mined, it got one into
 * each block and the rest settled stale (9 of 16 here, with 2 s blocks and a 20 s period: the ratio of 600 s periods
 * against 80 closes on a 12 s chain). Now its challenges go out together on consecutive nonces. A real chain mining a
 * block every 2 s, the adjudicator, 16 channels whose latest states both parties signed, and the hub's chain follower
 * with its adjudicator chain; the channel table is the test's.
 */
const N = 16;
const BLOCK_MS = 2_000;
const PERIOD = 20n;
const DEVICE = 1;
const HUB = 2;

describe('a flood of stale force closes in one block', () => {
  let chain: LocalChain;
  beforeAll(async () => {
    chain = await startLocalChain({ accounts: 4 });
  });
  afterAll(async () => chain?.close());

  it(`every one of ${N} is challenged within its ${PERIOD} s period`, async () => {
    const adj = await deployAdjudicator(chain.wallet(0));
    const records = new Map<ChannelId, ReturnType<ChainFollowerDeps['channels']['get']>>();
    for (let i = 0; i < N; i++) {
      const params: ChannelParams = {
        chainId: chain.chainId,
        adjudicator: adj.address,
        device: chain.addresses[DEVICE]!,
        hub: chain.addresses[HUB]!,
        token: ETH_TOKEN,
        challengeDuration: PERIOD,
        salt: `0x${(i + 1).toString(16).padStart(64, '0')}` as Bytes32,
      };
      const { channelId } = await adj.connect(chain.wallet(DEVICE)).open(params, 10_000n);
      const ctx = channelContext(params, { device: 10_000n, hub: 0n });
      // The device paid the hub 5,000: its latest state, both signed.
      const state: State = {
        channelId,
        version: 1n,
        paidByDevice: 5_000n,
        paidByHub: 0n,
        round: 0n,
        ...NO_LOCKS,
        isFinal: false,
      };
      const digest = stateDigest(ctx.separator, state);
      records.set(channelId, {
        params,
        channelId,
        funding: { device: 10_000n, hub: 0n },
        status: 'open',
        locks: [],
        latest: {
          state,
          deviceSig: signatureToHex(nobleSigner(chain.accounts[DEVICE]!).signDigest(digest)),
          hubSig: signatureToHex(nobleSigner(chain.accounts[HUB]!).signDigest(digest)),
        },
      } as unknown as ReturnType<ChainFollowerDeps['channels']['get']>);
    }
    const hubChain = adjudicatorHubChain({
      provider: chain.provider,
      chainId: chain.chainId,
      adjudicator: adj.address,
      runner: chain.wallet(HUB),
      confirmations: 0,
      replace: { pollMs: 100 },
    });
    const quiet = () => undefined;
    const follower = await startChainFollower({
      chain: hubChain,
      channels: { get: (id: ChannelId) => records.get(id), onChain: async () => undefined, size: records.size },
      committer: { write: async () => undefined },
      store: { getMeta: async () => '0' },
      hub: chain.addresses[HUB]!,
      pollMs: 200,
      logger: { info: quiet, warn: quiet, error: quiet, debug: quiet },
    } as unknown as ChainFollowerDeps);
    try {
      // Blocks every 2 s from now; the device's N force closes with the zero state (no signature needed) in one.
      await chain.provider.send('evm_setAutomine', [false]);
      await chain.provider.send('evm_setIntervalMining', [BLOCK_MS]);
      const device = new Wallet(chain.accounts[DEVICE]!, chain.provider);
      let nonce = await chain.provider.getTransactionCount(device.address, 'latest');
      const none = `0x${'00'.repeat(32)}`;
      const sent = [];
      for (const channelId of records.keys()) {
        const zero: State = {
          channelId,
          version: 0n,
          paidByDevice: 0n,
          paidByHub: 0n,
          round: 0n,
          ...NO_LOCKS,
          isFinal: false,
        };
        sent.push(
          await (adj.contract.connect(device) as unknown as Adjudicator['contract']).getFunction('forceClose')(
            zero,
            none,
            none,
            { nonce: nonce++, gasLimit: 300_000 },
          ),
        );
      }
      const mined = await Promise.all(sent.map((t) => t.wait()));
      expect(new Set(mined.map((r) => r!.blockNumber)).size).toBe(1);
      // The period runs out (plus two blocks for the last challenge to be read back).
      await new Promise((r) => setTimeout(r, Number(PERIOD) * 1_000 + 2 * BLOCK_MS));
      const versions = await Promise.all([...records.keys()].map(async (id) => (await adj.getChannel(id)).version));
      expect(versions).toEqual(new Array(N).fill(1n));
    } finally {
      await follower.stop();
      hubChain.close?.();
      await chain.provider.send('evm_setIntervalMining', [0]);
      await chain.provider.send('evm_setAutomine', [true]);
    }
  }, 90_000);
});
