import { isTrickleError } from '@trickle/protocol/errors';
import type { Address } from '@trickle/protocol/types';
import { describe, expect, it } from 'vitest';
import { clearRound } from './clearRound.js';
import type { ClearOptions } from './clearRound.js';
import { digestOrders } from './digestOrders.js';
import { hashClearing } from './hashClearing.js';
import { escrowFor } from './order.js';
import type { Order } from './order.js';
import { addr, oid, order } from './orders.fixture.js';
import type { ClearingRecord, MarketClearing } from './record.js';

const [P, Q, R, S] = [addr(1), addr(2), addr(3), addr(4)];

const bid = (quantity: bigint, price: bigint, participant: Address, more: Partial<Order> = {}): Order =>
  order({ side: 'bid', quantity, price, participant, ...more });
const ask = (quantity: bigint, price: bigint, participant: Address, more: Partial<Order> = {}): Order =>
  order({ side: 'ask', quantity, price, participant, ...more });

function clear(orders: Order[], options: ClearOptions = {}): ClearingRecord {
  const record = clearRound(1n, orders, options);
  // The hub's fast path must agree with the fully checking one on valid input.
  expect(clearRound(1n, orders, { ...options, validated: true, ordersDigest: record.ordersDigest })).toEqual(record);
  return record;
}

function only(record: ClearingRecord, market = 'cpu'): MarketClearing {
  const m = record.markets.find((x) => x.market === market);
  if (m === undefined) throw new Error(`no market ${market}`);
  return m;
}

/** The fills as [order, quantity, amount]. */
function fills(m: MarketClearing, orders: Order[]): [number, bigint, bigint][] {
  return m.fills.map((f) => [orders.findIndex((o) => o.id === f.orderId), f.quantity, f.amount]);
}

function money(record: ClearingRecord): Record<string, [bigint, bigint]> {
  const out: Record<string, [bigint, bigint]> = {};
  record.nets.forEach((n, k) => (out[n.participant] = [n.net, record.credits[k]!.amount]));
  return out;
}

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (isTrickleError(e)) return e.code;
    throw e;
  }
  return 'none';
}

