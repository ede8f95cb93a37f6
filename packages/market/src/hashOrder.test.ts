import { TypedDataEncoder } from 'ethers';
import { toHex } from '@trickle/protocol/hex';
import type { Address, Domain } from '@trickle/protocol/types';
import { describe, expect, it } from 'vitest';
import { hashOrder, hashOrderStruct, ORDER_TYPE, ORDER_TYPES } from './hashOrder.js';
import type { OrderTerms } from './hashOrder.js';
import { addr, oid } from './orders.fixture.js';

const domain: Domain = {
  name: 'Trickle',
  version: '1',
  chainId: 31337n,
  verifyingContract: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
};

const cases: OrderTerms[] = [
  { id: oid(1), participant: addr(1), market: 'cpu', side: 'bid', quantity: 3n, price: 10n, round: 1n },
  {
    id: oid(2n ** 255n + 7n),
    participant: addr(2),
    market: 'energy.kwh',
    side: 'ask',
    quantity: 1n,
    price: 1n,
    round: 0n,
  },
  {
    id: oid(2n ** 256n - 1n),
    participant: addr(3),
    market: 'a'.repeat(64),
    side: 'bid',
    quantity: 2n ** 128n - 1n,
    price: 2n ** 128n + 1n,
    round: 2n ** 64n - 1n,
  },
];

// ethers wants mutable field lists.
const types = { Order: ORDER_TYPES.Order.map((f) => ({ ...f })) };
const asTyped = (o: OrderTerms) => ({ ...o, side: o.side === 'bid' ? 0 : 1 });

describe('hashOrder', () => {
  it('names the type ethers derives from ORDER_TYPES', () => {
    expect(TypedDataEncoder.from(types).encodeType('Order')).toBe(ORDER_TYPE);
  });

  it.each(cases)('matches ethers TypedDataEncoder.hash for $market/$side', (o) => {
    expect(toHex(hashOrder(domain, o))).toBe(TypedDataEncoder.hash(domain, types, asTyped(o)));
  });

  it.each(cases)('struct hash matches ethers hashStruct for $market/$side', (o) => {
    expect(toHex(hashOrderStruct(o))).toBe(TypedDataEncoder.hashStruct('Order', types, asTyped(o)));
  });

  it('ignores arrival and binds the domain', () => {
    const o = cases[0]!;
    expect(hashOrder(domain, { ...o, arrival: 99n } as OrderTerms)).toEqual(hashOrder(domain, o));
    expect(hashOrder({ ...domain, chainId: 1n }, o)).not.toEqual(hashOrder(domain, o));
  });

  it('uses the market-hash cache without changing the result', () => {
    const cache = new Map<string, Uint8Array>();
    const o = cases[1]!;
    expect(hashOrderStruct(o, cache)).toEqual(hashOrderStruct(o));
    expect(cache.has(o.market)).toBe(true);
    expect(hashOrderStruct(o, cache)).toEqual(hashOrderStruct(o));
  });
});
