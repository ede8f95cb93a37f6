import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import type { Address } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, MAX_UINT256, USDT, type Fixture } from './fixture.js';

let fx: Fixture;
let reb: TestToken;
const UNIT = 10n ** 18n;
beforeAll(async () => {
  fx = await createFixture();
  reb = await deployToken(fx.deployer, 'rebasing');
  for (const w of [fx.device, fx.hub]) {
    await mintTestToken(fx.deployer, reb.address, w.address as Address, 1000n * UNIT);
    await approve(w, reb.address, fx.adj.address, MAX_UINT256);
  }
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

const rebase = async (index: bigint) => (await reb.contract.getFunction('rebase').send(index)).wait();

describe('rebasing token (not supported: see contracts/README.md)', () => {
  it('after a negative rebase a close still completes: the push the adjudicator cannot cover is owed, other tokens untouched', async () => {
    const usdt = await fx.open(fx.usdt.address, 10n * USDT, 10n * USDT);
    const { id } = await fx.open(reb.address, 10n * UNIT, 10n * UNIT);
    await rebase(5n * 10n ** 17n); // every balance halves: the adjudicator holds 10, the channel's deposits say 20
    const [d, h] = await deltas(fx, reb.address, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj
        .connect(fx.relayer)
        .cooperativeClose(fx.sign(fx.state(id, { version: 1n, paidByHub: 2n * UNIT, isFinal: true })));
      expect(r.closed).toMatchObject({ devicePayout: 12n * UNIT, hubPayout: 8n * UNIT });
      expect(r.events.filter((e) => e.name === 'PayoutDeferred')).toHaveLength(1);
    });
    // The device's 12 did not fit in the 10 held and is owed (stranded until the token grows back); the hub got 8.
    expect([d, h]).toEqual([0n, 8n * UNIT]);
    expect(await fx.adj.owed(reb.address, fx.device.address as Address)).toBe(12n * UNIT);
    expect(await fx.balance(reb.address, fx.adj.address)).toBe(2n * UNIT);
    // The USDT-like channel is whole: its force close and settle pay exactly.
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(usdt.id, { version: 1n, paidByDevice: USDT })));
    await fx.chain.increaseTime(CHALLENGE);
    const [du, hu] = await deltas(fx, fx.usdt.address, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.relayer).settle(usdt.id),
    );
    expect([du, hu]).toEqual([9n * USDT, 11n * USDT]);
  });

  it('after a positive rebase the surplus stays in the adjudicator, credited to no one', async () => {
    const { id } = await fx.open(reb.address, 10n * UNIT, 10n * UNIT);
    await rebase(2n * 10n ** 18n); // every balance doubles
    const [d, h] = await deltas(fx, reb.address, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(fx.state(id, { version: 1n, isFinal: true }))),
    );
    expect([d, h]).toEqual([10n * UNIT, 10n * UNIT]);
    expect(await fx.balance(reb.address, fx.adj.address)).toBe(20n * UNIT);
  });
});
