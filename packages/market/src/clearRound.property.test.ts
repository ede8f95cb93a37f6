import fc from 'fast-check';
import type { Address } from '@trickle/protocol/types';
import { describe, expect, it } from 'vitest';
import { clearRound } from './clearRound.js';
import { escrowFor } from './order.js';
import type { Order } from './order.js';
import { addr, oid } from './orders.fixture.js';
import type { ClearingRecord } from './record.js';
import { verifyClearing } from './verifyClearing.js';

const ROUND = 3n;
const PARTICIPANTS = [addr(1), addr(2), addr(3)];
const BPS_CHOICES = [0n, 1n, 30n, 2_500n, 10_000n];
// Scales move the same small books onto the slow paths: 997 (odd amounts, fee rounding), 2^50 (packed sort keys
// overflow, comparator sort on exact doubles), 2^53 + 1 (prices beyond 2^53: bigint walk; with the largest
// quantity scale an order's value stays below 2^128, the limit of validateOrder).
const PRICE_SCALES = [1n, 997n, 2n ** 50n, 2n ** 53n + 1n];

interface Book {
  orders: Order[];
  feeBps: bigint;
  priceScale: bigint;
  quantityScale: bigint;
}

const bookArb = (maxOrders: number, maxQuantity: number, maxPrice: number): fc.Arbitrary<Book> =>
  fc
    .record({
      raw: fc.array(
        fc.record({
          participant: fc.constantFrom(...PARTICIPANTS),
          market: fc.constantFrom('cpu', 'kwh'),
          side: fc.constantFrom('bid' as const, 'ask' as const),
          quantity: fc.integer({ min: 1, max: maxQuantity }),
          price: fc.integer({ min: 1, max: maxPrice }),
          arrival: fc.integer({ min: 0, max: 4 }), // small: arrival ties happen
        }),
        { maxLength: maxOrders },
      ),
      ids: fc.uniqueArray(fc.bigInt({ min: 0n, max: 2n ** 256n - 1n }), { minLength: maxOrders, maxLength: maxOrders }),
      feeBps: fc.constantFrom(...BPS_CHOICES),
      priceScale: fc.constantFrom(...PRICE_SCALES),
      quantityScale: fc.constantFrom(1n, 1n, 2n ** 55n),
    })
    .map(({ raw, ids, feeBps, priceScale, quantityScale }) => ({
      orders: raw.map((r, k) => ({
        id: oid(ids[k]!),
        participant: r.participant,
        market: r.market,
        side: r.side,
        quantity: BigInt(r.quantity) * quantityScale,
        price: BigInt(r.price) * priceScale,
        round: ROUND,
        arrival: BigInt(r.arrival),
      })),
      feeBps,
      priceScale,
      quantityScale,
    }));

/** The largest Σ bid limit·x − Σ ask limit·y over all 0 ≤ x, y ≤ quantity with Σx = Σy (one market). */
function bruteMaxSurplus(orders: Order[]): bigint {
  let best = 0n;
  const choose = (k: number, bought: bigint, sold: bigint, surplus: bigint): void => {
    if (k === orders.length) {
      if (bought === sold && surplus > best) best = surplus;
      return;
    }
    const o = orders[k]!;
    for (let x = 0n; x <= o.quantity; x++) {
      if (o.side === 'bid') choose(k + 1, bought + x, sold, surplus + o.price * x);
      else choose(k + 1, bought, sold + x, surplus - o.price * x);
    }
  };
  choose(0, 0n, 0n, 0n);
  return best;
}

/** Price-time priority: does `a` come before `b` on their side? */
function before(a: Order, b: Order): boolean {
  if (a.price !== b.price) return a.side === 'bid' ? a.price > b.price : a.price < b.price;
  if (a.arrival !== b.arrival) return a.arrival < b.arrival;
  return a.id < b.id;
}

function sum(xs: bigint[]): bigint {
  return xs.reduce((s, x) => s + x, 0n);
}

