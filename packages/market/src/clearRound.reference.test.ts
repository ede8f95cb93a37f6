import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clearRound } from './clearRound.js';
import { hashClearing } from './hashClearing.js';
import { escrowFor } from './order.js';
import type { Order } from './order.js';
import { addr, oid } from './orders.fixture.js';
import type { ClearingRecord, MarketClearing } from './record.js';
import { verifyClearing } from './verifyClearing.js';

/**
 * An auditor's reference, independent of clearRound's walk: for small books it enumerates every feasible allocation
 * (the optimum of gains from trade) and every candidate price (the Walrasian interval that supports the allocation
 * clearRound chose), then checks the record against them and against the money rules, with prices as a 6-decimal
 * token (USDC) and an 18-decimal one (ETH, beyond 2^53) would have them.
 */

const ROUND = 9n;
const WHO = [addr(1), addr(2), addr(3)];
/** Token scales: plain units; 6 decimals (1.000001 USDC a unit step); 18 decimals (0.001 ETH + 7 wei a unit step). */
const SCALES = [
  { unit: 1n, offset: 0n },
  { unit: 1_000_001n, offset: 999_999n },
  { unit: 10n ** 15n + 7n, offset: 10n ** 18n },
];

interface Book {
  orders: Order[];
  feeBps: bigint;
}

const bookArb: fc.Arbitrary<Book> = fc
  .record({
    raw: fc.array(
      fc.record({
        who: fc.nat({ max: WHO.length - 1 }),
        market: fc.constantFrom('a', 'b'),
        side: fc.constantFrom('bid' as const, 'ask' as const),
        quantity: fc.integer({ min: 1, max: 3 }),
        price: fc.integer({ min: 1, max: 5 }),
        arrival: fc.nat({ max: 3 }),
      }),
      { maxLength: 7 },
    ),
    scale: fc.constantFrom(...SCALES),
    feeBps: fc.constantFrom(0n, 1n, 30n, 9_999n, 10_000n),
  })
  .map(({ raw, scale, feeBps }) => ({
    feeBps,
    orders: raw.map((r, k) => ({
      // ids descending in k, so that the id tie-break often disagrees with the list order
      id: oid(1000 - k),
      participant: WHO[r.who]!,
      market: r.market,
      side: r.side,
      quantity: BigInt(r.quantity),
      price: scale.offset + BigInt(r.price) * scale.unit,
      round: ROUND,
      arrival: BigInt(r.arrival),
    })),
  }));

/** The largest Σ bid limit·x − Σ ask limit·y over every allocation with 0 ≤ x ≤ quantity and Σx = Σy. */
function optimum(book: readonly Order[]): bigint {
  let best = 0n;
  const go = (k: number, net: bigint, value: bigint): void => {
    if (k === book.length) {
      if (net === 0n && value > best) best = value;
      return;
    }
    const o = book[k]!;
    for (let x = 0n; x <= o.quantity; x++)
      go(k + 1, net + (o.side === 'bid' ? x : -x), value + (o.side === 'bid' ? 1n : -1n) * o.price * x);
  };
  go(0, 0n, 0n);
  return best;
}

/** Every limit price at which each order's fill is what it wants: filled ⇒ limit on the right side, unfilled part ⇒ on the other. */
function supportingPrices(book: readonly Order[], filled: ReadonlyMap<string, bigint>): bigint[] {
  const candidates = [...new Set(book.map((o) => o.price))];
  return candidates.filter((p) =>
    book.every((o) => {
      const q = filled.get(o.id) ?? 0n;
      const wantsAll = o.side === 'bid' ? o.price >= p : o.price <= p;
      const wantsNone = o.side === 'bid' ? o.price <= p : o.price >= p;
      return (q === 0n || wantsAll) && (q === o.quantity || wantsNone);
    }),
  );
}

const min = (xs: bigint[]): bigint => xs.reduce((a, b) => (a < b ? a : b));
const max = (xs: bigint[]): bigint => xs.reduce((a, b) => (a > b ? a : b));
const sum = (xs: bigint[]): bigint => xs.reduce((a, b) => a + b, 0n);

