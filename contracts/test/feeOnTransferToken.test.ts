import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import type { Address } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, MAX_UINT256, type Fixture } from './fixture.js';

let fx: Fixture;
let fot: TestToken;
const UNIT = 10n ** 18n;
beforeAll(async () => {
  fx = await createFixture();
  fot = await deployToken(fx.deployer, 'feeOnTransfer', { feeBps: 100n }); // 1% burnt per transfer
  for (const w of [fx.device, fx.hub]) {
    await mintTestToken(fx.deployer, fot.address, w.address as Address, 1000n * UNIT);
    await approve(w, fot.address, fx.adj.address, MAX_UINT256);
  }
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

describe('fee-on-transfer token', () => {
  it('credits what actually arrived, on open and on top-up', async () => {
    const params = fx.params(fot.address);
    const opened = await fx.adj.connect(fx.device).open(params, 100n * UNIT);
    expect(opened.deposit).toBe(99n * UNIT);
    const topUp = await fx.adj.connect(fx.hub).deposit(opened.channelId, 50n * UNIT);
    expect([topUp.credited, topUp.total]).toEqual([(50n * UNIT * 99n) / 100n, (50n * UNIT * 99n) / 100n]);
    const ch = await fx.adj.getChannel(opened.channelId);
    expect([ch.depositDevice, ch.depositHub]).toEqual([99n * UNIT, 49_500_000_000_000_000_000n]);
    expect(await fx.balance(fot.address, fx.adj.address)).toBe(ch.depositDevice + ch.depositHub);
  });

  it('pays out exactly the credited deposits, leaving nothing behind (cooperative and settled)', async () => {
    const a = await fx.adj.connect(fx.device).open(fx.params(fot.address), 100n * UNIT);
    await fx.adj.connect(fx.hub).deposit(a.channelId, 10n * UNIT);
    const final = fx.sign(fx.state(a.channelId, { version: 2n, paidByDevice: 20n * UNIT, isFinal: true }));
    const r = await fx.adj.connect(fx.relayer).cooperativeClose(final);
    expect(r.closed).toMatchObject({ devicePayout: 79n * UNIT, hubPayout: 9_900_000_000_000_000_000n + 20n * UNIT });
    expect(await fx.balance(fot.address, fx.adj.address)).toBe(0n);

    const b = await fx.adj.connect(fx.hub).open(fx.params(fot.address), 10n * UNIT);
    await fx.adj.connect(fx.device).forceClose({ state: fx.state(b.channelId) });
    await fx.chain.increaseTime(CHALLENGE);
    const [h] = await deltas(fx, fot.address, [fx.hub.address], () => fx.adj.connect(fx.relayer).settle(b.channelId));
    expect(h).toBe((99n * UNIT * 10n * 99n) / 10_000n); // 9.9 credited, 1% burnt again on the way out
    expect(await fx.balance(fot.address, fx.adj.address)).toBe(0n);
  });
});