function checkInvariants({ orders, feeBps }: Book, record: ClearingRecord): void {
  const byId = new Map(orders.map((o) => [o.id, o]));
  const filled = new Map<string, bigint>();
  let expectedFee = 0n;
  const paid = new Map<Address, bigint>();
  const received = new Map<Address, bigint>();
  for (const m of record.markets) {
    const bids = m.fills.filter((f) => f.side === 'bid');
    const asks = m.fills.filter((f) => f.side === 'ask');
    // Conservation within the market.
    expect(sum(bids.map((f) => f.quantity))).toBe(m.volume);
    expect(sum(asks.map((f) => f.quantity))).toBe(m.volume);
    expect(sum(bids.map((f) => f.amount))).toBe(sum(asks.map((f) => f.amount)));
    for (const f of m.fills) {
      const o = byId.get(f.orderId)!;
      expect([o.market, o.side, o.participant]).toEqual([m.market, f.side, f.participant]);
      expect(f.quantity > 0n && f.quantity <= o.quantity).toBe(true);
      expect(f.amount).toBe(f.quantity * m.price!);
      // Nobody pays above its limit or sells below it.
      if (f.side === 'bid') expect(m.price! <= o.price).toBe(true);
      else expect(m.price! >= o.price).toBe(true);
      filled.set(f.orderId, f.quantity);
      const cut = f.side === 'ask' ? (f.amount * feeBps) / 10_000n : 0n;
      expectedFee += cut;
      if (f.side === 'bid') paid.set(f.participant, (paid.get(f.participant) ?? 0n) + f.amount);
      else received.set(f.participant, (received.get(f.participant) ?? 0n) + f.amount - cut);
    }
    const book = orders.filter((o) => o.market === m.market);
    // Surplus: the maximum over every feasible allocation.
    const surplus = sum(book.map((o) => (o.side === 'bid' ? 1n : -1n) * o.price * (filled.get(o.id) ?? 0n)));
    expect(surplus).toBe(bruteMaxSurplus(book));
    for (const o of book) {
      const q = filled.get(o.id) ?? 0n;
      if (q < o.quantity) {
        // Nobody left out wanted to trade at the price…
        if (m.price !== null) expect(o.side === 'bid' ? o.price <= m.price : o.price >= m.price).toBe(true);
        // …and nobody behind it in priority got anything.
        for (const other of book) {
          if (other.side === o.side && before(o, other)) expect(filled.get(other.id) ?? 0n).toBe(0n);
        }
      }
    }
    if (m.price === null) expect(m.fills).toEqual([]);
  }
  expect(record.fee).toBe(expectedFee);

  // Netting and credits: one entry per participant with an order, sorted by address.
  const participants = [...new Set(orders.map((o) => o.participant))].sort((a, b) =>
    a.toLowerCase() < b.toLowerCase() ? -1 : 1,
  );
  expect(record.nets.map((n) => n.participant)).toEqual(participants);
  expect(record.credits.map((c) => c.participant)).toEqual(participants);
  expect(sum(record.nets.map((n) => n.net))).toBe(-record.fee);
  record.nets.forEach((n, k) => {
    const p = n.participant;
    const escrow = sum(orders.filter((o) => o.participant === p).map(escrowFor));
    expect(n.net).toBe((received.get(p) ?? 0n) - (paid.get(p) ?? 0n));
    const credit = record.credits[k]!.amount;
    expect(credit).toBe(escrow + n.net);
    expect(credit >= 0n).toBe(true);
  });
  // Σ credits = Σ escrow − Σ payments + Σ receipts (after fee) = Σ escrow − fee.
  expect(sum(record.credits.map((c) => c.amount))).toBe(sum(orders.map(escrowFor)) - record.fee);
}

