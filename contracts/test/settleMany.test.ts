import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ChannelId } from '@trickle/protocol/types';
import {
  CHALLENGE,
  createFixture,
  deltas,
  ETH,
  makeLock,
  ONE_ETH,
  USDT,
  withLocks,
  type Fixture,
  type TestLock,
} from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('settleMany', () => {
  it('settles every settleable channel and skips the rest (not due, open, settled, unknown)', async () => {
    const due: ChannelId[] = [];
    for (let i = 0n; i < 3n; i++) {
      const { id } = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
      await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 1n, paidByDevice: (i + 1n) * USDT })));
      due.push(id);
    }
    const alreadySettled = due[2]!;
    await fx.chain.increaseTime(CHALLENGE);
    await fx.adj.connect(fx.relayer).settle(alreadySettled);
    const notDue = await fx.open(fx.usdt.address, USDT, 0n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(notDue.id) });
    const open = await fx.open(fx.usdt.address, USDT, 0n);
    const unknown = `0x${'42'.repeat(32)}` as ChannelId;

    const [d, h] = await deltas(fx, fx.usdt.address, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj
        .connect(fx.hub)
        .settleMany([due[0]!, notDue.id, open.id, due[1]!, alreadySettled, unknown]);
      expect(r.closed.map((e) => e.channelId)).toEqual([due[0], due[1]]);
      expect(r.closed.map((e) => e.devicePayout)).toEqual([9n * USDT, 8n * USDT]);
    });
    expect([d, h]).toEqual([17n * USDT, 23n * USDT]);
    expect((await fx.adj.getChannel(notDue.id)).status).toBe('closing');
    expect((await fx.adj.getChannel(open.id)).status).toBe('open');
  });

  it('returns nothing settled for an empty or all-skipped batch', async () => {
    expect((await fx.adj.connect(fx.hub).settleMany([])).closed).toEqual([]);
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    expect((await fx.adj.connect(fx.hub).settleMany([id, id])).closed).toEqual([]);
  });

  it('settles a channel listed twice only once', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    const [d] = await deltas(fx, ETH, [fx.device.address], async () => {
      expect((await fx.adj.connect(fx.relayer).settleMany([id, id])).closed).toHaveLength(1);
    });
    expect(d).toBe(ONE_ETH);
  });
});

describe('settleMany with locks', () => {
  const U = ONE_ETH;
  async function forceClosedWith(locks: readonly TestLock[]) {
    const { id } = await fx.open(ETH, 10n * U, 10n * U);
    const state = withLocks(fx.state(id, { version: 3n, paidByDevice: 2n * U, paidByHub: U }), locks);
    await fx.adj.connect(fx.device).forceClose(fx.sign(state), { locks: locks.map((l) => l.lock) });
    return { id, list: locks.map((l) => l.lock) };
  }

  it('settleMany skips a channel whose lock is undecided and settles the others', async () => {
    const now = await fx.chain.latestTimestamp();
    const pending = makeLock(U, 'device', now + 10n * CHALLENGE, 8);
    const a = await forceClosedWith([pending]);
    const b = await forceClosedWith([]);
    await fx.chain.increaseTime(CHALLENGE);
    const r = await fx.adj.connect(fx.hub).settleMany([a.id, b.id], { locks: new Map([[a.id, a.list]]) });
    expect(r.closed.map((e) => e.channelId)).toEqual([b.id]);
    expect((await fx.adj.getChannel(a.id)).status).toBe('closing');
  });
});
