import { describe, expect, it } from 'vitest';
import { clearRound, hashOrder, type Order, type PublishedClearing } from '@trickle/market';
import { trickleDomain } from '@trickle/protocol/eip712';
import { toHex } from '@trickle/protocol/hex';
import type { Signer } from '@trickle/protocol/signer';
import type { Bytes32, Domain } from '@trickle/protocol/types';
import { TrickleError } from '@trickle/protocol/errors';
import type { ClientChannel } from './channel.js';
import type { MarketSession } from './market.js';
import {
  ROUND,
  adjudicator,
  checkCredit,
  device,
  deviceMarket,
  domain,
  other,
  sendClearing,
  session,
} from './market.fixture.js';

/**
 * Red team of the device's side of spec §7, with a hostile hub played by this test (real keys, real clearing): the
 * device accepts exactly `credits[me] + Σ refunds[me]` of a hub-signed record that is the clearing of its orders,
 * holds every order it had accepted unchanged, and carries our signature — for this hub's domain and this round — on
 * any order in our name. Every refusal is BAD_CLEARING.
 */
const id = (b: string) => `0x${b.repeat(32)}` as Bytes32;

const sign = (o: Order, key: Signer, d: Domain = domain) => {
  const { arrival: _a, ...terms } = o;
  return toHex(key.signDigest(hashOrder(d, terms)));
};

/** The hub publishes `orders` (each with the given signature) and their clearing. */
function publish(
  market: MarketSession,
  orders: (Order & { sig: string })[],
  extra: Partial<PublishedClearing> = {},
): PublishedClearing {
  const record = clearRound(
    ROUND,
    orders.map(({ sig: _s, ...o }) => o),
  );
  const published: PublishedClearing = { record, orders, feeBps: 0n, refunds: [], ...extra };
  sendClearing(market, published);
  return published;
}

const credit = (p: PublishedClearing) =>
  [...p.record.credits, ...p.refunds]
    .filter((c) => c.participant === device.address)
    .reduce((s, c) => s + c.amount, 0n);

const check = (market: MarketSession, amount: bigint) => () => checkCredit(market, amount);
const refused = expect.objectContaining({ code: 'BAD_CLEARING' });

const bid = (who: Signer, b: string, price: bigint, arrival: bigint, round = ROUND): Order => ({
  id: id(b),
  participant: who.address,
  market: 'kwh',
  side: 'bid',
  quantity: 2n,
  price,
  round,
  arrival,
});

describe('red team: the device against a hostile hub’s clearing', () => {
  it('accepts exactly credits[me] + Σ refunds[me]: one base unit more or less is refused', async () => {
    const { market, mine } = await session();
    const b = bid(other, '0b', 150n, 6n);
    const p = publish(
      market,
      [
        { ...mine, sig: sign(mine, device) },
        { ...b, sig: sign(b, other) },
      ],
      {
        refunds: [{ participant: device.address, orderId: id('0e'), amount: 7n }],
      },
    );
    expect(credit(p)).toBe(2n * 125n + 7n);
    expect(check(market, credit(p))).not.toThrow();
    for (const amount of [credit(p) - 1n, credit(p) + 1n, 0n]) expect(check(market, amount)).toThrow(refused);
  });

  it('refuses a record that leaves out its accepted order (the buyer then fills elsewhere)', async () => {
    const { market } = await session();
    const rival: Order = { ...bid(other, '0c', 90n, 7n), side: 'ask', quantity: 2n };
    const b = bid(other, '0b', 150n, 6n);
    const p = publish(market, [
      { ...rival, sig: sign(rival, other) },
      { ...b, sig: sign(b, other) },
    ]);
    expect(check(market, credit(p))).toThrow(refused);
  });

  it('refuses an order in its name it did not sign, or signed for another hub domain, or for another round', async () => {
    const { market, mine } = await session();
    // A bid in the device's name: not signed by it; signed by it for another adjudicator or chain.
    const fake = bid(device, '0d', 150n, 6n);
    for (const sig of [
      sign(fake, other),
      sign(fake, device, trickleDomain(31337n, other.address)),
      sign(fake, device, trickleDomain(1n, adjudicator)),
    ]) {
      const p = publish(market, [
        { ...mine, sig: sign(mine, device) },
        { ...fake, sig },
      ]);
      expect(check(market, credit(p))).toThrow(refused);
    }
  });

  it('refuses a record with an order of another round in it (a replayed order of an earlier round) as BAD_CLEARING', async () => {
    const { market, mine } = await session();
    // An order the device really signed, for the round before: replayed into this round's record.
    const old = bid(device, '0f', 150n, 1n, ROUND - 1n);
    const orders = [
      { ...mine, sig: sign(mine, device) },
      { ...old, sig: sign(old, device) },
    ];
    // The hub signs a record of this round whatever its orders say (clearRound itself would refuse them).
    const record = clearRound(ROUND, [mine]);
    sendClearing(market, { record, orders, feeBps: 0n, refunds: [] });
    expect(check(market, 0n)).toThrow(refused);
  });

  it('holds an ask the hub never answered, or refused, to the fee announced when it was signed', async () => {
    for (const answer of [new TrickleError('TIMEOUT', 'no answer'), new TrickleError('BAD_ORDER', 'refused')]) {
      let signed: Order | undefined;
      const market = deviceMarket((order) => {
        signed = order;
        return answer;
      });
      market.onFrame({ t: 'round', id: 0, round: ROUND, feeBps: 0n });
      await expect(
        market.submitOrder({} as ClientChannel, { market: 'kwh', side: 'ask', quantity: 2n, price: 100n }),
      ).rejects.toBe(answer);
      // The hub clears the ask anyway, at a fee of 100% against a bid of its own: the seller would be credited nothing.
      const b = bid(other, '0b', 150n, 6n);
      const p = publish(
        market,
        [
          { ...signed!, sig: sign(signed!, device) },
          { ...b, sig: sign(b, other) },
        ],
        { feeBps: 10_000n, record: clearRound(ROUND, [signed!, b], { feeBps: 10_000n }) },
      );
      expect(credit(p)).toBe(0n);
      expect(check(market, 0n)).toThrow(
        expect.objectContaining({
          code: 'BAD_CLEARING',
          details: expect.objectContaining({ announced: 0n, published: 10_000n }),
        }),
      );
    }
  });
});
