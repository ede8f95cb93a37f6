import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { deployToken, type TestToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import type { Address } from '@trickle/protocol/types';
import { CHALLENGE, createFixture, deltas, MAX_UINT256, type Fixture } from './fixture.js';

let fx: Fixture;
let burn: TestToken;
let pushGas: bigint;
const UNIT = 10n ** 18n;
beforeAll(async () => {
  fx = await createFixture();
  burn = await deployToken(fx.deployer, 'gasBurning');
  for (const w of [fx.device, fx.hub]) {
    await mintTestToken(fx.deployer, burn.address, w.address as Address, 1000n * UNIT);
    await approve(w, burn.address, fx.adj.address, MAX_UINT256);
  }
  pushGas = (await fx.adj.contract.getFunction('TOKEN_PUSH_GAS').staticCall()) as bigint;
  await fx.rebase();
});
afterAll(() => fx.close());
beforeEach(() => fx.reset());

const victim = async (account: string) => (await burn.contract.getFunction('setVictim').send(account)).wait();

describe('token whose transfer burns all gas (not supported: see contracts/README.md)', () => {
  it("the other party's settle stays cheap: the burning push gets TOKEN_PUSH_GAS and is owed instead", async () => {
    const { id } = await fx.open(burn.address, 10n * UNIT, 10n * UNIT);
    await fx.adj.connect(fx.device).forceClose(fx.sign(fx.state(id, { version: 1n, paidByDevice: 3n * UNIT })));
    await fx.chain.increaseTime(CHALLENGE);
    await victim(fx.device.address); // a token that turns against the device burns whatever its push is given
    let gasUsed = 0n;
    const [d, h] = await deltas(fx, burn.address, [fx.device.address, fx.hub.address], async () => {
      const r = await fx.adj.connect(fx.hub).settle(id, { gasLimit: 5_000_000n }); // however much gas the hub offers
      gasUsed = r.gasUsed;
      expect(r.events.filter((e) => e.name === 'PayoutDeferred')).toHaveLength(1);
    });
    expect([d, h]).toEqual([0n, 13n * UNIT]);
    expect(gasUsed).toBeLessThan(pushGas + 80_000n); // one capped push plus the settle itself, not the 5M offered
    expect(await fx.adj.owed(burn.address, fx.device.address as Address)).toBe(7n * UNIT);
    // Once the token behaves again, the device pulls what it is owed.
    await victim('0x0000000000000000000000000000000000000000');
    await fx.adj.connect(fx.device).withdraw(burn.address);
    expect(await fx.balance(burn.address, fx.adj.address)).toBe(0n);
  });

  it('a cooperative close by a relayer is bounded the same way when both pushes burn', async () => {
    const { id } = await fx.open(burn.address, 10n * UNIT, 10n * UNIT);
    await victim(fx.hub.address);
    const r = await fx.adj
      .connect(fx.relayer)
      .cooperativeClose(fx.sign(fx.state(id, { version: 1n, isFinal: true })), { gasLimit: 5_000_000n });
    expect(r.events.filter((e) => e.name === 'PayoutDeferred')).toHaveLength(1);
    expect(r.gasUsed).toBeLessThan(pushGas + 100_000n);
  });
});
