import * as secp from '@noble/secp256k1';
import { hmac } from '@noble/hashes/hmac.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { BadSignatureError, TrickleError } from './errors.js';
import { fromHex, keccak256, toAddress, toHex, bytesToBigint, uintWord } from './hex.js';
import { assertSignable } from './signable.js';
import type { Address, Hex, SignatureHex } from './types.js';

/** secp256k1 group order and half of it: signatures with s above half are malleable and refused. */
export const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
export const SECP256K1_HALF_N = SECP256K1_N >> 1n;

/**
 * Signs Trickle's typed messages with one key. Keys never travel as strings: code passes a Signer around, and a
 * Signer signs only the digests of Trickle's own EIP-712 messages under the Trickle domain — a channel state, the
 * hub handshake, a clearing record, an order, a receipt — never a transaction hash or another domain's typed data,
 * so handing one to code is not handing over the key. Implementations are deterministic (RFC 6979) and low-s, so
 * every backend yields the same bytes.
 */
export interface Signer {
  /** The signer's EIP-55 address. */
  readonly address: Address;
  /**
   * Sign a digest made by `stateDigest`, `authDigest`, `receiptDigest`, `clearingDigest` or `hashOrder` (any
   * `typedDataDigest` under a Trickle domain), as that very array, unchanged.
   * @returns 65 bytes r ‖ s ‖ v with v ∈ {27, 28}
   * @throws TrickleError('INVALID_ARGUMENT') for any other bytes
   */
  signDigest(digest: Uint8Array): Uint8Array;
}

/** Recovers the address that signed a digest. */
export interface Verifier {
  /**
   * @param digest - 32-byte digest
   * @param signature - 65 bytes r ‖ s ‖ v
   * @returns the signer's address
   * @throws BadSignatureError for a malformed, high-s, bad-v or unrecoverable signature
   */
  recoverAddress(digest: Uint8Array, signature: Uint8Array): Address;
}

/** n and n/2 as 32-byte big-endian words, for {@link checkSignatureShape}. */
const N_WORD = uintWord(SECP256K1_N);
const HALF_N_WORD = uintWord(SECP256K1_HALF_N);

/**
 * Check the shape of a 65-byte Ethereum signature: r and s in range, s in the lower half, v 27 or 28.
 * @returns the recovery bit (0 or 1)
 * @throws BadSignatureError otherwise
 */
export function checkSignatureShape(signature: Uint8Array): 0 | 1 {
  if (signature.length !== 65) throw new BadSignatureError('signature must be 65 bytes');
  const v = signature[64]!;
  if (v !== 27 && v !== 28) throw new BadSignatureError('v must be 27 or 28', { details: { v } });
  // r and s compared as 32-byte big-endian words, byte by byte: the same bounds as bigints, without two hex strings
  // and two BigInt parses per signature (a hub checks one per device update).
  if (isZeroWord(signature, 0) || compareWord(signature, 0, N_WORD) >= 0) throw new BadSignatureError('r out of range');
  if (isZeroWord(signature, 32) || compareWord(signature, 32, HALF_N_WORD) > 0)
    throw new BadSignatureError('s is zero or in the upper half (malleable)');
  return (v - 27) as 0 | 1;
}

function isZeroWord(b: Uint8Array, at: number): boolean {
  for (let i = at; i < at + 32; i++) if (b[i] !== 0) return false;
  return true;
}

/** The 32 bytes of `b` at `at` against `word`, both big-endian: negative, zero or positive. */
function compareWord(b: Uint8Array, at: number, word: Uint8Array): number {
  for (let i = 0; i < 32; i++) {
    const d = b[at + i]! - word[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** Address of an uncompressed 65-byte public key (0x04 ‖ x ‖ y). */
export function addressOfPublicKey(uncompressed: Uint8Array): Address {
  return toAddress(keccak256(uncompressed.subarray(1)).subarray(12));
}

function checkDigest(digest: Uint8Array): void {
  if (digest.length !== 32) throw new TrickleError('INVALID_ARGUMENT', 'digest must be 32 bytes');
}

function privateKeyBytes(privateKey: string | Uint8Array): Uint8Array {
  const key = typeof privateKey === 'string' ? fromHex(privateKey, 32) : privateKey;
  const k = bytesToBigint(key);
  if (key.length !== 32 || k === 0n || k >= SECP256K1_N) {
    throw new TrickleError('INVALID_ARGUMENT', 'private key must be 32 bytes in [1, n-1]');
  }
  return key;
}

/**
 * noble's synchronous sign needs SHA-256 and HMAC-SHA-256 (RFC 6979 deterministic nonces); pure functions, set by
 * the first {@link nobleSigner}. Not at import: recovering a signer (all a verifier does) needs neither, so a bundle
 * that only verifies with noble — the browser device client, which signs with the Signer its app hands it — leaves
 * both hashes out (test/browser-bundle.e2e.test.ts).
 */
function useNobleHashes(): void {
  secp.hashes.hmacSha256 ??= (k, m) => hmac(sha256, k, m);
  secp.hashes.sha256 ??= sha256;
}

/**
 * A pure-JS signer (@noble/secp256k1): the default for device code, runs anywhere.
 * @param privateKey - 32-byte key, as bytes or 0x-hex
 * @example
 * ```ts
 * const signer = nobleSigner('0x' + '11'.repeat(32));
 * const sig = signer.signDigest(stateDigest(sep, state));
 * ```
 */
export function nobleSigner(privateKey: string | Uint8Array): Signer {
  useNobleHashes();
  const key = privateKeyBytes(privateKey);
  const address = addressOfPublicKey(secp.getPublicKey(key, false));
  return {
    address,
    signDigest(digest) {
      checkDigest(digest);
      assertSignable(digest);
      const rec = secp.sign(digest, key, { prehash: false, lowS: true, format: 'recovered' });
      // noble puts the recovery byte first; Ethereum wants r ‖ s ‖ v with v = 27 + recovery.
      const out = new Uint8Array(65);
      out.set(rec.subarray(1, 65), 0);
      out[64] = 27 + rec[0]!;
      return out;
    },
  };
}

/** A pure-JS verifier (@noble/secp256k1). */
export const nobleVerifier: Verifier = {
  recoverAddress(digest, signature) {
    checkDigest(digest);
    const recovery = checkSignatureShape(signature);
    const rec = new Uint8Array(65);
    rec[0] = recovery;
    rec.set(signature.subarray(0, 64), 1);
    let pub: Uint8Array;
    try {
      pub = secp.recoverPublicKey(rec, digest, { prehash: false, isCompressed: false } as never);
    } catch (cause) {
      throw new BadSignatureError('signature does not recover to a public key', { cause });
    }
    return addressOfPublicKey(pub.length === 65 ? pub : secp.Point.fromBytes(pub).toBytes(false));
  },
};

/**
 * Recover and compare in one step.
 * @throws BadSignatureError when the signature is malformed or by someone other than `expected`
 */
export function verifySignature(
  verifier: Verifier,
  digest: Uint8Array,
  signature: Uint8Array,
  expected: Address,
): void {
  const got = verifier.recoverAddress(digest, signature);
  if (got !== expected) throw new BadSignatureError('signed by the wrong key', { details: { expected, got } });
}

/** Signature bytes to hex. */
export function signatureToHex(sig: Uint8Array): SignatureHex {
  return toHex(sig) as string as SignatureHex;
}

/** Signature hex to bytes. @throws MalformedError when not 65 bytes of hex. */
export function signatureFromHex(sig: SignatureHex | string): Uint8Array {
  return fromHex(sig, 65);
}
