import { describe, expect, it } from 'vitest';
import type { Provider } from 'ethers';
import type { Address } from '@trickle/protocol/types';
import { followStep, type FollowerOptions } from './follower.js';
import type { BlockCursor } from './db.js';

/** A fake chain: block n has hash `h<n>-<fork>`; `getLogs` returns nothing and counts ranges. */
function fakeChain() {
  const chain = { head: 10, fork: new Map<number, string>(), ranges: [] as [number, number][] };
  const hash = (n: number) => `0x${n}${chain.fork.get(n) ?? ''}`;
  const provider = {
    getBlockNumber: async () => chain.head,
    getBlock: async (n: number) => (n <= chain.head ? { hash: hash(n) } : null),
    getLogs: async (f: { fromBlock: number; toBlock: number }) => {
      chain.ranges.push([Number(f.fromBlock), Number(f.toBlock)]);
      return [];
    },
  } as unknown as Provider;
  return { chain, provider };
}

function options(provider: Provider, over: Partial<FollowerOptions> = {}) {
  let cursor: BlockCursor | undefined;
  const logs: string[] = [];
  const o: FollowerOptions = {
    provider,
    adjudicator: '0x0000000000000000000000000000000000000001' as Address,
    confirmations: 2,
    reorgDepth: 3,
    maxBlockRange: 4,
    cursor: () => cursor,
    setCursor: async (c) => void (cursor = c),
    onEvent: () => {},
    log: (_l, event) => void logs.push(event),
    ...over,
  };
  return { o, logs, cursor: () => cursor };
}

describe('followStep', () => {
  it('starts at the confirmed head, then reads confirmed blocks in bounded ranges', async () => {
    const { chain, provider } = fakeChain();
    const { o, cursor } = options(provider);
    expect((await followStep(o)).cursor).toEqual({ block: 8, hash: '0x8' });
    chain.head = 20;
    const steps = [];
    let s;
    do steps.push((s = await followStep(o)).cursor.block);
    while (s.behind);
    expect(chain.ranges).toEqual([
      [9, 12],
      [13, 16],
      [17, 18],
    ]);
    expect(steps).toEqual([12, 16, 18]);
    expect(cursor()).toEqual({ block: 18, hash: '0x18' });
  });

  it('rewinds reorgDepth blocks when the last processed block changed, and reads them again', async () => {
    const { chain, provider } = fakeChain();
    const { o, logs, cursor } = options(provider);
    await followStep(o); // cursor 8
    for (const n of [7, 8, 9, 10]) chain.fork.set(n, 'b');
    chain.ranges.length = 0;
    const s = await followStep(o);
    expect(logs).toContain('reorg');
    expect(chain.ranges).toEqual([[6, 8]]);
    expect(s.cursor).toEqual({ block: 8, hash: '0x8b' });
    expect(cursor()).toEqual({ block: 8, hash: '0x8b' });
  });

  it('with reorgDepth 0 still reads the block that changed again (its events are new)', async () => {
    const { chain, provider } = fakeChain();
    const { o, cursor } = options(provider, { reorgDepth: 0 });
    await followStep(o); // cursor 8
    chain.fork.set(8, 'b');
    chain.ranges.length = 0;
    await followStep(o);
    expect(chain.ranges).toEqual([[8, 8]]);
    expect(cursor()).toEqual({ block: 8, hash: '0x8b' });
  });

  it('treats a chain that got shorter than the cursor as a reorg', async () => {
    const { chain, provider } = fakeChain();
    const { o, logs } = options(provider, { confirmations: 0 });
    await followStep(o); // cursor 10
    chain.head = 7;
    const s = await followStep(o);
    expect(logs).toContain('reorg');
    expect(s.cursor.block).toBe(7);
  });

  it('halves a range the node refuses (at once, down to one block) and doubles it back after each read', async () => {
    const { chain, provider } = fakeChain();
    const served = provider.getLogs.bind(provider);
    let limit = 2; // the node serves at most this many blocks per request
    (provider as { getLogs: unknown }).getLogs = async (f: { fromBlock: number; toBlock: number }) => {
      if (Number(f.toBlock) - Number(f.fromBlock) + 1 > limit) {
        chain.ranges.push([-Number(f.fromBlock), -Number(f.toBlock)]); // refused
        throw Object.assign(new Error('query exceeds max block range'), { code: 'UNKNOWN_ERROR' });
      }
      return served(f as never);
    };
    const range = { size: 8 };
    const { o, logs, cursor } = options(provider, { maxBlockRange: 8, range });
    await followStep(o); // cursor 8
    chain.head = 22; // safe 20: 12 blocks behind
    chain.ranges.length = 0;
    let s;
    do s = await followStep(o);
    while (s.behind);
    expect(chain.ranges).toEqual([
      [-9, -16],
      [-9, -12],
      [9, 10], // refused 8 and 4, read 2; next asks 4
      [-11, -14],
      [11, 12],
      [-13, -16],
      [13, 14],
      [-15, -18],
      [15, 16],
      [-17, -20],
      [17, 18],
      [19, 20], // two blocks left up to the safe head: served
    ]);
    expect(logs.filter((l) => l === 'log-range-reduced')).toHaveLength(6);
    expect(cursor()).toEqual({ block: 20, hash: '0x20' });
    // A node that serves no range at all: the step fails (the caller retries on its next poll), the cursor stays.
    limit = 0;
    chain.head = 30;
    await expect(followStep(o)).rejects.toThrow('max block range');
    expect(range.size).toBe(1);
    expect(cursor()).toEqual({ block: 20, hash: '0x20' });
  });
});