describe('clearRound: known answers', () => {
  it('no cross: no price, nothing traded, bids get their escrow back', () => {
    const os = [bid(5n, 10n, P), ask(5n, 12n, Q)];
    const r = clear(os);
    expect(only(r)).toEqual({ market: 'cpu', price: null, volume: 0n, fills: [] });
    expect(money(r)).toEqual({ [P]: [0n, 50n], [Q]: [0n, 0n] });
    expect(r.fee).toBe(0n);
  });

  it('exact cross at one price', () => {
    const os = [bid(5n, 10n, P), ask(5n, 10n, Q)];
    const r = clear(os);
    expect(only(r).price).toBe(10n);
    expect(only(r).volume).toBe(5n);
    expect(fills(only(r), os)).toEqual([
      [0, 5n, 50n],
      [1, 5n, 50n],
    ]);
    expect(money(r)).toEqual({ [P]: [-50n, 0n], [Q]: [50n, 50n] });
  });

  it('prices at the floor of the midpoint when nothing is rejected', () => {
    const os = [bid(1n, 11n, P), ask(1n, 8n, Q)];
    const r = clear(os);
    expect(only(r).price).toBe(9n); // ⌊(8 + 11) / 2⌋
    expect(money(r)).toEqual({ [P]: [-9n, 2n], [Q]: [9n, 9n] });
  });

  it('partial fill of the marginal ask prices at that ask', () => {
    const os = [bid(4n, 12n, P), ask(10n, 8n, Q)];
    const r = clear(os);
    // Interval [max(8, —), min(12, 8)] = [8, 8]: excess supply, the seller left with 6 units sets the price.
    expect(only(r).price).toBe(8n);
    expect(fills(only(r), os)).toEqual([
      [0, 4n, 32n],
      [1, 4n, 32n],
    ]);
    expect(money(r)).toEqual({ [P]: [-32n, 16n], [Q]: [32n, 32n] });
  });

  it('partial fill of the marginal bid prices at that bid', () => {
    const os = [bid(3n, 15n, P), bid(3n, 11n, R), ask(4n, 9n, Q)];
    const r = clear(os);
    expect(only(r).price).toBe(11n);
    expect(fills(only(r), os)).toEqual([
      [0, 3n, 33n],
      [1, 1n, 11n],
      [2, 4n, 44n],
    ]);
    expect(money(r)).toEqual({ [P]: [-33n, 12n], [Q]: [44n, 44n], [R]: [-11n, 22n] });
  });

  it('same price: the earlier arrival fills first', () => {
    const os = [bid(3n, 10n, P, { arrival: 2n }), bid(3n, 10n, R, { arrival: 1n }), ask(3n, 9n, Q, { arrival: 3n })];
    const r = clear(os);
    expect(fills(only(r), os)).toEqual([
      [1, 3n, 30n],
      [2, 3n, 30n],
    ]);
    expect(only(r).price).toBe(10n); // the rejected bid at 10 bounds the price from below
  });

  it('same price and arrival: the lower id fills first', () => {
    const os = [
      ask(2n, 7n, P, { arrival: 4n, id: oid(0xb) }),
      ask(2n, 7n, R, { arrival: 4n, id: oid(0xa) }),
      bid(3n, 8n, Q, { arrival: 1n }),
    ];
    const r = clear(os);
    expect(fills(only(r), os)).toEqual([
      [2, 3n, 21n],
      [1, 2n, 14n],
      [0, 1n, 7n],
    ]);
  });

  it('many sellers at one price fill in time priority, the last one partly', () => {
    const sellers = [P, Q, R, S];
    const os = sellers.map((participant, k) => ask(2n, 7n, participant, { arrival: BigInt(10 - k) }));
    os.push(bid(5n, 9n, addr(5), { arrival: 20n }));
    const r = clear(os);
    expect(only(r).price).toBe(7n);
    expect(only(r).volume).toBe(5n);
    expect(fills(only(r), os)).toEqual([
      [4, 5n, 35n],
      [3, 2n, 14n],
      [2, 2n, 14n],
      [1, 1n, 7n],
    ]);
    expect(money(r)).toEqual({
      [P]: [0n, 0n],
      [Q]: [7n, 7n],
      [R]: [14n, 14n],
      [S]: [14n, 14n],
      [addr(5)]: [-35n, 10n],
    });
  });

  it('one side empty: no price; an empty round is empty', () => {
    const bids = [bid(2n, 3n, P), bid(1n, 4n, Q)];
    const r = clear(bids);
    expect(only(r)).toEqual({ market: 'cpu', price: null, volume: 0n, fills: [] });
    expect(money(r)).toEqual({ [P]: [0n, 6n], [Q]: [0n, 4n] });
    const asks = clear([ask(2n, 3n, P)]);
    expect(only(asks).price).toBeNull();
    const none = { round: 1n, ordersDigest: digestOrders([]), markets: [], nets: [], credits: [], fee: 0n };
    expect(clear([])).toEqual(none);
  });

  it('nets one participant across markets into one credit', () => {
    const os = [
      bid(2n, 10n, P, { market: 'cpu' }),
      ask(2n, 10n, Q, { market: 'cpu' }),
      ask(3n, 5n, P, { market: 'kwh' }),
      bid(3n, 5n, R, { market: 'kwh' }),
      bid(1n, 4n, P, { market: 'gpu' }),
    ];
    const r = clear(os);
    expect(r.markets.map((m) => [m.market, m.price])).toEqual([
      ['cpu', 10n],
      ['gpu', null],
      ['kwh', 5n],
    ]);
    expect(money(r)).toEqual({ [P]: [-5n, 19n], [Q]: [20n, 20n], [R]: [-15n, 0n] });
  });

  it('takes the fee from seller proceeds, floored per fill', () => {
    const os = [bid(10n, 100n, P), ask(7n, 100n, Q), ask(3n, 100n, R)];
    const r = clear(os, { feeBps: 30n });
    // 700 × 0.3% = 2.1 → 2; 300 × 0.3% = 0.9 → 0.
    expect(r.fee).toBe(2n);
    expect(money(r)).toEqual({ [P]: [-1000n, 0n], [Q]: [698n, 698n], [R]: [300n, 300n] });
    expect(r.nets.reduce((s, n) => s + n.net, 0n)).toBe(-r.fee);
  });

  it('orders nets and credits by address and markets by name, whatever the input order', () => {
    const os = [
      ask(1n, 1n, S, { market: 'zz' }),
      bid(1n, 1n, P, { market: 'aa' }),
      bid(1n, 2n, R, { market: 'zz' }),
      ask(1n, 1n, Q, { market: 'aa' }),
    ];
    const r = clear(os);
    expect(r.markets.map((m) => m.market)).toEqual(['aa', 'zz']);
    const sorted = [P, Q, R, S].map((a) => a.toLowerCase()).sort();
    expect(r.nets.map((n) => n.participant.toLowerCase())).toEqual(sorted);
    expect(r.credits.map((c) => c.participant)).toEqual(r.nets.map((n) => n.participant));
    expect(clear([...os].reverse())).toEqual(r);
  });

  it('handles prices and quantities beyond 2^53 exactly', () => {
    const big = 2n ** 64n; // the bid's value stays below 2^128
    const os = [bid(2n ** 60n + 1n, big + 5n, P), ask(2n ** 60n, big + 1n, Q), ask(3n, big + 2n, R)];
    const r = clear(os);
    // Bid has 1 unit left after Q's ask, buys 1 of R's 3: R is the marginal ask, price = its limit.
    expect(only(r).price).toBe(big + 2n);
    expect(only(r).volume).toBe(2n ** 60n + 1n);
    expect(money(r)[P]).toEqual([-(2n ** 60n + 1n) * (big + 2n), 3n * (2n ** 60n + 1n)]);
  });

  it('uses the given orders digest, else computes it', () => {
    const os = [bid(1n, 1n, P)];
    expect(clearRound(1n, os).ordersDigest).toBe(digestOrders(os));
    expect(clearRound(1n, os, { ordersDigest: oid(5) }).ordersDigest).toBe(oid(5));
  });
});

