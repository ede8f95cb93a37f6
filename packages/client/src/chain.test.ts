import { describe, expect, it } from 'vitest';
import type { Signer as EthersSigner } from 'ethers';
import { adjudicatorInterface } from '@trickle/chain/events';
import type { ChannelId } from '@trickle/protocol/types';
import { adjudicatorClientChain } from './chain.js';

const adjudicator = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
const channelId = `0x${'ab'.repeat(32)}` as ChannelId;
const ZERO = '0x0000000000000000000000000000000000000000';

/** A wallet whose node is at block `head` and answers `getChannel` with deposits 7 and 9, recording each call's block. */
function wallet(head: number) {
  const blockTags: unknown[] = [];
  const result = adjudicatorInterface.encodeFunctionResult('getChannel', [
    [1n, ZERO, ZERO, ZERO, 0n, 7n, 9n, `0x${'00'.repeat(32)}`, 0n],
  ]);
  const w = {
    provider: { getBlockNumber: async () => head },
    call: async (tx: { blockTag?: unknown }) => {
      blockTags.push(tx.blockTag);
      return result;
    },
  };
  return { wallet: w as unknown as EthersSigner, blockTags };
}

describe('adjudicatorClientChain: readFunding counts deposits fundingConfirmations deep', () => {
  it('reads 2 blocks behind the head by default, at the head on a development chain', async () => {
    const real = wallet(100);
    const onReal = adjudicatorClientChain({ wallet: real.wallet, chainId: 1, adjudicator });
    expect(await onReal.readFunding(channelId)).toEqual({ device: 7n, hub: 9n });
    expect(real.blockTags).toEqual([98]);
    for (const chainId of [31337, 1337n]) {
      const dev = wallet(100);
      expect(await adjudicatorClientChain({ wallet: dev.wallet, chainId, adjudicator }).readFunding(channelId)).toEqual(
        { device: 7n, hub: 9n },
      );
      expect(dev.blockTags).toEqual([undefined]);
    }
  });

  it('takes the depth given, on any chain', async () => {
    const dev = wallet(100);
    await adjudicatorClientChain({
      wallet: dev.wallet,
      chainId: 31337,
      adjudicator,
      fundingConfirmations: 5,
    }).readFunding(channelId);
    const real = wallet(100);
    await adjudicatorClientChain({ wallet: real.wallet, chainId: 1, adjudicator, fundingConfirmations: 0 }).readFunding(
      channelId,
    );
    expect([dev.blockTags, real.blockTags]).toEqual([[95], [undefined]]);
  });

  it('a chain shorter than the depth holds no deposit that deep: none, without a read', async () => {
    const short = wallet(1);
    const chain = adjudicatorClientChain({ wallet: short.wallet, chainId: 1, adjudicator });
    expect(await chain.readFunding(channelId)).toEqual({ device: 0n, hub: 0n });
    expect(short.blockTags).toEqual([]);
  });

  it('refuses a depth that is not a non-negative integer (INVALID_ARGUMENT)', () => {
    for (const fundingConfirmations of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])
      expect(() =>
        adjudicatorClientChain({ wallet: wallet(1).wallet, chainId: 1, adjudicator, fundingConfirmations }),
      ).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