function audit({ orders, feeBps }: Book, record: ClearingRecord): void {
  const markets = [...new Set(orders.map((o) => o.market))].sort();
  expect(record.markets.map((m) => m.market)).toEqual(markets);
  for (const m of record.markets)
    auditMarket(
      orders.filter((o) => o.market === m.market),
      m,
    );

  // Money: every escrow is accounted for to the base unit — refunds + proceeds + fee = escrows, never more.
  const fee = sum(
    record.markets.flatMap((m) => m.fills.filter((f) => f.side === 'ask').map((f) => (f.amount * feeBps) / 10_000n)),
  );
  expect(record.fee).toBe(fee);
  expect(sum(record.credits.map((c) => c.amount)) + record.fee).toBe(sum(orders.map(escrowFor)));
  for (const c of record.credits) {
    const own = orders.filter((o) => o.participant === c.participant);
    const fills = record.markets.flatMap((m) => m.fills.filter((f) => f.participant === c.participant));
    const paid = sum(fills.filter((f) => f.side === 'bid').map((f) => f.amount));
    const got = sum(fills.filter((f) => f.side === 'ask').map((f) => f.amount - (f.amount * feeBps) / 10_000n));
    expect(c.amount).toBe(sum(own.map(escrowFor)) - paid + got);
    expect(c.amount >= 0n).toBe(true);
  }
  expect(() => hashClearing(record)).not.toThrow();
}

function auditMarket(book: Order[], m: MarketClearing): void {
  const filled = new Map(m.fills.map((f) => [f.orderId as string, f.quantity]));
  const byId = new Map(book.map((o) => [o.id as string, o]));
  // Gains from trade are the optimum over every feasible allocation.
  const value = sum(book.map((o) => (o.side === 'bid' ? 1n : -1n) * o.price * (filled.get(o.id) ?? 0n)));
  expect(value).toBe(optimum(book));
  // Quantities conserve; every fill is within its order and on the order's side, at the one price.
  for (const side of ['bid', 'ask'] as const)
    expect(sum(m.fills.filter((f) => f.side === side).map((f) => f.quantity))).toBe(m.volume);
  for (const f of m.fills) {
    const o = byId.get(f.orderId)!;
    expect([f.side, f.participant]).toEqual([o.side, o.participant]);
    expect(f.quantity >= 1n && f.quantity <= o.quantity).toBe(true);
    expect(f.amount).toBe(f.quantity * m.price!);
    // Nobody trades against its limit: a seller gets at least its limit for every unit (before the fee).
    if (f.side === 'bid') expect(f.amount <= f.quantity * o.price).toBe(true);
    else expect(f.amount >= f.quantity * o.price).toBe(true);
  }
  if (m.volume === 0n) {
    expect(m.price).toBeNull();
    // Nothing crossed: every bid is below every ask.
    const bids = book.filter((o) => o.side === 'bid').map((o) => o.price);
    const asks = book.filter((o) => o.side === 'ask').map((o) => o.price);
    if (bids.length > 0 && asks.length > 0) expect(max(bids) < min(asks)).toBe(true);
    return;
  }
  // The price: the floor of the midpoint of the interval of prices that support the allocation, which is
  // [max(winning asks, losing bids), min(winning bids, losing asks)].
  const support = supportingPrices(book, filled);
  expect(support.length > 0).toBe(true);
  expect(m.price).toBe((min(support) + max(support)) / 2n);
  const winning = (o: Order) => (filled.get(o.id) ?? 0n) > 0n;
  const losing = (o: Order) => (filled.get(o.id) ?? 0n) < o.quantity;
  const low = max([
    ...book.filter((o) => o.side === 'ask' && winning(o)).map((o) => o.price),
    ...book.filter((o) => o.side === 'bid' && losing(o)).map((o) => o.price),
  ]);
  const high = min([
    ...book.filter((o) => o.side === 'bid' && winning(o)).map((o) => o.price),
    ...book.filter((o) => o.side === 'ask' && losing(o)).map((o) => o.price),
  ]);
  expect([min(support), max(support)]).toEqual([low, high]);
  // Ties: at one price, an order with any fill is preceded only by orders filled whole (earlier arrival, then lower id).
  for (const a of book)
    for (const b of book) {
      const first = a.arrival < b.arrival || (a.arrival === b.arrival && a.id < b.id);
      if (a.side === b.side && a.price === b.price && first && winning(b)) expect(losing(a)).toBe(false);
    }
}

