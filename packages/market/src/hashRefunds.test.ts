import { AbiCoder, keccak256, toUtf8Bytes } from 'ethers';
import { isTrickleError } from '@trickle/protocol/errors';
import { describe, expect, it } from 'vitest';
import { REFUNDS_TAG, hashRefunds } from './hashRefunds.js';
import { addr } from './orders.fixture.js';
import type { Refund } from './published.js';

const id = (k: number) => `0x${k.toString(16).padStart(64, '0')}` as Refund['orderId'];
const refunds: Refund[] = [
  { participant: addr(1), orderId: id(7), amount: 40n },
  { participant: addr(2), orderId: id(3), amount: (1n << 256n) - 1n },
];

/** The documented encoding, spelled out with ethers' ABI encoder (abi.encode of static types = words). */
function expected(rs: readonly Refund[]): string {
  const types = ['bytes32', 'uint256', ...rs.flatMap(() => ['address', 'bytes32', 'uint256'])];
  const values = [
    keccak256(toUtf8Bytes(REFUNDS_TAG)),
    rs.length,
    ...rs.flatMap((x) => [x.participant, x.orderId, x.amount]),
  ];
  return keccak256(AbiCoder.defaultAbiCoder().encode(types, values));
}

describe('hashRefunds', () => {
  it('is keccak256 of the documented words, for none, one and several refunds', () => {
    for (const rs of [[], refunds.slice(0, 1), refunds]) expect(hashRefunds(rs)).toBe(expected(rs));
  });

  it('commits to every field and to the order of the list', () => {
    const base = hashRefunds(refunds);
    expect(hashRefunds([{ ...refunds[0]!, amount: 41n }, refunds[1]!])).not.toBe(base);
    expect(hashRefunds([{ ...refunds[0]!, participant: addr(3) }, refunds[1]!])).not.toBe(base);
    expect(hashRefunds([{ ...refunds[0]!, orderId: id(8) }, refunds[1]!])).not.toBe(base);
    expect(hashRefunds([refunds[1]!, refunds[0]!])).not.toBe(base);
  });

  it('refuses a field that does not fit its word (BAD_CLEARING, the path named)', () => {
    const path = (rs: unknown[]) => {
      try {
        hashRefunds(rs as Refund[]);
      } catch (e) {
        if (isTrickleError(e, 'BAD_CLEARING')) return e.details.path;
        throw e;
      }
      return 'none';
    };
    expect(path([{ ...refunds[0]!, amount: -1n }])).toBe('refunds[0].amount');
    expect(path([{ ...refunds[0]!, amount: 1n << 256n }])).toBe('refunds[0].amount');
    expect(path([refunds[0]!, { ...refunds[1]!, participant: '0x12' }])).toBe('refunds[1].participant');
    expect(path([{ ...refunds[0]!, orderId: '0x00' }])).toBe('refunds[0].orderId');
  });
});
