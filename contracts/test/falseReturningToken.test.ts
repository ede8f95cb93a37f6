import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import type { Address } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, expectRevert, MAX_UINT256, type Fixture } from './fixture.js';

/**
 * A token that reports failure by returning `false` (moving nothing) instead of reverting. contracts/README.md:
 * deposits go through SafeERC20 (a `false` is a revert: nothing is credited), and a payout push counts as done only
 * on no return data or a 32-byte `true`, so a `false` push is owed, never taken as paid; `withdraw` goes through
 * SafeERC20 too (a `false` reverts and the debt stays).
 */
let fx: Fixture;
let fls: TestToken;
const UNIT = 10n ** 18n;

beforeAll(async () => {
  fx = await createFixture();
  fls = await deployToken(fx.deployer, 'falseReturning');
  for (const w of [fx.device, fx.hub]) {
    await mintTestToken(fx.deployer, fls.address, w.address as Address, 1000n * UNIT);
    await approve(w, fls.address, fx.adj.address, MAX_UINT256);
  }
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

async function refuse(account: string | undefined): Promise<void> {
  const who = account ?? '0x0000000000000000000000000000000000000000';
  await (await fls.contract.getFunction('setRefused').send(who, account !== undefined)).wait();
}

describe('a token whose transfers return false', () => {
  it('a deposit whose transferFrom returns false reverts: no channel, nothing credited', async () => {
    await refuse(fx.device.address);
    await expectRevert(fx.adj.connect(fx.device).open(fx.params(fls.address), 10n * UNIT), 'SafeERC20FailedOperation');
    await refuse(undefined);
    const { id } = await fx.open(fls.address, 10n * UNIT, 0n);
    await refuse(fx.hub.address);
    await expectRevert(
      fx.adj.connect(fx.hub).deposit(id, 5n * UNIT, { token: fls.address }),
      'SafeERC20FailedOperation',
    );
    const c = await fx.adj.getChannel(id);
    expect([c.depositDevice, c.depositHub]).toEqual([10n * UNIT, 0n]);
    expect(await fx.balance(fls.address, fx.adj.address)).toBe(10n * UNIT);
  });

  it('a push that returns false is owed, not taken as paid; the other side is paid at once; withdraw reverts while it still returns false, then pays', async () => {
    const { id } = await fx.open(fls.address, 10n * UNIT, 10n * UNIT);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 3n, paidByDevice: 2n * UNIT })));
    await fx.chain.increaseTime(CHALLENGE);
    await refuse(fx.device.address);
    const [d, h] = await deltas(fx, fls.address, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.relayer).settle(id);
      expect(r.events.map((e) => e.name)).toEqual(['Closed', 'PayoutDeferred']);
      expect(r.events[1]).toMatchObject({ recipient: fx.device.address, amount: 8n * UNIT });
    });
    expect([d, h]).toEqual([0n, 12n * UNIT]);
    expect(await fx.adj.owed(fls.address, fx.device.address as Address)).toBe(8n * UNIT);
    expect(await fx.balance(fls.address, fx.adj.address)).toBe(8n * UNIT);

    // The adjudicator is the sender of a withdraw: refusing it makes transfer return false.
    await refuse(fx.adj.address);
    await expectRevert(fx.adj.connect(fx.device).withdraw(fls.address), 'SafeERC20FailedOperation');
    expect(await fx.adj.owed(fls.address, fx.device.address as Address)).toBe(8n * UNIT);
    await refuse(undefined);
    const [paid] = await deltas(fx, fls.address, [fx.device.address], () =>
      fx.adj.connect(fx.device).withdraw(fls.address),
    );
    expect(paid).toBe(8n * UNIT);
    expect(await fx.balance(fls.address, fx.adj.address)).toBe(0n);
  });
});
