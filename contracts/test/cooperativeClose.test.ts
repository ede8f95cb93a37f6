import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isTrickleError } from '@trickle/protocol/errors';
import type { Address, ChannelId } from '@trickle/protocol/types';
import {
  createFixture,
  deltas,
  ETH,
  expectRevert,
  makeLock,
  ONE_ETH,
  USDT,
  withLocks,
  type Fixture,
} from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('cooperativeClose', () => {
  for (const [label, tokenOf, unit] of [
    ['ETH', () => ETH, ONE_ETH],
    ['USDT-like', () => fx.usdt.address, USDT],
  ] as const) {
    it(`pays ${label} out exactly as the final state says, in the same transaction`, async () => {
      const token: Address = tokenOf();
      const { id } = await fx.open(token, 10n * unit, 4n * unit);
      const state = fx.state(id, {
        version: 42n,
        paidByDevice: 7n * unit,
        paidByHub: 2n * unit,
        round: 3n,
        isFinal: true,
      });
      const [d, h, a] = await deltas(fx, token, [fx.device.address, fx.hub.address, fx.adj.address], async () => {
        const r = await fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(state));
        expect(r.closed).toMatchObject({ channelId: id, version: 42n, devicePayout: 5n * unit, hubPayout: 9n * unit });
      });
      expect([d, h, a]).toEqual([5n * unit, 9n * unit, -14n * unit]);
      expect((await fx.adj.getChannel(id)).status).toBe('closed');
    });
  }

  it('pays out everything to one side when its counterparty paid its whole deposit', async () => {
    const { id } = await fx.open(fx.usdt.address, 10n * USDT, 0n);
    const state = fx.state(id, { version: 1n, paidByDevice: 10n * USDT, isFinal: true });
    const [d, h] = await deltas(fx, fx.usdt.address, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.hub).cooperativeClose(fx.sign(state)),
    );
    expect([d, h]).toEqual([0n, 10n * USDT]);
  });

  it('is accepted while a force close is pending, overriding the registered state', async () => {
    const { id } = await fx.open(ETH, 2n * ONE_ETH, ONE_ETH);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 5n, paidByHub: ONE_ETH })));
    await fx.chain.increaseTime(5000); // even after the deadline, until someone settles
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], () =>
      fx.adj
        .connect(fx.relayer)
        .cooperativeClose(fx.sign(fx.state(id, { version: 6n, paidByDevice: ONE_ETH, isFinal: true }))),
    );
    expect([d, h]).toEqual([ONE_ETH, 2n * ONE_ETH]);
  });

  it('refuses a state that is not final', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await expectRevert(fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(fx.state(id, { version: 1n }))), 'NotFinal');
  });

  it('refuses a state whose payout would exceed the deposits, in either direction', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    const over = fx.state(id, { version: 1n, paidByDevice: ONE_ETH + 1n, isFinal: true });
    const args = await expectRevert(fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(over)), 'StateExceedsDeposits');
    expect(args).toMatchObject({ paidByDevice: ONE_ETH + 1n, depositDevice: ONE_ETH, depositHub: ONE_ETH });
    const overHub = fx.state(id, { version: 1n, paidByDevice: 5n, paidByHub: ONE_ETH + 6n, isFinal: true });
    await expectRevert(fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(overHub)), 'StateExceedsDeposits');
    // Large counters that net out within the deposits are fine.
    const big = 10n ** 40n;
    const netted = fx.state(id, { version: 2n, paidByDevice: big, paidByHub: big + ONE_ETH, isFinal: true });
    const [d] = await deltas(fx, ETH, [fx.device.address], () =>
      fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(netted)),
    );
    expect(d).toBe(2n * ONE_ETH);
  });

  it('refuses signatures in the wrong slots', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const signed = fx.sign(fx.state(id, { version: 1n, isFinal: true }));
    const args = await expectRevert(
      fx.adj.connect(fx.relayer).cooperativeClose({ ...signed, deviceSig: signed.hubSig, hubSig: signed.deviceSig }),
      'WrongSigner',
    );
    expect(args).toMatchObject({ expected: fx.device.address, recovered: fx.hub.address });
  });

  it('refuses a final state that still has pending locks (resolve them off-chain first)', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    const l = makeLock(1n, 'device', 10n ** 10n, 1);
    await expectRevert(
      fx.adj
        .connect(fx.relayer)
        .cooperativeClose(fx.sign(withLocks(fx.state(id, { version: 1n, isFinal: true }), [l]))),
      'LocksPending',
    );
  });

  it('refuses a closed or unknown channel', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const signed = fx.sign(fx.state(id, { version: 1n, isFinal: true }));
    await fx.adj.connect(fx.relayer).cooperativeClose(signed);
    expect(
      (await expectRevert(fx.adj.connect(fx.relayer).cooperativeClose(signed), 'ChannelNotActive'))['status'],
    ).toBe(3n);
    const unknown = fx.sign(fx.state(`0x${'cd'.repeat(32)}` as ChannelId, { version: 1n, isFinal: true }));
    expect(
      (await expectRevert(fx.adj.connect(fx.relayer).cooperativeClose(unknown), 'ChannelNotActive'))['status'],
    ).toBe(0n);
  });

  it('refuses locally, before sending, a state missing a signature', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const { state, deviceSig } = fx.sign(fx.state(id, { version: 1n, isFinal: true }));
    await expect(fx.adj.connect(fx.relayer).cooperativeClose({ state, deviceSig })).rejects.toSatisfy((e) =>
      isTrickleError(e, 'INVALID_ARGUMENT'),
    );
  });
});
