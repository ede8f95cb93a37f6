import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { SigningKey, Wallet, recoverAddress } from 'ethers';
import { nobleSigner, nobleVerifier, checkSignatureShape, SECP256K1_N, verifySignature } from './signer.js';
import { nativeSigner, nativeVerifier, loadNativeSecp } from './native.js';
import { toHex, uintWord, toAddress } from './hex.js';
import { isTrickleError } from './errors.js';
import { domainSeparator, trickleDomain, typedDataDigest } from './eip712.js';

// Signers sign only Trickle typed-data digests: random struct hashes under a Trickle domain give random digests.
const SEP = domainSeparator(trickleDomain(31337n, toAddress(`0x${'ab'.repeat(20)}`)));

const keyArb = fc.uint8Array({ minLength: 32, maxLength: 32 }).filter((k) => {
  const v = BigInt(toHex(k));
  return v > 0n && v < SECP256K1_N;
});
const digestArb = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((structHash) => typedDataDigest(SEP, structHash));

describe('signer backends', () => {
  it('the native binding is installed here (the hub relies on it)', () => {
    expect(loadNativeSecp()).toBeDefined();
  });

  it('noble and libsecp256k1 produce byte-identical signatures that ethers recovers', () => {
    const nv = nativeVerifier();
    fc.assert(
      fc.property(keyArb, digestArb, (key, digest) => {
        const a = nobleSigner(key);
        const b = nativeSigner(key);
        expect(a.address).toBe(b.address);
        expect(a.address).toBe(new Wallet(toHex(key)).address);
        const sa = a.signDigest(digest);
        expect(toHex(b.signDigest(digest))).toBe(toHex(sa));
        expect(toHex(sa)).toBe(new SigningKey(toHex(key)).sign(digest).serialized);
        expect(nobleVerifier.recoverAddress(digest, sa)).toBe(a.address);
        expect(nv.recoverAddress(digest, sa)).toBe(a.address);
        expect(recoverAddress(digest, toHex(sa))).toBe(a.address);
      }),
      { numRuns: 200 },
    );
  });

  const signer = nobleSigner('0x' + '11'.repeat(32));
  const digest = typedDataDigest(SEP, new Uint8Array(32).fill(7));
  const good = signer.signDigest(digest);

  for (const [name, verifier] of [
    ['noble', nobleVerifier],
    ['native', nativeVerifier()],
  ] as const) {
    it(`${name}: rejects high-s (the malleable twin of a valid signature)`, () => {
      const s = BigInt(toHex(good.subarray(32, 64)));
      const twin = new Uint8Array(good);
      twin.set(uintWord(SECP256K1_N - s), 32);
      twin[64] = good[64] === 27 ? 28 : 27;
      expect(() => verifier.recoverAddress(digest, twin)).toThrow(expect.objectContaining({ code: 'BAD_SIGNATURE' }));
    });
    it(`${name}: r and s at the bounds of their ranges (r in [1, n-1], s in [1, n/2])`, () => {
      const shaped = (r: bigint, s: bigint) => {
        const x = new Uint8Array(good);
        x.set(uintWord(r), 0);
        x.set(uintWord(s), 32);
        return x;
      };
      const refused = (x: Uint8Array, why: RegExp) =>
        expect(() => verifier.recoverAddress(digest, x)).toThrow(
          expect.objectContaining({ code: 'BAD_SIGNATURE', message: expect.stringMatching(why) }),
        );
      const half = SECP256K1_N >> 1n;
      refused(shaped(SECP256K1_N, 1n), /r out of range/);
      refused(shaped((1n << 256n) - 1n, 1n), /r out of range/);
      refused(shaped(0n, 1n), /r out of range/);
      refused(shaped(1n, half + 1n), /upper half/);
      refused(shaped(1n, 0n), /upper half/);
      refused(shaped(1n, SECP256K1_N - 1n), /upper half/);
      // in range: whatever the curve then says, never the shape's refusal
      for (const [r, s] of [
        [SECP256K1_N - 1n, half],
        [1n, 1n],
        [SECP256K1_N - 1n, 1n],
      ] as const) {
        try {
          verifier.recoverAddress(digest, shaped(r, s));
        } catch (e) {
          expect(String((e as Error).message)).not.toMatch(/out of range|upper half/);
        }
      }
    });
    it(`${name}: rejects bad v, zero r, wrong length`, () => {
      for (const v of [0, 1, 26, 29, 255]) {
        const x = new Uint8Array(good);
        x[64] = v;
        expect(() => verifier.recoverAddress(digest, x)).toThrow(expect.objectContaining({ code: 'BAD_SIGNATURE' }));
      }
      const zr = new Uint8Array(good);
      zr.fill(0, 0, 32);
      expect(() => verifier.recoverAddress(digest, zr)).toThrow(expect.objectContaining({ code: 'BAD_SIGNATURE' }));
      expect(() => verifier.recoverAddress(digest, good.subarray(0, 64))).toThrow(
        expect.objectContaining({ code: 'BAD_SIGNATURE' }),
      );
    });
    it(`${name}: an r that is not on the curve does not recover`, () => {
      // r = 5 has no point with that x on secp256k1 for either parity (checked by the throw).
      const x = new Uint8Array(good);
      x.set(uintWord(5n), 0);
      let threw = false;
      try {
        verifier.recoverAddress(digest, x);
      } catch (e) {
        threw = isTrickleError(e, 'BAD_SIGNATURE');
      }
      expect(threw).toBe(true);
    });
  }

  it('verifySignature names the wrong signer', () => {
    const other = nobleSigner('0x' + '22'.repeat(32));
    expect(() => verifySignature(nobleVerifier, digest, good, other.address)).toThrow(
      expect.objectContaining({ code: 'BAD_SIGNATURE' }),
    );
    expect(() => verifySignature(nobleVerifier, digest, good, signer.address)).not.toThrow();
  });

  it('refuses invalid private keys', () => {
    for (const k of ['0x' + '00'.repeat(32), toHex(uintWord(SECP256K1_N)), '0x1234']) {
      expect(() => nobleSigner(k as never)).toThrow();
      expect(() => nativeSigner(k as never)).toThrow();
    }
  });

  it('checkSignatureShape returns the recovery bit', () => {
    expect([0, 1]).toContain(checkSignatureShape(good));
  });

  it('EIP-55: checksums and rejects a wrong mixed-case checksum', () => {
    expect(toAddress('0x5fbdb2315678afecb367f032d93f642f64180aa3')).toBe('0x5FbDB2315678afecb367f032d93F642f64180aa3');
    expect(() => toAddress('0x5FbDB2315678afecb367f032d93F642f64180aA3')).toThrow(
      expect.objectContaining({ code: 'MALFORMED' }),
    );
  });
});
