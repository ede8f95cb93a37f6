import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/** Routed payments need the hub's own money in the payee's channel: routing picks a channel that has it. */
describe('routing and the hub’s liquidity (no policy)', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('names the cause (HUB_LIQUIDITY), and of two channels to the payee credits the one that can carry it', async () => {
    const [payer, payee] = [await w.client(2), await w.client(3)];
    const pch = await payer.openChannel({ token: w.token, deposit: 1_000_000n });
    const empty = await payee.openChannel({ token: w.token, deposit: 1_000n });
    // The hub has nothing in the payee's only channel: refused up front with the real cause, nothing moves.
    const err = await pch.pay(100n, { to: payee.address }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'HUB_LIQUIDITY' });
    expect(pch.latest.state.paidByDevice).toBe(0n);

    // A second channel to the payee, funded by the hub: the payment goes there, not to the empty one.
    const funded = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(funded.channelId, 500n);
    await pch.pay(300n, { to: payee.address });
    await waitFor(() => w.hub!.channels.get(funded.channelId)!.latest.state.paidByHub === 300n);
    expect(w.hub!.channels.get(empty.channelId)!.latest.state.paidByHub).toBe(0n);
    expect(funded.latest.state.paidByHub).toBe(300n);

    // 200 left in it: a payment of 300 cannot be carried by either channel.
    await expect(pch.pay(300n, { to: payee.address })).rejects.toMatchObject({
      code: 'HUB_LIQUIDITY',
      message: expect.stringContaining('200 available, 300 needed'),
    });
    expect(pch.latest.state.paidByDevice).toBe(300n);
  });
});

/** With `liquidity`, the hub tops up its side of device channels itself, within a budget that survives restarts. */
describe('auto-deposit liquidity policy', () => {
  let w: World;
  const liquidity = { autoDeposit: 1_000n, budget: 2_500n }; // low-water mark: 500 (half)
  const storePath = () => join(w.dir, 'liquidity-store');
  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub({ storePath: storePath(), more: { liquidity } });
  });
  afterAll(async () => w?.close());

  it('deposits when a channel opens and when it runs low, stops at the budget, and remembers what it spent', async () => {
    const [payer, payee] = [await w.client(2), await w.client(3)];
    const pch = await payer.openChannel({ token: w.token, deposit: 1_000_000n });
    await waitFor(() => w.hub!.channels.get(pch.channelId)!.funding.hub === 1_000n, 20_000); // on open
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await waitFor(() => w.hub!.channels.get(ech.channelId)!.funding.hub === 1_000n, 20_000);
    expect(w.hub!.liquidity!.spent).toBe(2_000n);

    // A routed payment leaves 400 < 500 in the payee's channel: topped up, with the 500 the budget has left.
    await pch.pay(600n, { to: payee.address });
    await waitFor(() => ech.latest.state.paidByHub === 600n);
    await waitFor(() => w.hub!.channels.get(ech.channelId)!.funding.hub === 1_500n, 20_000);
    expect(w.hub!.liquidity!.spent).toBe(2_500n);
    expect(w.hub!.liquidity!.remaining).toBe(0n);

    // Budget spent: a payment the channel cannot carry (900 left) is refused with HUB_LIQUIDITY; nothing is deposited.
    await expect(pch.pay(950n, { to: payee.address })).rejects.toMatchObject({
      code: 'HUB_LIQUIDITY',
      message: expect.stringContaining('900 available, 950 needed'),
    });
    await pch.pay(900n, { to: payee.address });
    await waitFor(() => ech.latest.state.paidByHub === 1_500n);
    await new Promise((r) => setTimeout(r, 300)); // a few scans of the policy
    expect(w.hub!.channels.get(ech.channelId)!.funding.hub).toBe(1_500n);
    expect(w.hub!.liquidity!.spent).toBe(2_500n);

    // The spend is durable: a restarted hub does not spend the budget again.
    await w.hub!.close();
    const store = openLmdbStore({ path: storePath() });
    // One reservation per deposit, each its amount: what is spent is their sum.
    const reserved = await store.loadMetaPrefix('liquidity/reserved/');
    expect(reserved.map((e) => e.value).sort()).toEqual(['1000', '1000', '500']);
    await store.close();
    const hub = await w.startHub({ storePath: storePath(), more: { liquidity } });
    expect(hub.liquidity!.spent).toBe(2_500n);
    expect(hub.liquidity!.remaining).toBe(0n);
  });
});
