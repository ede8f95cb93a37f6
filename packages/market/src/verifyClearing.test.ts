import { isTrickleError } from '@trickle/protocol/errors';
import { describe, expect, it } from 'vitest';
import { clearRound } from './clearRound.js';
import type { Order } from './order.js';
import { addr, oid, order } from './orders.fixture.js';
import type { ClearingRecord } from './record.js';
import { verifyClearing } from './verifyClearing.js';
import type { VerifyOptions } from './verifyClearing.js';

const orders: Order[] = [
  order({ side: 'bid', quantity: 4n, price: 12n, participant: addr(1) }),
  order({ side: 'ask', quantity: 3n, price: 9n, participant: addr(2) }),
  order({ side: 'ask', quantity: 3n, price: 10n, participant: addr(3), market: 'kwh' }),
];
const options = { feeBps: 500n }; // 5% of 36 = 1.8: a fee of 1
const record = clearRound(1n, orders, options);

function failure(r: unknown, os: unknown = orders, o: VerifyOptions = options): { code: string; path?: unknown } {
  try {
    verifyClearing(r as ClearingRecord, os as Order[], o);
  } catch (e) {
    if (!isTrickleError(e)) throw e;
    return e.code === 'BAD_CLEARING' ? { code: e.code, path: e.details.path } : { code: e.code };
  }
  return { code: 'none' };
}

describe('verifyClearing', () => {
  it('accepts the honest record, also one built on the hub path', () => {
    expect(failure(record)).toEqual({ code: 'none' });
    const hub = clearRound(1n, orders, { ...options, validated: true, ordersDigest: record.ordersDigest });
    expect(failure(hub, orders, { ...options, round: 1n })).toEqual({ code: 'none' });
  });

  it.each<[string, (r: ClearingRecord) => unknown, string]>([
    ['price', (r) => ({ ...r, markets: [{ ...r.markets[0]!, price: 11n }, r.markets[1]] }), 'record.markets[0].price'],
    [
      'fill quantity',
      (r) => {
        const [m, ...rest] = r.markets;
        return { ...r, markets: [{ ...m!, fills: m!.fills.map((f) => ({ ...f, quantity: 2n })) }, ...rest] };
      },
      'record.markets[0].fills[0].quantity',
    ],
    [
      'net',
      (r) => ({ ...r, nets: r.nets.map((n, k) => (k === 0 ? { ...n, net: n.net + 1n } : n)) }),
      'record.nets[0].net',
    ],
    ['credit', (r) => ({ ...r, credits: r.credits.slice(1) }), 'record.credits'],
    ['fee', (r) => ({ ...r, fee: 0n }), 'record.fee'],
    ['orders digest', (r) => ({ ...r, ordersDigest: oid(1) }), 'record.ordersDigest'],
    ['an extra field', (r) => ({ ...r, note: 'hi' }), 'record.note'],
    ['an extra field named like an Object member', (r) => ({ ...r, toString: 'hi' }), 'record.toString'],
    [
      'an extra field in a fill named like an Object member',
      (r) => {
        const [m, ...rest] = r.markets;
        return { ...r, markets: [{ ...m!, fills: m!.fills.map((f) => ({ ...f, constructor: 1 })) }, ...rest] };
      },
      'record.markets[0].fills[0].constructor',
    ],
    ['a number for a bigint', (r) => ({ ...r, fee: Number(r.fee) }), 'record.fee'],
    ['round', (r) => ({ ...r, round: 2n }), 'record.round'],
    ['not an object', () => null, 'record'],
  ])('rejects a changed %s with BAD_CLEARING', (_, tamper, path) => {
    expect(failure(tamper(record))).toEqual({ code: 'BAD_CLEARING', path });
  });

  it('rejects a record for another fee or round than the verifier agreed to', () => {
    expect(record.fee).toBe(1n);
    expect(failure(record, orders, { feeBps: 0n }).code).toBe('BAD_CLEARING');
    expect(failure(record, orders, { ...options, round: 2n })).toEqual({ code: 'BAD_CLEARING', path: 'record.round' });
    const empty = clearRound(5n, []);
    expect(failure(empty, [], { round: 5n })).toEqual({ code: 'none' });
    expect(failure({ ...empty, round: 6n }, [], { round: 5n })).toEqual({ code: 'BAD_CLEARING', path: 'record.round' });
  });

  it('rejects a consistent-looking but suboptimal clearing: every sum adds up, but a crossing bid was left out', () => {
    // A hub that favours one seller: it clears the book without the second seller's cheaper ask, so the first sells
    // at a higher price. Fills, nets, credits and fee agree with each other and with the (full) orders digest.
    const book: Order[] = [
      order({ side: 'bid', quantity: 2n, price: 20n, participant: addr(1) }),
      order({ side: 'ask', quantity: 1n, price: 10n, participant: addr(2) }),
      order({ side: 'ask', quantity: 1n, price: 4n, participant: addr(3) }),
    ];
    const honest = clearRound(1n, book, options);
    const favoured = clearRound(1n, book.slice(0, 2), { ...options, ordersDigest: honest.ordersDigest });
    // Add the left-out seller back with nothing: one entry per participant, as the honest record has.
    const forged: ClearingRecord = {
      ...favoured,
      nets: [...favoured.nets, { participant: addr(3), net: 0n }],
      credits: [...favoured.credits, { participant: addr(3), amount: 0n }],
    };
    expect(forged.nets.reduce((x, n) => x + n.net, 0n)).toBe(-forged.fee);
    expect(failure(forged, book)).toMatchObject({ code: 'BAD_CLEARING' });
    expect(failure(honest, book)).toEqual({ code: 'none' });
  });

  it('rejects a record whose orders were tampered with, and malformed orders with BAD_ORDER', () => {
    const more = orders.map((o, k) => (k === 0 ? { ...o, quantity: 5n } : o));
    expect(failure(record, more).code).toBe('BAD_CLEARING');
    expect(failure(record, [...orders, orders[0]!])).toEqual({ code: 'BAD_ORDER' });
    expect(failure(record, [{ ...orders[0]!, id: '0xNOPE' }, ...orders.slice(1)])).toEqual({ code: 'BAD_ORDER' });
  });
});
