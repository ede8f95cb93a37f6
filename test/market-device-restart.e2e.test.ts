import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { fileChannelStore } from '@trickle/client/store';
import type { TrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * A device restarted while its round is open (spec §7): the orders the hub accepted and the escrows it paid are read
 * back from the device's store, and the round's credits — the clearing of a real hub, its refunds signed with the
 * record — settle them: nothing left kept, nothing reported.
 */
describe('market: a device restarted mid-round', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub({ market: { roundMs: 60_000, feeBps: 0n } });
  });
  afterAll(async () => w?.close());

  async function trader(i: number): Promise<{ c: TrickleClient; ch: ClientChannel }> {
    const c = await w.client(i);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 500_000n);
    return { c, ch };
  }

  it('checks, after the restart, the orders and escrows placed before it; the round settles every one', async () => {
    const seller = await trader(2);
    const buyer = await trader(3);
    await seller.c.market.ready();
    const r = seller.c.market.round;
    const ask = await seller.c.market.submitOrder(seller.ch, {
      market: 'kwh',
      side: 'ask',
      quantity: 3n,
      price: 50n,
      round: r,
    });
    const bid = await buyer.c.market.submitOrder(buyer.ch, {
      market: 'kwh',
      side: 'bid',
      quantity: 3n,
      price: 60n,
      round: r,
    });
    // A bid the hub refuses after its escrow was paid (a round it does not take orders for): refunded whole.
    await expect(
      buyer.c.market.submitOrder(buyer.ch, { market: 'kwh', side: 'bid', quantity: 2n, price: 10n, round: r + 5n }),
    ).rejects.toMatchObject({ code: 'BAD_ORDER' });
    const paidBefore = buyer.ch.latest.state;

    // Both devices stop and start again on their stores.
    await seller.c.disconnect();
    await buyer.c.disconnect();
    const seller2 = await w.client(2);
    const buyer2 = await w.client(3);
    expect(seller2.market.pending().map((o) => o.id)).toEqual([ask.id]);
    expect(buyer2.market.pending()).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: bid.id, arrival: bid.arrival, escrow: 180n }),
        expect.objectContaining({ escrow: 20n, refused: true }),
      ]),
    );
    const errors: TrickleError[] = [];
    seller2.market.onError((e) => errors.push(e));
    buyer2.market.onError((e) => errors.push(e));

    const record = await w.hub!.market!.closeRound();
    expect(record.markets[0]).toMatchObject({ price: 55n, volume: 3n });
    const sch = seller2.channel(seller.ch.channelId)!;
    const bch = buyer2.channel(buyer.ch.channelId)!;
    await waitFor(() => sch.latest.state.round >= r && bch.latest.state.round >= r, 10_000);
    await waitFor(() => seller2.market.pending().length === 0 && buyer2.market.pending().length === 0, 5_000);
    // The buyer got back the unused part of its bid's escrow (3 × 5) and the refused bid's whole escrow (20).
    expect(bch.latest.state.paidByHub - paidBefore.paidByHub).toBe(35n);
    expect(sch.latest.state.paidByHub).toBe(165n);
    expect(errors).toEqual([]);
    // Forgotten in the stores too (written after the check that settled them).
    const kept = (i: number) => fileChannelStore(join(w.dir, `device-${i}`)).market!.loadOrders();
    for (let k = 0; k < 100 && (await kept(2)).length + (await kept(3)).length > 0; k++)
      await new Promise((res) => setTimeout(res, 20));
    expect([await kept(2), await kept(3)]).toEqual([[], []]);
  });
});
