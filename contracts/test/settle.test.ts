import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Address } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, ETH, expectRevert, ONE_ETH, USDT, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('settle', () => {
  for (const [label, tokenOf, unit] of [
    ['ETH', () => ETH, ONE_ETH],
    ['USDT-like', () => fx.usdt.address, USDT],
  ] as const) {
    it(`pays ${label} out exactly as the registered state says, after the deadline; anyone may call`, async () => {
      const token: Address = tokenOf();
      const { id } = await fx.open(token, 6n * unit, 3n * unit);
      await fx.adj.connect(fx.hub).forceClose(fx.sign(fx.state(id, { version: 3n, paidByDevice: 5n * unit, paidByHub: unit })));
      await fx.chain.increaseTime(CHALLENGE);
      const [d, h, a] = await deltas(fx, token, [fx.device.address, fx.hub.address, fx.adj.address], async () => {
        const r = await fx.adj.connect(fx.relayer).settle(id);
        expect(r.closed).toMatchObject({ channelId: id, version: 3n, devicePayout: 2n * unit, hubPayout: 7n * unit });
      });
      expect([d, h, a]).toEqual([2n * unit, 7n * unit, -9n * unit]);
      expect(await fx.adj.getChannel(id)).toMatchObject({ status: 'closed', depositDevice: 0n, depositHub: 0n, version: 0n });
    });

    it(`force close → challenge → settle pays the challenged ${label} state`, async () => {
      const token: Address = tokenOf();
      const { id } = await fx.open(token, 6n * unit, 3n * unit);
      await fx.adj.connect(fx.hub).forceClose(fx.sign(fx.state(id, { version: 3n, paidByDevice: 5n * unit })));
      await fx.adj.connect(fx.device).challenge(fx.sign(fx.state(id, { version: 4n, paidByDevice: 5n * unit, paidByHub: 4n * unit })));
      await fx.chain.increaseTime(CHALLENGE);
      const [d, h] = await deltas(fx, token, [fx.device.address, fx.hub.address], () => fx.adj.connect(fx.relayer).settle(id));
      expect([d, h]).toEqual([5n * unit, 4n * unit]);
    });
  }

  it('settles the zero state from the deposits', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 2n * ONE_ETH);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    const [d, h] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], () => fx.adj.connect(fx.relayer).settle(id));
    expect([d, h]).toEqual([ONE_ETH, 2n * ONE_ETH]);
  });

  it('is refused one second before the deadline and accepted at it', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const { forceClosed } = await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    const deadline = forceClosed.deadline;
    const snap = await fx.chain.snapshot();
    await fx.chain.setNextBlockTimestamp(deadline - 1n);
    const args = await expectRevert(fx.adj.connect(fx.relayer).settle(id, { gasLimit: 500_000n }), 'ChallengePeriodNotOver');
    expect(args['deadline']).toBe(deadline);
    expect(await fx.chain.latestTimestamp()).toBe(deadline - 1n);
    await fx.chain.revert(snap);

    await fx.chain.setNextBlockTimestamp(deadline);
    await fx.adj.connect(fx.relayer).settle(id, { gasLimit: 500_000n });
    expect(await fx.chain.latestTimestamp()).toBe(deadline);
  });

  it('is refused twice (double settle), and on an open or unknown channel', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    expect((await expectRevert(fx.adj.connect(fx.relayer).settle(id), 'ChannelNotClosing'))['status']).toBe(1n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    await fx.adj.connect(fx.relayer).settle(id);
    expect((await expectRevert(fx.adj.connect(fx.relayer).settle(id), 'ChannelNotClosing'))['status']).toBe(3n);
    expect((await expectRevert(fx.adj.connect(fx.relayer).settle(`0x${'11'.repeat(32)}` as never), 'ChannelNotClosing'))['status']).toBe(0n);
  });

  it('never lets a settled channel id be reopened', async () => {
    const { id, params } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    await fx.adj.connect(fx.relayer).settle(id);
    await expectRevert(fx.adj.connect(fx.device).open(params, ONE_ETH), 'ChannelExists');
    await expectRevert(fx.adj.connect(fx.hub).open(params, 0n), 'ChannelExists');
  });

  it('refuses to push with too little gas left, so a caller cannot divert payouts into owed', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    await fx.chain.increaseTime(CHALLENGE);
    await expectRevert(fx.adj.connect(fx.relayer).settle(id, { gasLimit: 90_000n }), 'GasTooLow');
    expect(await fx.adj.owed(ETH, fx.device.address as Address)).toBe(0n);
    await fx.adj.connect(fx.relayer).settle(id);
  });
});
