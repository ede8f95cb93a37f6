import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { Address } from '@trickle/protocol/types';
import { createFixture, deltas, ETH, expectRevert, ONE_ETH, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await createFixture();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

const REJECT_ETH = '0x60006000fd'; // PUSH1 0 PUSH1 0 REVERT: any call, including a plain ETH transfer, reverts

describe('withdraw', () => {
  it('refuses when nothing is owed', async () => {
    const args = await expectRevert(fx.adj.connect(fx.device).withdraw(ETH), 'NothingOwed');
    expect(args).toMatchObject({ token: ETH, account: fx.device.address });
  });

  it('refuses the zero address as recipient', async () => {
    await expectRevert(fx.adj.connect(fx.device).withdraw(ETH, ETH), 'ZeroRecipient');
  });

  it('pays the other side at once when one recipient rejects ETH, and lets it pull later to another address', async () => {
    const { id } = await fx.open(ETH, ONE_ETH, ONE_ETH);
    const device = fx.device.address as Address;
    // The device's address rejects ETH (as a contract wallet without a receive function would).
    await fx.chain.provider.send('hardhat_setCode', [device, REJECT_ETH]);
    const final = fx.sign(fx.state(id, { version: 3n, paidByHub: ONE_ETH / 4n, isFinal: true }));
    const [d, h] = await deltas(fx, ETH, [device, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.relayer).cooperativeClose(final);
      expect(r.events.map((e) => e.name)).toEqual(['Closed', 'PayoutDeferred']);
      expect(r.events[1]).toMatchObject({
        channelId: id,
        token: ETH,
        recipient: device,
        amount: ONE_ETH + ONE_ETH / 4n,
      });
    });
    expect([d, h]).toEqual([0n, ONE_ETH - ONE_ETH / 4n]);
    expect(await fx.adj.owed(ETH, device)).toBe(ONE_ETH + ONE_ETH / 4n);
    await fx.chain.provider.send('hardhat_setCode', [device, '0x']);

    // Pulling to an address that rejects ETH fails and keeps the debt.
    const rejecting = fx.outsider.address as Address;
    await fx.chain.provider.send('hardhat_setCode', [rejecting, REJECT_ETH]);
    await expectRevert(fx.adj.connect(fx.device).withdraw(ETH, rejecting), 'EthTransferFailed');
    await fx.chain.provider.send('hardhat_setCode', [rejecting, '0x']);
    expect(await fx.adj.owed(ETH, device)).toBe(ONE_ETH + ONE_ETH / 4n);

    const [o] = await deltas(fx, ETH, [fx.outsider.address], async () => {
      const r = await fx.adj.connect(fx.device).withdraw(ETH, fx.outsider.address as Address);
      expect(r.amount).toBe(ONE_ETH + ONE_ETH / 4n);
      expect(r.events[0]).toMatchObject({ name: 'Withdrawn', token: ETH, account: device, to: fx.outsider.address });
    });
    expect(o).toBe(ONE_ETH + ONE_ETH / 4n);
    expect(await fx.adj.owed(ETH, device)).toBe(0n);
    await expectRevert(fx.adj.connect(fx.device).withdraw(ETH), 'NothingOwed');
  });
});
