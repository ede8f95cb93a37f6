import { isTrickleError } from '@trickle/protocol/errors';
import { MAX_UINT256, MAX_UINT64 } from '@trickle/protocol/types';
import { describe, expect, it } from 'vitest';
import { escrowFor, validateOrder } from './order.js';
import type { Order } from './order.js';
import { addr, oid, order } from './orders.fixture.js';

function failure(value: unknown): { code: string; field: unknown } {
  try {
    validateOrder(value);
  } catch (e) {
    if (!isTrickleError(e)) throw e;
    return { code: e.code, field: e.details.field };
  }
  throw new Error('accepted');
}

/** The address with its first lowercase hex letter upper-cased: a wrong EIP-55 checksum. */
const flipCase = (a: string): string => a.replace(/[a-f]/, (c) => c.toUpperCase());

describe('validateOrder', () => {
  const good = order({ side: 'bid', quantity: 2n, price: 5n, participant: addr(1), id: oid(0xabcdefn) });

  it('accepts a well-formed order, including the range limits', () => {
    expect(() => validateOrder(good)).not.toThrow();
    expect(() => validateOrder({ ...good, market: 'a.b-c_9', round: MAX_UINT64, arrival: MAX_UINT64 })).not.toThrow();
    expect(() => validateOrder({ ...good, quantity: 1n, price: 2n ** 128n - 1n })).not.toThrow();
  });

  it.each<[string, unknown, string]>([
    ['not an object', null, 'order'],
    ['uppercase id', { ...good, id: good.id.toUpperCase().replace('0X', '0x') }, 'id'],
    ['short id', { ...good, id: '0x1234' }, 'id'],
    ['lowercase address', { ...good, participant: good.participant.toLowerCase() }, 'participant'],
    ['bad checksum', { ...good, participant: flipCase(good.participant) }, 'participant'],
    ['not an address', { ...good, participant: '0x12' }, 'participant'],
    ['empty market', { ...good, market: '' }, 'market'],
    ['uppercase market', { ...good, market: 'CPU' }, 'market'],
    ['long market', { ...good, market: 'a'.repeat(65) }, 'market'],
    ['bad side', { ...good, side: 'buy' }, 'side'],
    ['zero quantity', { ...good, quantity: 0n }, 'quantity'],
    ['number quantity', { ...good, quantity: 2 }, 'quantity'],
    ['zero price', { ...good, price: 0n }, 'price'],
    ['negative price', { ...good, price: -1n }, 'price'],
    ['round above uint64', { ...good, round: MAX_UINT64 + 1n }, 'round'],
    ['negative arrival', { ...good, arrival: -1n }, 'arrival'],
    ['value above uint256', { ...good, quantity: 2n, price: MAX_UINT256 }, 'quantity'],
    ['value above 2^128 − 1', { ...good, quantity: 1n, price: 2n ** 128n }, 'quantity'],
    ['price at uint256 max', { ...good, quantity: 1n, price: MAX_UINT256 }, 'quantity'],
  ])('rejects %s with BAD_ORDER', (_, value, field) => {
    expect(failure(value)).toEqual({ code: 'BAD_ORDER', field });
  });

  it('accepts an address without letters, which is its own checksum form', () => {
    const digits = `0x${'1'.repeat(40)}`;
    expect(() => validateOrder({ ...good, participant: digits })).not.toThrow();
  });
});

describe('escrowFor', () => {
  it('is quantity × limit for a bid and nothing for an ask', () => {
    const bid: Order = order({ side: 'bid', quantity: 3n, price: 7n });
    expect(escrowFor(bid)).toBe(21n);
    expect(escrowFor({ ...bid, side: 'ask' })).toBe(0n);
  });
});
