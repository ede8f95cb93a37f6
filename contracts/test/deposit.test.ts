import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ChannelId } from '@trickle/protocol/types';
import { createFixture, decoded, deltas, ETH, expectRevert, ONE_ETH, USDT, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('deposit', () => {
  it('tops up ETH by both participants and reports each total', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const byHub = await fx.adj.connect(fx.hub).deposit(id, 3n * ONE_ETH);
    expect(byHub.credited).toBe(3n * ONE_ETH);
    expect(byHub.total).toBe(3n * ONE_ETH);
    expect(byHub.events[0]).toMatchObject({
      name: 'Deposited',
      channelId: id,
      participant: fx.hub.address,
      amount: 3n * ONE_ETH,
    });
    const byDevice = await fx.adj.connect(fx.device).deposit(id, ONE_ETH / 2n);
    expect(byDevice.total).toBe(ONE_ETH + ONE_ETH / 2n);
    const ch = await fx.adj.getChannel(id);
    expect([ch.depositDevice, ch.depositHub]).toEqual([ONE_ETH + ONE_ETH / 2n, 3n * ONE_ETH]);
    expect(await fx.balance(ETH, fx.adj.address)).toBe(ONE_ETH + ONE_ETH / 2n + 3n * ONE_ETH);
  });

  it('tops up a USDT-like channel by both participants, pulling the tokens', async () => {
    const { id } = await fx.open(fx.usdt.address, 10n * USDT, 0n);
    const [hubDelta, adjDelta] = await deltas(fx, fx.usdt.address, [fx.hub.address, fx.adj.address], async () => {
      await fx.adj.connect(fx.hub).deposit(id, 7n * USDT, { token: fx.usdt.address });
      await fx.adj.connect(fx.device).deposit(id, 1n * USDT); // token looked up on-chain
    });
    expect(hubDelta).toBe(-7n * USDT);
    expect(adjDelta).toBe(8n * USDT);
    const ch = await fx.adj.getChannel(id);
    expect([ch.depositDevice, ch.depositHub]).toEqual([11n * USDT, 7n * USDT]);
  });

  it('refuses an outsider', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await expectRevert(fx.adj.connect(fx.outsider).deposit(id, 1n, { token: ETH }), 'NotParticipant');
  });

  it('refuses a zero top-up', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await expectRevert(fx.adj.connect(fx.hub).deposit(id, 0n, { token: ETH }), 'ZeroDeposit');
  });

  it('refuses a top-up once a force close is pending, after close, and for an unknown id', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(id) });
    let args = await expectRevert(fx.adj.connect(fx.hub).deposit(id, 1n, { token: ETH }), 'ChannelNotOpen');
    expect(args['status']).toBe(2n);
    const other = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(fx.state(other.id, { version: 1n, isFinal: true })));
    args = await expectRevert(fx.adj.connect(fx.hub).deposit(other.id, 1n, { token: ETH }), 'ChannelNotOpen');
    expect(args['status']).toBe(3n);
    const unknown = `0x${'ab'.repeat(32)}` as ChannelId;
    args = await expectRevert(fx.adj.connect(fx.hub).deposit(unknown, 1n, { token: ETH }), 'ChannelNotOpen');
    expect(args['status']).toBe(0n);
  });

  it('refuses mismatched ETH value', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    const c = fx.adj.connect(fx.hub).contract;
    await expectRevert(decoded(c.getFunction('deposit').send(id, 2n, { value: 1n })), 'ValueMismatch');
  });

  it('refuses a total above 2^96 - 1 for one participant', async () => {
    const huge = 1n << 96n;
    await fx.chain.provider.send('hardhat_setBalance', [fx.hub.address, `0x${(huge * 2n).toString(16)}`]);
    const { id } = await fx.open(ETH, ONE_ETH, 0n);
    await fx.adj.connect(fx.hub).deposit(id, huge - 2n, { token: ETH });
    await fx.adj.connect(fx.hub).deposit(id, 1n, { token: ETH });
    const args = await expectRevert(fx.adj.connect(fx.hub).deposit(id, 1n, { token: ETH }), 'DepositTooLarge');
    expect(args['total']).toBe(huge);
  });
});
