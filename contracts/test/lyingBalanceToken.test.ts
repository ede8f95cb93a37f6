import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import type { Address } from '@trickle/protocol/types';
import { createFixture, deltas, ETH, MAX_UINT256, ONE_ETH, type Fixture } from './fixture.js';

let fx: Fixture;
let lie: TestToken;
const UNIT = 10n ** 18n;
beforeAll(async () => {
  fx = await createFixture();
  lie = await deployToken(fx.deployer, 'lyingBalance');
  for (const w of [fx.device, fx.hub]) {
    await mintTestToken(fx.deployer, lie.address, w.address as Address, 1000n * UNIT);
    await approve(w, lie.address, fx.adj.address, MAX_UINT256);
  }
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

async function setLie(offset: bigint, bonus: bigint): Promise<void> {
  await (await lie.contract.getFunction('setLie').send(fx.adj.address, offset, bonus)).wait();
}

describe('token whose balanceOf lies (not supported: see contracts/README.md)', () => {
  it('a deposit that seems to bring in more than asked is credited only what was asked', async () => {
    await setLie(0n, 1000n * UNIT); // every transfer into the adjudicator looks 1,000 tokens bigger
    const { id } = await fx.open(lie.address, 10n * UNIT, 0n);
    expect((await fx.adj.getChannel(id)).depositDevice).toBe(10n * UNIT);
    const r = await fx.adj.connect(fx.hub).deposit(id, 5n * UNIT);
    expect(r.total).toBe(5n * UNIT);
  });

  it('a deposit that seems to bring in less is credited less: the depositor loses, the channel stays solvent', async () => {
    const { id } = await fx.open(lie.address, 10n * UNIT, 0n);
    await setLie(0n, -3n * UNIT); // each transfer in seems 3 tokens smaller than it is
    const r = await fx.adj.connect(fx.hub).deposit(id, 5n * UNIT);
    expect(r.total).toBe(2n * UNIT);
    expect(await lie.contract.getFunction('totalSupply').staticCall()).toBe(2000n * UNIT);
  });

  it('the damage stays in that token: channels of other tokens close exactly', async () => {
    const eth = await fx.open(ETH, ONE_ETH, ONE_ETH);
    await setLie(0n, 1000n * UNIT);
    const { id } = await fx.open(lie.address, 10n * UNIT, 10n * UNIT);
    const [d, h] = await deltas(fx, lie.address, [fx.device.address, fx.hub.address], () =>
      fx.adj
        .connect(fx.relayer)
        .cooperativeClose(fx.sign(fx.state(id, { version: 1n, paidByDevice: 4n * UNIT, isFinal: true }))),
    );
    expect([d, h]).toEqual([6n * UNIT, 14n * UNIT]);
    const [de, he] = await deltas(fx, ETH, [fx.device.address, fx.hub.address], () =>
      fx.adj.connect(fx.relayer).cooperativeClose(fx.sign(fx.state(eth.id, { version: 1n, isFinal: true }))),
    );
    expect([de, he]).toEqual([ONE_ETH, ONE_ETH]);
  });
});
