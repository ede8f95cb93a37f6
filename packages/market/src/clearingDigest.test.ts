import { TypedDataEncoder } from 'ethers';
import { toHex } from '@trickle/protocol/hex';
import type { Address, Bytes32, Domain } from '@trickle/protocol/types';
import { describe, expect, it } from 'vitest';
import { CLEARING_TYPE, CLEARING_TYPE_V2, clearingDigest, clearingDigestV2 } from './clearingDigest.js';

const domain: Domain = {
  name: 'Trickle',
  version: '1',
  chainId: 31337n,
  verifyingContract: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address,
};
const record = `0x${'a1'.repeat(32)}` as Bytes32;
const refunds = `0x${'b2'.repeat(32)}` as Bytes32;

// Both forms, as ethers derives them from their fields: version 3's over record and refunds, versions 1 and 2's (still
// signed for devices connected with them) over the record only.
const V3 = {
  Clearing: [
    { name: 'round', type: 'uint64' },
    { name: 'record', type: 'bytes32' },
    { name: 'refunds', type: 'bytes32' },
  ],
};
const V2 = { Clearing: V3.Clearing.slice(0, 2) };

describe('clearingDigest, both wire versions', () => {
  it('names the types ethers derives', () => {
    expect(TypedDataEncoder.from(V3).encodeType('Clearing')).toBe(CLEARING_TYPE);
    expect(TypedDataEncoder.from(V2).encodeType('Clearing')).toBe(CLEARING_TYPE_V2);
  });

  it.each([0n, 7n, 2n ** 64n - 1n])('matches ethers TypedDataEncoder.hash for round %s', (round) => {
    expect(toHex(clearingDigest(domain, round, record, refunds))).toBe(
      TypedDataEncoder.hash(domain, V3, { round, record, refunds }),
    );
    expect(toHex(clearingDigestV2(domain, round, record))).toBe(TypedDataEncoder.hash(domain, V2, { round, record }));
  });

  it('a signature of one form is not one of the other', () => {
    expect(clearingDigestV2(domain, 1n, record)).not.toEqual(clearingDigest(domain, 1n, record, refunds));
  });
});
