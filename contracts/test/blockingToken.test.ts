import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import type { Address } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, expectRevert, MAX_UINT256, type Fixture } from './fixture.js';

let fx: Fixture;
let blk: TestToken;
const UNIT = 10n ** 18n;
beforeAll(async () => {
  fx = await createFixture();
  blk = await deployToken(fx.deployer, 'blocking');
  for (const w of [fx.device, fx.hub]) {
    await mintTestToken(fx.deployer, blk.address, w.address as Address, 1000n * UNIT);
    await approve(w, blk.address, fx.adj.address, MAX_UINT256);
  }
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

async function block(account: string): Promise<void> {
  await (await blk.contract.getFunction('setBlocked').send(account)).wait();
}

describe('token that blocks one recipient', () => {
  it('pays the other party at once and lets the blocked one withdraw later, to another address', async () => {
    const { id } = await fx.open(blk.address, 100n * UNIT, 100n * UNIT);
    await block(fx.device.address);
    const final = fx.sign(fx.state(id, { version: 5n, paidByDevice: 30n * UNIT, isFinal: true }));
    const [d, h] = await deltas(fx, blk.address, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.relayer).cooperativeClose(final);
      expect(r.events.map((e) => e.name)).toEqual(['Closed', 'PayoutDeferred']);
      expect(r.events[1]).toMatchObject({
        channelId: id,
        token: blk.address,
        recipient: fx.device.address,
        amount: 70n * UNIT,
      });
    });
    expect([d, h]).toEqual([0n, 130n * UNIT]);
    expect(await fx.adj.owed(blk.address, fx.device.address as Address)).toBe(70n * UNIT);

    // To itself the token still refuses (and the debt stays); to another address it goes through.
    await expectRevert(fx.adj.connect(fx.device).withdraw(blk.address), 'RecipientBlocked');
    expect(await fx.adj.owed(blk.address, fx.device.address as Address)).toBe(70n * UNIT);
    const [o] = await deltas(fx, blk.address, [fx.outsider.address], () =>
      fx.adj.connect(fx.device).withdraw(blk.address, fx.outsider.address as Address),
    );
    expect(o).toBe(70n * UNIT);
    expect(await fx.balance(blk.address, fx.adj.address)).toBe(0n);
  });

  it('does the same on settlement when the hub is the blocked one', async () => {
    const { id } = await fx.open(blk.address, 100n * UNIT, 50n * UNIT);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 2n, paidByHub: 20n * UNIT })));
    await block(fx.hub.address);
    await fx.chain.increaseTime(CHALLENGE);
    const [d] = await deltas(fx, blk.address, [fx.device.address], () => fx.adj.connect(fx.relayer).settle(id));
    expect(d).toBe(120n * UNIT);
    expect(await fx.adj.owed(blk.address, fx.hub.address as Address)).toBe(30n * UNIT);
    await block(fx.outsider.address); // unblock the hub
    await fx.adj.connect(fx.hub).withdraw(blk.address);
    expect(await fx.balance(blk.address, fx.adj.address)).toBe(0n);
  });
});
