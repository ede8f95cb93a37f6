// Audit of the clearing against what users of periodic double auctions get bitten by. No defect was found; these
// pin behaviour the existing tests did not cover: self-trades, a round of one side only, money balancing with the
// fee floored per fill, and books mixing the double fast paths with the bigint ones (prices and quantities either
// side of 2^53, arrivals beyond 2^53) in any input order.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { clearRound } from './clearRound.js';
import { escrowFor } from './order.js';
import type { Order } from './order.js';
import { addr, oid } from './orders.fixture.js';
import type { ClearingRecord } from './record.js';
import { verifyClearing } from './verifyClearing.js';

const ROUND = 4n;
const sum = (xs: readonly bigint[]): bigint => xs.reduce((s, x) => s + x, 0n);

function make(
  k: number,
  who: number,
  side: 'bid' | 'ask',
  quantity: bigint,
  price: bigint,
  arrival = BigInt(k),
): Order {
  return { id: oid(k), participant: addr(who), market: 'cpu', side, quantity, price, round: ROUND, arrival };
}

/** Buyers pay exactly what sellers receive before the fee; credits are escrow + net; nets sum to −fee. */
function balances(orders: readonly Order[], r: ClearingRecord): void {
  for (const m of r.markets) {
    const paid = sum(m.fills.filter((f) => f.side === 'bid').map((f) => f.amount));
    const received = sum(m.fills.filter((f) => f.side === 'ask').map((f) => f.amount));
    expect(paid).toBe(received);
  }
  expect(sum(r.nets.map((n) => n.net))).toBe(-r.fee);
  expect(sum(r.credits.map((c) => c.amount)) + r.fee).toBe(sum(orders.map(escrowFor)));
  for (const c of r.credits) expect(c.amount >= 0n).toBe(true);
}

describe('clearRound audit: pitfalls', () => {
  it('a self-trade clears like any other cross: its net is minus the fee, its credit the escrow less the fee', () => {
    const orders = [make(1, 1, 'bid', 3n, 1_000n), make(2, 1, 'ask', 3n, 500n)];
    const r = clearRound(ROUND, orders, { feeBps: 100n });
    expect(r.markets[0]!.price).toBe(750n);
    expect(r.fee).toBe(22n); // ⌊2,250 × 100 / 10,000⌋
    expect(r.nets).toEqual([{ participant: addr(1), net: -22n }]);
    expect(r.credits).toEqual([{ participant: addr(1), amount: 3_000n - 22n }]);
    balances(orders, r);
  });

  it('a round of buyers only or sellers only trades nothing and returns every escrow', () => {
    const bids = [make(1, 1, 'bid', 2n, 9n), make(2, 2, 'bid', 1n, 1n)];
    const asks = [make(3, 1, 'ask', 2n, 1n), make(4, 2, 'ask', 1n, 9n)];
    for (const orders of [bids, asks]) {
      const r = clearRound(ROUND, orders, { feeBps: 30n });
      expect(r.markets).toEqual([{ market: 'cpu', price: null, volume: 0n, fills: [] }]);
      expect(r.fee).toBe(0n);
      expect(r.credits.map((c) => c.amount)).toEqual(orders.map(escrowFor));
    }
  });

  it('money balances to the base unit with the fee floored per fill, over many odd fills', () => {
    const orders = [
      ...Array.from({ length: 7 }, (_, k) => make(k + 1, k % 3, 'bid', BigInt(2 * k + 1), 1_003n + BigInt(k))),
      ...Array.from({ length: 9 }, (_, k) => make(k + 20, 3 + (k % 2), 'ask', BigInt(k + 1), 997n + BigInt(k))),
    ];
    const r = clearRound(ROUND, orders, { feeBps: 33n });
    const asks = r.markets[0]!.fills.filter((f) => f.side === 'ask');
    expect(r.fee).toBe(sum(asks.map((f) => (f.amount * 33n) / 10_000n)));
    balances(orders, r);
  });
});

const S = 2n ** 53n;
const priceArb = fc.oneof(
  fc.bigInt({ min: 1n, max: 6n }),
  fc.bigInt({ min: S - 3n, max: S + 3n }),
  fc.bigInt({ min: 2n ** 60n, max: 2n ** 60n + 3n }),
);
const quantityArb = fc.oneof(fc.bigInt({ min: 1n, max: 5n }), fc.bigInt({ min: S / 4n - 1n, max: S / 4n + 1n }));
const arrivalArb = fc.oneof(fc.bigInt({ min: 0n, max: 3n }), fc.bigInt({ min: S - 1n, max: S + 1n }));

describe('clearRound audit: books mixing fast and exact paths', () => {
  it('agree with verifyClearing in any input order, on the default and the hub path, and balance', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            who: fc.nat(2),
            market: fc.constantFrom('a', 'b'),
            side: fc.constantFrom('bid' as const, 'ask' as const),
            quantity: quantityArb,
            price: priceArb,
            arrival: arrivalArb,
          }),
          { maxLength: 10 },
        ),
        fc.constantFrom(0n, 1n, 30n, 10_000n),
        fc.integer(),
        (raw, feeBps, seed) => {
          const orders = raw
            .map((x, k): Order => ({
              ...make(100 - k, x.who, x.side, x.quantity, x.price, x.arrival),
              market: x.market,
            }))
            .filter((o) => o.quantity * o.price < 2n ** 128n);
          const r = clearRound(ROUND, orders, { feeBps });
          verifyClearing(r, orders, { feeBps, round: ROUND });
          balances(orders, r);
          const shuffled = [...orders];
          let s = seed;
          for (let k = shuffled.length - 1; k > 0; k--) {
            s = (Math.imul(s, 1103515245) + 12345) | 0;
            const j = Math.abs(s) % (k + 1);
            [shuffled[k], shuffled[j]] = [shuffled[j]!, shuffled[k]!];
          }
          expect(clearRound(ROUND, shuffled, { feeBps })).toEqual(r);
          expect(clearRound(ROUND, shuffled, { feeBps, validated: true })).toEqual(r);
        },
      ),
      { numRuns: 300 },
    );
  });
});