describe('clearRound: properties', () => {
  it('maximises surplus, respects limits and priority, conserves money (≤ 8 orders vs brute force)', () => {
    fc.assert(
      fc.property(bookArb(8, 3, 6), (book) => {
        const record = clearRound(ROUND, book.orders, { feeBps: book.feeBps });
        // Brute force on the unscaled quantities: with every quantity a multiple of the scale, so is the optimum.
        const unscaledOrders = book.orders.map((o) => ({ ...o, quantity: o.quantity / book.quantityScale }));
        const unscaled = { ...book, orders: unscaledOrders };
        const small = clearRound(ROUND, unscaled.orders, { feeBps: book.feeBps });
        checkInvariants(unscaled, small);
        expect(record.markets.map((m) => [m.price, m.volume])).toEqual(
          small.markets.map((m) => [m.price, m.volume * book.quantityScale]),
        );
        if (book.quantityScale === 1n) checkInvariants(book, record);
      }),
      { numRuns: 300 },
    );
  });

  it('does not depend on the order the orders are given in, and the hub path agrees', () => {
    fc.assert(
      fc.property(bookArb(40, 20, 30), fc.integer(), (book, seed) => {
        const record = clearRound(ROUND, book.orders, { feeBps: book.feeBps });
        const shuffled = [...book.orders];
        let s = seed;
        for (let k = shuffled.length - 1; k > 0; k--) {
          s = (Math.imul(s, 1103515245) + 12345) | 0;
          const r = Math.abs(s) % (k + 1);
          [shuffled[k], shuffled[r]] = [shuffled[r]!, shuffled[k]!];
        }
        expect(clearRound(ROUND, shuffled, { feeBps: book.feeBps })).toEqual(record);
        expect(
          clearRound(ROUND, shuffled, { feeBps: book.feeBps, validated: true, ordersDigest: record.ordersDigest }),
        ).toEqual(record);
      }),
      { numRuns: 100 },
    );
  });

  it('verifyClearing accepts the honest record and rejects a tampered one', () => {
    fc.assert(
      fc.property(bookArb(8, 3, 6), fc.nat(), (book, pick) => {
        const options = { feeBps: book.feeBps, round: ROUND };
        const record = clearRound(ROUND, book.orders, options);
        expect(() => verifyClearing(record, book.orders, options)).not.toThrow();
        const tampered = tamperings(record);
        fc.pre(tampered.length > 0);
        const bad = tampered[pick % tampered.length]!;
        expect(() => verifyClearing(bad, book.orders, options)).toThrow(
          expect.objectContaining({ code: 'BAD_CLEARING' }),
        );
      }),
      { numRuns: 300 },
    );
  });

  it('verifyClearing (its own plain recomputation) refuses a bad order as clearRound does: same code, message, details', () => {
    const thrown = (f: () => unknown): unknown => {
      try {
        f();
      } catch (e) {
        return e;
      }
      return undefined;
    };
    fc.assert(
      fc.property(
        bookArb(6, 3, 6),
        fc.nat(),
        fc.constantFrom('round', 'id', 'duplicate', 'participant', 'quantity', 'side'),
        (book, pick, how) => {
          fc.pre(book.orders.length >= 2);
          const k = 1 + (pick % (book.orders.length - 1)); // not the first: verifyClearing reads the round off it
          const o = book.orders[k]!;
          const broken = {
            round: { ...o, round: ROUND + 1n },
            id: { ...o, id: 'not an id' },
            duplicate: { ...o, id: book.orders[0]!.id },
            participant: { ...o, participant: o.participant.toLowerCase() as Address },
            quantity: { ...o, quantity: 0n },
            side: { ...o, side: 'buy' },
          }[how] as Order;
          const orders = book.orders.map((x, i) => (i === k ? broken : x));
          const byClear = thrown(() => clearRound(ROUND, orders, { feeBps: book.feeBps }));
          fc.pre(byClear !== undefined); // a lowercase address without letters is its own checksum form
          const record = { round: ROUND } as ClearingRecord;
          const byVerify = thrown(() => verifyClearing(record, orders, { feeBps: book.feeBps, round: ROUND }));
          expect(byVerify).toEqual(byClear);
          const e = byVerify as { code: string; shortMessage: string; details: unknown };
          const c = byClear as typeof e;
          expect([e.code, e.shortMessage, e.details]).toEqual([c.code, c.shortMessage, c.details]);
        },
      ),
      { numRuns: 300 },
    );
  });
});