describe('clearRound against a brute-force auditor', () => {
  it('optimal gains from trade, the stated price, limits, ties and money, in plain, 6- and 18-decimal units', () => {
    fc.assert(
      fc.property(bookArb, fc.integer(), (book, seed) => {
        const record = clearRound(ROUND, book.orders, { feeBps: book.feeBps });
        audit(book, record);
        verifyClearing(record, book.orders, { feeBps: book.feeBps, round: ROUND });
        // The list order does not matter (priority comes from arrival and id), nor the hub's fast path.
        const shuffled = [...book.orders].sort(
          (a, b) => ((Number(BigInt(a.id) % 97n) * seed) % 13) - ((Number(BigInt(b.id) % 97n) * seed) % 13),
        );
        expect(clearRound(ROUND, shuffled, { feeBps: book.feeBps, validated: true })).toEqual(record);
      }),
      { numRuns: 400 },
    );
  });

  it('extremes: one participant on both sides, nothing crossing, a thousand orders at one price', () => {
    const one = addr(1);
    const base = { participant: one, market: 'm', round: ROUND };
    const self: Order[] = [
      { ...base, id: oid(1), side: 'bid', quantity: 5n, price: 10n, arrival: 0n },
      { ...base, id: oid(2), side: 'ask', quantity: 3n, price: 4n, arrival: 1n },
    ];
    const r = clearRound(ROUND, self, { feeBps: 100n });
    audit({ orders: self, feeBps: 100n }, r);
    // Trading with itself costs it only the fee: 3 units at ⌊(10 + 10) / 2⌋ = 10 (the bid is partly filled).
    expect([r.markets[0]!.price, r.nets[0]!.net, r.credits[0]!.amount]).toEqual([10n, 0n, 50n]);

    const apart: Order[] = [
      { ...base, id: oid(3), participant: addr(2), side: 'bid', quantity: 2n, price: 7n, arrival: 0n },
      { ...base, id: oid(4), participant: addr(3), side: 'ask', quantity: 2n, price: 8n, arrival: 0n },
    ];
    const none = clearRound(ROUND, apart);
    expect(none.markets[0]).toEqual({ market: 'm', price: null, volume: 0n, fills: [] });
    expect(none.credits.map((c) => c.amount)).toEqual([14n, 0n]);

    // 1,000 orders at one price: time priority alone decides, the last seller to fill fills partly.
    const many: Order[] = [];
    for (let k = 0; k < 500; k++) {
      many.push({
        ...base,
        id: oid(10_000 + k),
        participant: WHO[k % 3]!,
        side: 'bid',
        quantity: 2n,
        price: 50n,
        arrival: BigInt(999 - k),
      });
      many.push({
        ...base,
        id: oid(20_000 + k),
        participant: WHO[(k + 1) % 3]!,
        side: 'ask',
        quantity: 3n,
        price: 50n,
        arrival: BigInt(k),
      });
    }
    const big = clearRound(ROUND, many, { feeBps: 30n });
    expect(big.markets[0]!.volume).toBe(1000n);
    expect(big.markets[0]!.price).toBe(50n);
    const asks = big.markets[0]!.fills.filter((f) => f.side === 'ask');
    expect(asks.length).toBe(334);
    expect(asks.at(-1)!.quantity).toBe(1n); // 333 × 3 + 1
    expect(asks.map((f) => f.orderId)).toEqual(
      many
        .filter((o) => o.side === 'ask')
        .slice(0, 334)
        .map((o) => o.id),
    );
    expect(sum(big.credits.map((c) => c.amount)) + big.fee).toBe(sum(many.map(escrowFor)));
  });
});