describe('clearRound: errors', () => {
  const ok = bid(1n, 1n, P);

  it('rejects an order for another round, a repeated id and a malformed order with BAD_ORDER', () => {
    expect(code(() => clearRound(2n, [ok]))).toBe('BAD_ORDER');
    expect(code(() => clearRound(1n, [ok, { ...ok, arrival: 99n }]))).toBe('BAD_ORDER');
    expect(code(() => clearRound(1n, [ok, { ...ok, id: oid(77), quantity: 0n }]))).toBe('BAD_ORDER');
    const lowercase = P.toLowerCase() as Address;
    expect(code(() => clearRound(1n, [ok, { ...ok, id: oid(77), participant: lowercase }]))).toBe('BAD_ORDER');
    expect(code(() => clearRound(1n, [ok, { ...ok, id: oid(77), market: 'Bad' }]))).toBe('BAD_ORDER');
    expect(code(() => clearRound(1n, [ok, { ...ok, id: 'nope' } as unknown as Order]))).toBe('BAD_ORDER');
    expect(code(() => clearRound(1n, [ok, null as unknown as Order]))).toBe('BAD_ORDER');
  });

  it('refuses an order of value ≥ 2^128 (BAD_ORDER); a round of orders at the largest value still hashes', () => {
    // Before, a bid and an ask of uint256 value were valid and cleared, but the seller's net (2^256 − 1) is no
    // int256: hashClearing threw, so the hub could not sign the record, nor pay the round's credits, nor restart.
    const top = 2n ** 256n - 1n;
    for (const validated of [false, true]) {
      expect(code(() => clearRound(1n, [bid(1n, top, P), ask(1n, 2n ** 255n, Q)], { validated }))).toBe('BAD_ORDER');
      expect(code(() => clearRound(1n, [bid(2n ** 64n, 2n ** 64n, P)], { validated }))).toBe('BAD_ORDER');
    }
    const max = 2n ** 128n - 1n;
    // Three participants, each buying and selling at the largest value several times: every sum still fits.
    const os = [P, Q, R].flatMap((p) => [bid(1n, max, p), bid(max, 1n, p), ask(1n, 1n, p), ask(max, 1n, p)]);
    const r = clear(os, { feeBps: 1n });
    expect(() => hashClearing(r)).not.toThrow();
    expect(r.credits.reduce((s, c) => s + c.amount, 0n) + r.fee).toBe(os.reduce((s, o) => s + escrowFor(o), 0n));
  });

  it('rejects bad arguments with INVALID_ARGUMENT', () => {
    expect(code(() => clearRound(-1n, [ok]))).toBe('INVALID_ARGUMENT');
    expect(code(() => clearRound(1 as unknown as bigint, [ok]))).toBe('INVALID_ARGUMENT');
    expect(code(() => clearRound(1n, {} as unknown as Order[]))).toBe('INVALID_ARGUMENT');
    expect(code(() => clearRound(1n, [ok], { feeBps: 10_001n }))).toBe('INVALID_ARGUMENT');
    expect(code(() => clearRound(1n, [ok], { feeBps: 5 as unknown as bigint }))).toBe('INVALID_ARGUMENT');
    expect(code(() => clearRound(1n, [ok], { ordersDigest: '0x12' as never }))).toBe('INVALID_ARGUMENT');
    expect(code(() => clearRound(1n, [ok], { validated: 'yes' as never }))).toBe('INVALID_ARGUMENT');
  });
});