/** A plain reference clearing of one market: comparator sort, bigint walk, the documented price rule. */
function reference(book: Order[]): { price: bigint | null; volume: bigint; filled: Map<string, bigint> } {
  const rank = (a: Order, b: Order): number => (before(a, b) ? -1 : before(b, a) ? 1 : 0);
  const bids = book.filter((o) => o.side === 'bid').sort(rank);
  const asks = book.filter((o) => o.side === 'ask').sort(rank);
  const filled = new Map<string, bigint>();
  let [i, j, volume] = [0, 0, 0n];
  let lastBid: Order | undefined;
  let lastAsk: Order | undefined;
  const rest = (o: Order): bigint => o.quantity - (filled.get(o.id) ?? 0n);
  while (i < bids.length && j < asks.length && bids[i]!.price >= asks[j]!.price) {
    const [b, a] = [bids[i]!, asks[j]!];
    const q = rest(b) < rest(a) ? rest(b) : rest(a);
    filled.set(b.id, (filled.get(b.id) ?? 0n) + q);
    filled.set(a.id, (filled.get(a.id) ?? 0n) + q);
    [lastBid, lastAsk, volume] = [b, a, volume + q];
    if (rest(b) === 0n) i++;
    if (rest(a) === 0n) j++;
  }
  if (lastBid === undefined || lastAsk === undefined) return { price: null, volume, filled };
  const candidatesLow = [lastAsk.price, ...(i < bids.length ? [bids[i]!.price] : [])];
  const candidatesHigh = [lastBid.price, ...(j < asks.length ? [asks[j]!.price] : [])];
  const low = candidatesLow.reduce((x, y) => (x > y ? x : y));
  const high = candidatesHigh.reduce((x, y) => (x < y ? x : y));
  return { price: (low + high) / 2n, volume, filled };
}

describe('clearRound: against a plain reference', () => {
  it('agrees on price, volume and every fill for books of up to 400 orders', () => {
    fc.assert(
      fc.property(bookArb(400, 50, 1_000), (book) => {
        const options = { feeBps: book.feeBps, ordersDigest: `0x${'00'.repeat(32)}` as never };
        const record = clearRound(ROUND, book.orders, options);
        // Given in time priority (the hub's usual case), the clearing skips its own time sort: same result.
        const inTime = [...book.orders].sort((a, b) =>
          a.arrival !== b.arrival ? (a.arrival < b.arrival ? -1 : 1) : a.id < b.id ? -1 : 1,
        );
        expect(clearRound(ROUND, inTime, options)).toEqual(record);
        for (const m of record.markets) {
          const ref = reference(book.orders.filter((o) => o.market === m.market));
          expect([m.price, m.volume]).toEqual([ref.price, ref.volume]);
          expect(new Map(m.fills.map((f) => [f.orderId, f.quantity]))).toEqual(ref.filled);
        }
      }),
      { numRuns: 60 },
    );
  });
});

/** Every single-field change a dishonest hub might try. */
function tamperings(r: ClearingRecord): ClearingRecord[] {
  const out: ClearingRecord[] = [
    { ...r, fee: r.fee + 1n },
    { ...r, round: r.round + 1n },
  ];
  r.markets.forEach((m, k) => {
    const with_ = (mm: typeof m): ClearingRecord => ({ ...r, markets: r.markets.map((x, l) => (l === k ? mm : x)) });
    out.push(with_({ ...m, price: m.price === null ? 1n : m.price + 1n }));
    out.push(with_({ ...m, volume: m.volume + 1n }));
    m.fills.forEach((f, l) => {
      const fills = (ff: typeof f) => m.fills.map((x, n) => (n === l ? ff : x));
      out.push(with_({ ...m, fills: fills({ ...f, quantity: f.quantity - 1n }) }));
      out.push(with_({ ...m, fills: fills({ ...f, amount: f.amount + 1n }) }));
      out.push(with_({ ...m, fills: m.fills.filter((_, n) => n !== l) }));
    });
  });
  r.nets.forEach((n, k) => {
    out.push({ ...r, nets: r.nets.map((x, l) => (l === k ? { ...n, net: n.net - 1n } : x)) });
    out.push({ ...r, credits: r.credits.map((x, l) => (l === k ? { ...x, amount: x.amount + 1n } : x)) });
  });
  return out;
}
