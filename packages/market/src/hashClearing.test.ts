import { AbiCoder, keccak256, toUtf8Bytes } from 'ethers';
import { isTrickleError } from '@trickle/protocol/errors';
import { describe, expect, it } from 'vitest';
import { clearRound } from './clearRound.js';
import { CLEARING_TAG, hashClearing } from './hashClearing.js';
import { addr, order } from './orders.fixture.js';
import type { ClearingRecord } from './record.js';

const orders = [
  order({ side: 'bid', quantity: 4n, price: 12n, participant: addr(1) }),
  order({ side: 'ask', quantity: 3n, price: 2n ** 120n, participant: addr(1), market: 'kwh' }),
  order({ side: 'ask', quantity: 3n, price: 9n, participant: addr(2) }),
  order({ side: 'bid', quantity: 1n, price: 1n, participant: addr(3), market: 'gpu' }),
];
const record = clearRound(1n, orders, { feeBps: 700n });

/** The documented encoding, spelled out with ethers' ABI encoder (abi.encode of static types = words). */
function expected(r: ClearingRecord): string {
  const types: string[] = ['bytes32', 'uint256', 'bytes32', 'uint256', 'uint256'];
  const values: unknown[] = [keccak256(toUtf8Bytes(CLEARING_TAG)), r.round, r.ordersDigest, r.fee, r.markets.length];
  for (const m of r.markets) {
    types.push('bytes32', 'uint256', 'uint256', 'uint256', 'uint256');
    values.push(keccak256(toUtf8Bytes(m.market)), m.price === null ? 0 : 1, m.price ?? 0n, m.volume, m.fills.length);
    for (const f of m.fills) {
      types.push('bytes32', 'address', 'uint8', 'uint256', 'uint256');
      values.push(f.orderId, f.participant, f.side === 'bid' ? 0 : 1, f.quantity, f.amount);
    }
  }
  types.push('uint256');
  values.push(r.nets.length);
  for (const n of r.nets) {
    types.push('address', 'int256');
    values.push(n.participant, n.net);
  }
  types.push('uint256');
  values.push(r.credits.length);
  for (const c of r.credits) {
    types.push('address', 'uint256');
    values.push(c.participant, c.amount);
  }
  return keccak256(AbiCoder.defaultAbiCoder().encode(types, values));
}

describe('hashClearing', () => {
  it('is keccak256 of the documented word encoding (negative nets as int256, null price as 0/0)', () => {
    expect(record.nets.some((n) => n.net < 0n)).toBe(true);
    expect(record.markets.some((m) => m.price === null)).toBe(true);
    expect(hashClearing(record)).toBe(expected(record));
    const empty = clearRound(9n, []);
    expect(hashClearing(empty)).toBe(expected(empty));
  });

  it('changes with any field', () => {
    const h = hashClearing(record);
    expect(hashClearing({ ...record, fee: record.fee + 1n })).not.toBe(h);
    const [first, ...rest] = record.markets;
    expect(hashClearing({ ...record, markets: [{ ...first!, price: null }, ...rest] })).not.toBe(h);
    expect(hashClearing({ ...record, nets: record.nets.map((n) => ({ ...n, net: -n.net })) })).not.toBe(h);
  });

  it('refuses values that do not fit their word with BAD_CLEARING', () => {
    const code = (r: unknown): string => {
      try {
        hashClearing(r as ClearingRecord);
      } catch (e) {
        if (isTrickleError(e)) return e.code;
        throw e;
      }
      return 'none';
    };
    expect(code({ ...record, fee: -1n })).toBe('BAD_CLEARING');
    expect(code({ ...record, round: 2n ** 256n })).toBe('BAD_CLEARING');
    expect(code({ ...record, nets: [{ participant: addr(1), net: -(2n ** 255n) - 1n }] })).toBe('BAD_CLEARING');
    expect(code({ ...record, credits: [{ participant: '0x12', amount: 1n }] })).toBe('BAD_CLEARING');
    expect(code({ ...record, ordersDigest: '0x12' })).toBe('BAD_CLEARING');
  });
});
