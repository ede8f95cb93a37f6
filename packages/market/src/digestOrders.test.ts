import { concatBytes, fromHex, keccak256, toHex, uintWord } from '@trickle/protocol/hex';
import { describe, expect, it } from 'vitest';
import { appendOrderDigest, digestOrders, EMPTY_ORDERS_DIGEST } from './digestOrders.js';
import { hashOrderStruct } from './hashOrder.js';
import { addr, order, oid } from './orders.fixture.js';

describe('digestOrders', () => {
  const a = order({ side: 'bid', quantity: 1n, price: 2n, arrival: 5n, id: oid(9) });
  const b = order({ side: 'ask', quantity: 3n, price: 1n, arrival: 7n, id: oid(1), participant: addr(2) });
  const c = order({ side: 'ask', quantity: 3n, price: 1n, arrival: 7n, id: oid(2), participant: addr(3) });

  it('is 32 zero bytes for no orders', () => {
    expect(digestOrders([])).toBe(EMPTY_ORDERS_DIGEST);
    expect(EMPTY_ORDERS_DIGEST).toBe(`0x${'00'.repeat(32)}`);
  });

  it('is the hash chain over the orders by (arrival, id)', () => {
    let d = fromHex(EMPTY_ORDERS_DIGEST, 32);
    for (const o of [a, b, c]) d = keccak256(concatBytes(d, hashOrderStruct(o), uintWord(o.arrival)));
    expect(digestOrders([c, a, b])).toBe(toHex(d));
  });

  it('equals folding appendOrderDigest in time priority, whatever order the list is in', () => {
    const folded = [a, b, c].reduce((d, o) => appendOrderDigest(d, o), EMPTY_ORDERS_DIGEST);
    expect(digestOrders([b, c, a])).toBe(folded);
    expect(digestOrders([a, c, b])).toBe(folded);
  });

  it('commits to arrival and to every signed term', () => {
    const base = digestOrders([a, b]);
    expect(digestOrders([{ ...a, arrival: 6n }, b])).not.toBe(base);
    expect(digestOrders([{ ...a, price: 3n }, b])).not.toBe(base);
    expect(digestOrders([{ ...a, market: 'gpu' }, b])).not.toBe(base);
    expect(digestOrders([a])).not.toBe(base);
  });
});
