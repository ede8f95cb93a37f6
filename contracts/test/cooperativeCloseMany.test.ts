import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { SignedState } from '@trickle/protocol/types';
import { createFixture, deltas, ETH, expectRevert, ONE_ETH, USDT, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('cooperativeCloseMany', () => {
  it('closes every channel of the batch, paying each final state exactly', async () => {
    const finals: SignedState[] = [];
    for (let i = 1n; i <= 4n; i++) {
      const { id } = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
      finals.push(fx.sign(fx.state(id, { version: i, paidByDevice: i * USDT, isFinal: true })));
    }
    const [d, h] = await deltas(fx, fx.usdt.address, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.hub).cooperativeCloseMany(finals);
      expect(r.closed).toHaveLength(4);
    });
    expect([d, h]).toEqual([40n * USDT - 10n * USDT, 40n * USDT + 10n * USDT]);
  });

  it('skips channels that are already closed', async () => {
    const a = await fx.open(ETH, ONE_ETH, 0n);
    const b = await fx.open(ETH, ONE_ETH, 0n);
    const fa = fx.sign(fx.state(a.id, { version: 1n, isFinal: true }));
    const fb = fx.sign(fx.state(b.id, { version: 1n, isFinal: true }));
    await fx.adj.connect(fx.device).cooperativeClose(fa);
    const r = await fx.adj.connect(fx.hub).cooperativeCloseMany([fa, fb, fb]);
    expect(r.closed.map((e) => e.channelId)).toEqual([b.id]);
  });

  it('reverts the whole batch on an invalid entry', async () => {
    const a = await fx.open(ETH, ONE_ETH, 0n);
    const b = await fx.open(ETH, ONE_ETH, 0n);
    const good = fx.sign(fx.state(a.id, { version: 1n, isFinal: true }));
    const notFinal = fx.sign(fx.state(b.id, { version: 1n }));
    await expectRevert(fx.adj.connect(fx.hub).cooperativeCloseMany([good, notFinal]), 'NotFinal');
    expect((await fx.adj.getChannel(a.id)).status).toBe('open');
  });
});
