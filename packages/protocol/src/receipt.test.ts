import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TypedDataEncoder } from 'ethers';
import { domainSeparator, trickleDomain } from './eip712.js';
import { toHex } from './hex.js';
import {
  RECEIPT_TYPES,
  receiptDigest,
  recoverReceiptSigner,
  resourceHash,
  signReceipt,
  signedReceiptFromJson,
  signedReceiptToJson,
  type Receipt,
} from './receipt.js';
import { nobleSigner, nobleVerifier } from './signer.js';
import type { Address, Bytes32 } from './types.js';

const hubKey = `0x${'11'.repeat(32)}`;
const otherKey = `0x${'22'.repeat(32)}`;
const adjudicator = '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address;
const domain = trickleDomain(31337n, adjudicator);
const separator = domainSeparator(domain);
const receipt: Receipt = {
  payer: nobleSigner(otherKey).address,
  payee: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8' as Address,
  token: '0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512' as Address,
  amount: 1_000n,
  resource: resourceHash('sensor-7/readings'),
  nonce: `0x${'ab'.repeat(32)}` as Bytes32,
  expiry: 1_900_000_000n,
  paymentId: `0x${'cd'.repeat(32)}` as Bytes32,
};

describe('payment receipts', () => {
  it('hash exactly as EIP-712 typed data (ethers TypedDataEncoder) under the Trickle domain', () => {
    const expected = TypedDataEncoder.hash(
      { name: domain.name, version: domain.version, chainId: domain.chainId, verifyingContract: adjudicator },
      { Receipt: [...RECEIPT_TYPES.Receipt] },
      receipt,
    );
    expect(toHex(receiptDigest(separator, receipt))).toBe(expected);
  });

  it('recover to the hub that signed them, and to somebody else once any field changes', () => {
    const hub = nobleSigner(hubKey);
    const signed = signReceipt(hub, separator, receipt);
    expect(recoverReceiptSigner(nobleVerifier, separator, signed)).toBe(hub.address);
    const tampered = { ...signed, receipt: { ...receipt, amount: 999n } };
    expect(recoverReceiptSigner(nobleVerifier, separator, tampered)).not.toBe(hub.address);
    const otherDomain = domainSeparator(trickleDomain(1n, adjudicator));
    expect(recoverReceiptSigner(nobleVerifier, otherDomain, signed)).not.toBe(hub.address);
  });

  it('round-trip through JSON for any field values', () => {
    const hub = nobleSigner(hubKey);
    fc.assert(
      fc.property(
        fc.bigInt({ min: 1n, max: (1n << 256n) - 1n }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.string(),
        (amount, expiry, name) => {
          const r = { ...receipt, amount, expiry, resource: resourceHash(name) };
          const signed = signReceipt(hub, separator, r);
          const back = signedReceiptFromJson(JSON.parse(JSON.stringify(signedReceiptToJson(signed))));
          expect(back).toEqual(signed);
        },
      ),
      { numRuns: 50 },
    );
  });

  it('refuse malformed JSON with MALFORMED naming the field', () => {
    const good = signedReceiptToJson(signReceipt(nobleSigner(hubKey), separator, receipt));
    const cases: [Record<string, unknown>, string][] = [
      [{ ...good, amount: '0' }, 'amount'],
      [{ ...good, amount: '-1' }, 'amount'],
      [{ ...good, amount: '01' }, 'amount'],
      [{ ...good, amount: (1n << 256n).toString() }, 'amount'],
      [{ ...good, expiry: (1n << 64n).toString() }, 'expiry'],
      [{ ...good, nonce: '0x12' }, 'nonce'],
      [{ ...good, payee: 'nobody' }, 'payee'],
      [{ ...good, sig: '0x' }, 'sig'],
      [{ ...good, resource: 7 }, 'resource'],
    ];
    for (const [v, field] of cases) {
      try {
        signedReceiptFromJson(v);
        expect.unreachable(field);
      } catch (e) {
        expect((e as { code: string }).code).toBe('MALFORMED');
        expect((e as { details: { field: string } }).details.field).toBe(field);
      }
    }
    expect(() => signedReceiptFromJson(null)).toThrow();
    expect(() => signedReceiptFromJson('x')).toThrow();
  });
});
