import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { decodeRevertData } from '@trickle/chain/errors';
import { adjudicatorInterface } from '@trickle/chain/events';
import type { Address, Hex, SignedState } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, MAX_UINT256, type Fixture } from './fixture.js';

let fx: Fixture;
let ree: TestToken;
const UNIT = 10n ** 18n;
beforeAll(async () => {
  fx = await createFixture();
  ree = await deployToken(fx.deployer, 'reentrant');
  for (const w of [fx.device, fx.hub]) {
    await mintTestToken(fx.deployer, ree.address, w.address as Address, 1000n * UNIT);
    await approve(w, ree.address, fx.adj.address, MAX_UINT256);
  }
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

async function arm(payload: string, bubble = false): Promise<void> {
  await (await ree.contract.getFunction('arm').send(fx.adj.address, payload, bubble)).wait();
}
async function lastAttempt(): Promise<{ attempts: bigint; succeeded: boolean; error: string | undefined }> {
  const c = ree.contract;
  const data = (await c.getFunction('lastReturnData').staticCall()) as Hex;
  return {
    attempts: (await c.getFunction('attempts').staticCall()) as bigint,
    succeeded: (await c.getFunction('lastSucceeded').staticCall()) as boolean,
    error: decodeRevertData(data)?.error,
  };
}
const call = (fn: string, args: unknown[]): string => adjudicatorInterface.encodeFunctionData(fn, args);
const signedArg = (s: SignedState) => [s.state, s.deviceSig, s.hubSig];

describe('reentrant token', () => {
  it('cannot re-enter during a deposit: the guard refuses and the deposit is credited once', async () => {
    const { id } = await fx.open(ree.address, 10n * UNIT, 0n);
    await arm(call('deposit', [id, UNIT]));
    const r = await fx.adj.connect(fx.hub).deposit(id, 5n * UNIT);
    expect(r.total).toBe(5n * UNIT);
    expect(await lastAttempt()).toEqual({ attempts: 1n, succeeded: false, error: 'ReentrancyGuardReentrantCall' });
    expect(await fx.balance(ree.address, fx.adj.address)).toBe(15n * UNIT);
  });

  it('cannot re-enter during a payout to settle another channel or close the same one twice', async () => {
    const other = await fx.open(ree.address, 10n * UNIT, 10n * UNIT);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(other.id) });
    await fx.chain.increaseTime(CHALLENGE); // `other` is settleable by anyone: only the guard stops the token
    const { id } = await fx.open(ree.address, 10n * UNIT, 10n * UNIT);
    const final = fx.sign(fx.state(id, { version: 1n, paidByDevice: 4n * UNIT, isFinal: true }));

    let snap = await fx.chain.snapshot();
    const reg = (await fx.adj.getChannel(other.id)).registration;
    for (const payload of [call('settle', [other.id, reg]), call('cooperativeClose', signedArg(final))]) {
      await fx.chain.revert(snap);
      snap = await fx.chain.snapshot();
      await arm(payload);
      const [d, h] = await deltas(fx, ree.address, [fx.device.address, fx.hub.address], () =>
        fx.adj.connect(fx.relayer).cooperativeClose(final),
      );
      expect([d, h]).toEqual([6n * UNIT, 14n * UNIT]);
      const attempt = await lastAttempt();
      expect(attempt).toMatchObject({ succeeded: false, error: 'ReentrancyGuardReentrantCall' });
      expect(attempt.attempts).toBe(2n); // one per payout push
      expect((await fx.adj.getChannel(other.id)).status).toBe('closing');
      expect(await fx.balance(ree.address, fx.adj.address)).toBe(20n * UNIT); // only `other`'s deposits remain
    }
  });

  it('when the token makes the payout revert, both payouts end up owed and nothing is lost', async () => {
    const { id } = await fx.open(ree.address, 10n * UNIT, 10n * UNIT);
    await arm(call('withdraw', [ree.address, fx.outsider.address]), true);
    const r = await fx.adj
      .connect(fx.relayer)
      .cooperativeClose(fx.sign(fx.state(id, { version: 1n, paidByHub: UNIT, isFinal: true })));
    expect(r.events.filter((e) => e.name === 'PayoutDeferred')).toHaveLength(2);
    expect(await fx.adj.owed(ree.address, fx.device.address as Address)).toBe(11n * UNIT);
    expect(await fx.adj.owed(ree.address, fx.hub.address as Address)).toBe(9n * UNIT);
    await (
      await ree.contract.getFunction('arm').send('0x0000000000000000000000000000000000000000', '0x', false)
    ).wait();
    await fx.adj.connect(fx.device).withdraw(ree.address);
    await fx.adj.connect(fx.hub).withdraw(ree.address);
    expect(await fx.balance(ree.address, fx.adj.address)).toBe(0n);
  });
});
