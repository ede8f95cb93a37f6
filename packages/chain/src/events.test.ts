import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startLocalChain, type LocalChain } from '@trickle/devchain/localChain';
import { ETH_TOKEN, type Bytes32, type ChannelParams } from '@trickle/protocol/types';
import type { Adjudicator } from './adjudicator.js';
import { deployAdjudicator } from './deploy.js';
import { eventsNamed, parseLogs, queryEvents } from './events.js';

let chain: LocalChain;
let adj: Adjudicator;
let params: (salt: number) => ChannelParams;
beforeAll(async () => {
  chain = await startLocalChain({ accounts: 3 });
  adj = await deployAdjudicator(chain.wallet(0));
  params = (salt) => ({
    chainId: chain.chainId,
    adjudicator: adj.address,
    device: chain.addresses[1]!,
    hub: chain.addresses[2]!,
    token: ETH_TOKEN,
    challengeDuration: 10n,
    salt: `0x${salt.toString(16).padStart(64, '0')}` as Bytes32,
  });
});
afterAll(() => chain.close());

describe('events', () => {
  it('parses receipts and queries ranges, filtered by channel and by name', async () => {
    const from = await chain.provider.getBlockNumber();
    const a = await adj.connect(chain.wallet(1)).open(params(1), 100n);
    const b = await adj.connect(chain.wallet(2)).open(params(2), 200n);
    await adj.connect(chain.wallet(1)).deposit(b.channelId, 5n);
    const fc = await adj.connect(chain.wallet(2)).forceClose({
      state: {
        channelId: a.channelId,
        version: 0n,
        paidByDevice: 0n,
        paidByHub: 0n,
        round: 0n,
        locksRoot: `0x${'00'.repeat(32)}` as never,
        lockedByDevice: 0n,
        lockedByHub: 0n,
        isFinal: false,
      },
    });
    expect(parseLogs(fc.receipt.logs)).toEqual(fc.events);
    expect(fc.forceClosed).toMatchObject({
      name: 'ForceClosed',
      channelId: a.channelId,
      by: chain.addresses[2],
      version: 0n,
    });

    const all = await adj.queryEvents(from, 'latest');
    expect(all.map((e) => e.name)).toEqual(['ChannelOpened', 'ChannelOpened', 'Deposited', 'ForceClosed']);
    expect(all[0]?.log.transactionHash).toBe(a.hash);

    const onlyB = await queryEvents(chain.provider, adj.address, from, 'latest', { channelId: b.channelId });
    expect(onlyB.map((e) => e.name)).toEqual(['ChannelOpened', 'Deposited']);
    const opened = await adj.queryEvents(from, 'latest', { names: ['ChannelOpened'] });
    expect(eventsNamed(opened, 'ChannelOpened').map((e) => [e.opener, e.deposit])).toEqual([
      [chain.addresses[1], 100n],
      [chain.addresses[2], 200n],
    ]);
  });

  it('ignores logs of other contracts', () => {
    expect(parseLogs([{ address: adj.address, topics: [`0x${'00'.repeat(32)}`], data: '0x' } as never])).toEqual([]);
  });
});
