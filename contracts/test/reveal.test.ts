import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import { createFixture, makeLock, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('reveal', () => {
  it('records the block timestamp at which a hash first became known; anyone may reveal', async () => {
    const { preimage, lock } = makeLock(1n, 'device', 0n, 7);
    expect(await fx.adj.revealedAt(lock.hash)).toBe(0n);
    const at = (await fx.chain.latestTimestamp()) + 5n;
    await fx.chain.setNextBlockTimestamp(at);
    const r = await fx.adj.connect(fx.outsider).reveal(preimage);
    expect(r.lockHash).toBe(hashPreimage(preimage));
    expect(r.lockHash).toBe(lock.hash);
    expect(r.revealedAt).toBe(at);
    expect(r.revealed).toMatchObject({ name: 'Revealed', hash: lock.hash, preimage, timestamp: at });
    expect(await fx.adj.revealedAt(lock.hash)).toBe(at);
  });

  it('a later reveal of the same preimage changes nothing and emits nothing', async () => {
    const { preimage, lock } = makeLock(1n, 'device', 0n, 8);
    const first = await fx.adj.connect(fx.device).reveal(preimage);
    await fx.chain.increaseTime(100n);
    const again = await fx.adj.connect(fx.hub).reveal(preimage);
    expect(again.revealedAt).toBe(first.revealedAt);
    expect(again.revealed).toBeUndefined();
    expect(again.events).toHaveLength(0);
    expect(await fx.adj.revealedAt(lock.hash)).toBe(first.revealedAt);
  });

  it('a preimage opens only its own hash', async () => {
    const a = makeLock(1n, 'device', 0n, 9);
    const b = makeLock(1n, 'device', 0n, 10);
    await fx.adj.connect(fx.device).reveal(a.preimage);
    expect(await fx.adj.revealedAt(b.lock.hash)).toBe(0n);
  });
});
