import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Wallet } from 'ethers';
import type { Adjudicator } from '@trickle/chain/adjudicator';
import { deployAdjudicator } from '@trickle/chain/deploy';
import { createWatchtower } from '@trickle/cli/watch/watchtower';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { adjudicatorHubChain, startChainFollower, type ChainFollowerDeps } from '@trickle/hub/chain-watcher';
import { channelContext, zeroState } from '@trickle/protocol/channel';
import { stateDigest } from '@trickle/protocol/eip712';
import { nobleSigner, signatureToHex } from '@trickle/protocol/signer';
import {
  ETH_TOKEN,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type SignedState,
  type State,
} from '@trickle/protocol/types';

/**
 * Flood and loot: a party with many channels force-closes them all with a stale state in one block, and the other side
 * must get a challenge of each mined within the challenge period. Answered one at a time, each awaited until mined, a
 * responder got one challenge into each block and the rest settled stale (9 of 16 with 2 s blocks and a 20 s
 * period, and with 1 s blocks and a 10 s period as here: the ratio of 600 s periods against 80 closes on a 12 s
 * chain). Both responders now send their challenges together, on consecutive nonces. A real chain mining a block
 * every second, the adjudicator, 16 channels whose latest
 * states both parties signed; against the hub's chain follower (a device's many channels close stale: the hub's
 * payments taken back), and against the watchtower (the hub closes its devices' channels stale: their credits taken).
 */
const N = 16;
const BLOCK_MS = 1_000;
const PERIOD = 10n;
const DEVICE = 1;
const HUB = 2;
const TOWER = 3;
const none = `0x${'00'.repeat(32)}`;

interface Opened {
  params: ChannelParams;
  channelId: ChannelId;
  latest: SignedState;
}

describe('a flood of stale force closes in one block', () => {
  let chain: LocalChain;
  let adj: Adjudicator;
  let salt = 0;
  beforeAll(async () => {
    chain = await startLocalChain({ accounts: 5 });
    adj = await deployAdjudicator(chain.wallet(0));
  });
  afterAll(async () => chain?.close());

  /** N channels funded by both; each one's latest state (version 1), both signed, moves `paid` of the device's or the hub's. */
  async function open(paid: { byDevice: bigint; byHub: bigint }): Promise<Opened[]> {
    const out: Opened[] = [];
    for (let i = 0; i < N; i++) {
      const params: ChannelParams = {
        chainId: chain.chainId,
        adjudicator: adj.address,
        device: chain.addresses[DEVICE]!,
        hub: chain.addresses[HUB]!,
        token: ETH_TOKEN,
        challengeDuration: PERIOD,
        salt: `0x${(++salt).toString(16).padStart(64, '0')}` as Bytes32,
      };
      const { channelId } = await adj.connect(chain.wallet(DEVICE)).open(params, 10_000n);
      await adj.connect(chain.wallet(HUB)).deposit(channelId, 10_000n);
      const ctx = channelContext(params, { device: 10_000n, hub: 10_000n });
      const state: State = { ...zeroState(channelId), version: 1n, paidByDevice: paid.byDevice, paidByHub: paid.byHub };
      const digest = stateDigest(ctx.separator, state);
      const latest = {
        state,
        deviceSig: signatureToHex(nobleSigner(chain.accounts[DEVICE]!).signDigest(digest)),
        hubSig: signatureToHex(nobleSigner(chain.accounts[HUB]!).signDigest(digest)),
      } as SignedState;
      out.push({ params, channelId, latest });
    }
    return out;
  }

  /**
   * From now on a block every second; `closer` force-closes every channel with the zero state (no signature needed) in one
   * block; once the period is over (and two blocks more), the version each channel has registered.
   */
  async function flood(closer: number, channels: Opened[]): Promise<bigint[]> {
    await chain.provider.send('evm_setAutomine', [false]);
    await chain.provider.send('evm_setIntervalMining', [BLOCK_MS]);
    try {
      const wallet = new Wallet(chain.accounts[closer]!, chain.provider);
      let nonce = await chain.provider.getTransactionCount(wallet.address, 'latest');
      const sent = [];
      for (const { channelId } of channels) {
        const zero = zeroState(channelId);
        const forceClose = adj.contract.connect(wallet).getFunction('forceClose');
        sent.push(await forceClose(zero, none, none, { nonce: nonce++, gasLimit: 300_000 }));
      }
      const mined = await Promise.all(sent.map((t) => t.wait()));
      expect(new Set(mined.map((r) => r!.blockNumber)).size).toBe(1);
      await new Promise((r) => setTimeout(r, Number(PERIOD) * 1_000 + 2 * BLOCK_MS));
      return await Promise.all(channels.map(async (c) => (await adj.getChannel(c.channelId)).version));
    } finally {
      await chain.provider.send('evm_setIntervalMining', [0]);
      await chain.provider.send('evm_setAutomine', [true]);
    }
  }

  it(`by a device: the hub's chain follower challenges every one of ${N} within the ${PERIOD} s period`, async () => {
    const channels = await open({ byDevice: 5_000n, byHub: 0n });
    const records = new Map(
      channels.map((c) => [
        c.channelId,
        { params: c.params, channelId: c.channelId, status: 'open', locks: [], latest: c.latest },
      ]),
    );
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
      store: { getMeta: async () => String(await chain.provider.getBlockNumber()) },
      hub: chain.addresses[HUB]!,
      pollMs: 200,
      logger: { info: quiet, warn: quiet, error: quiet, debug: quiet },
    } as unknown as ChainFollowerDeps);
    try {
      expect(await flood(DEVICE, channels)).toEqual(new Array(N).fill(1n));
    } finally {
      await follower.stop();
      hubChain.close?.();
    }
  }, 120_000);

  it(`by the hub: the watchtower challenges every one of ${N} within the ${PERIOD} s period`, async () => {
    const channels = await open({ byDevice: 0n, byHub: 5_000n });
    const dir = mkdtempSync(join(tmpdir(), 'trickle-flood-'));
    const mined: string[] = [];
    const tower = createWatchtower({
      provider: chain.provider,
      adjudicator: adj.address,
      sender: chain.wallet(TOWER),
      dbPath: join(dir, 'tower'),
      confirmations: 0,
      pollMs: 200,
      recheckMs: 1_000,
      replace: { pollMs: 100 },
      log: (_level, event) => void (event === 'challenge-mined' && mined.push(event)),
    });
    await tower.start();
    try {
      for (const c of channels) await tower.addState({ params: c.params, latest: c.latest });
      expect(await flood(HUB, channels)).toEqual(new Array(N).fill(1n));
      expect(mined).toHaveLength(N);
    } finally {
      await tower.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
