import { describe, expect, it } from 'vitest';
import { keccak256 as ethersKeccak, Transaction, TypedDataEncoder } from 'ethers';
import {
  authDigest,
  domainSeparator,
  stateDigest,
  trickleDomain,
  typedDataDigest,
  typedDigestParts,
} from './eip712.js';
import { keccak256, toAddress } from './hex.js';
import { nativeSigner } from './native.js';
import { receiptDigest } from './receipt.js';
import { nobleSigner, nobleVerifier } from './signer.js';
import { NO_LOCKS, type Bytes32, type ChannelId, type State } from './types.js';

const KEY = `0x${'61'.repeat(32)}`;
const adjudicator = toAddress('0x5FbDB2315678afecb367f032d93F642f64180aa3');
const domain = trickleDomain(31337n, adjudicator);
const sep = domainSeparator(domain);
const state: State = {
  channelId: `0x${'0c'.repeat(32)}` as ChannelId,
  version: 3n,
  paidByDevice: 10n,
  paidByHub: 0n,
  round: 0n,
  ...NO_LOCKS,
  isFinal: false,
};
const refused = { code: 'INVALID_ARGUMENT' };

for (const [name, signer] of [
  ['noble', nobleSigner(KEY)],
  ['native', nativeSigner(KEY)],
] as const) {
  describe(`${name} signer: keys sign only what they are for`, () => {
    it("signs Trickle's typed messages under the Trickle domain", () => {
      const digests = [
        stateDigest(sep, state),
        authDigest(sep, signer.address, adjudicator, `0x${'5a'.repeat(32)}` as Bytes32),
        receiptDigest(sep, {
          payer: signer.address,
          payee: adjudicator,
          token: adjudicator,
          amount: 5n,
          resource: `0x${'01'.repeat(32)}` as Bytes32,
          nonce: `0x${'02'.repeat(32)}` as Bytes32,
          expiry: 100n,
          paymentId: `0x${'03'.repeat(32)}` as Bytes32,
        }),
      ];
      for (const d of digests) expect(nobleVerifier.recoverAddress(d, signer.signDigest(d))).toBe(signer.address);
    });

    it('refuses raw bytes: a transaction hash, 32 chosen bytes', () => {
      const tx = Transaction.from({
        to: adjudicator,
        value: 10n ** 18n,
        nonce: 0,
        gasLimit: 21000n,
        chainId: 1n,
        maxFeePerGas: 1n,
        maxPriorityFeePerGas: 1n,
        type: 2,
      });
      expect(() => signer.signDigest(Uint8Array.from(Buffer.from(tx.unsignedHash.slice(2), 'hex')))).toThrow(
        expect.objectContaining(refused),
      );
      expect(() => signer.signDigest(keccak256(new Uint8Array([1, 2, 3])))).toThrow(expect.objectContaining(refused));
      expect(() => signer.signDigest(new Uint8Array(32).fill(7))).toThrow(expect.objectContaining(refused));
    });

    it("refuses another domain's typed data (an ERC-20 permit), though computed with the same functions", () => {
      const usdc = {
        name: 'USD Coin',
        version: '2',
        chainId: 1n,
        verifyingContract: toAddress(`0x${'a0'.repeat(20)}`),
      };
      const permitStruct = keccak256(new Uint8Array(192));
      const digest = typedDataDigest(domainSeparator(usdc), permitStruct);
      expect(ethersKeccak(new Uint8Array([0x19, 0x01, ...domainSeparator(usdc), ...permitStruct]))).toBe(
        `0x${Buffer.from(digest).toString('hex')}`,
      );
      expect(TypedDataEncoder.hashDomain(usdc)).toBe(`0x${Buffer.from(domainSeparator(usdc)).toString('hex')}`);
      expect(() => signer.signDigest(digest)).toThrow(expect.objectContaining(refused));
      expect(typedDigestParts(digest)).toBeUndefined();
    });

    it('refuses a Trickle digest copied, or rewritten in place, and a digest under a rewritten separator', () => {
      const d = stateDigest(sep, state);
      expect(() => signer.signDigest(d.slice())).toThrow(expect.objectContaining(refused));
      const rewritten = stateDigest(sep, state);
      rewritten.set(keccak256(new Uint8Array([9])));
      expect(() => signer.signDigest(rewritten)).toThrow(expect.objectContaining(refused));
      const forged = domainSeparator(domain);
      forged.set(domainSeparator({ ...domain, name: 'Other' }));
      expect(() => signer.signDigest(typedDataDigest(forged, new Uint8Array(32)))).toThrow(
        expect.objectContaining(refused),
      );
      expect(() => signer.signDigest(d)).not.toThrow();
    });
  });
}

describe('typedDigestParts', () => {
  it('tells what a Trickle digest is made of, so another thread can make it again', () => {
    const d = stateDigest(sep, state);
    const parts = typedDigestParts(d)!;
    expect(parts.domain).toEqual(domain);
    expect(typedDataDigest(domainSeparator(parts.domain), parts.structHash)).toEqual(d);
  });
});
