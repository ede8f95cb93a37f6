import { keccak_256 } from '@noble/hashes/sha3.js';
import { bytesToHex, hexToBytes as nobleHexToBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { MalformedError } from './errors.js';
import type { Address, Bytes32, Hex } from './types.js';

/**
 * A keccak-256 implementation. There is no process-wide setting: the functions that hash on a hot path (state
 * digests) take one as an argument, defaulting to the pure-JS {@link keccak256}; a hub or Node device passes the
 * compiled one from `bestKeccak256()` in `@trickle/protocol/native` (byte-identical, checked by the tests).
 */
export type Keccak256 = (data: Uint8Array) => Uint8Array;

/** keccak256 of bytes, in pure JS (@noble/hashes). */
export function keccak256(data: Uint8Array): Uint8Array {
  return keccak_256(data);
}

/** keccak256 of a UTF-8 string. */
export function keccakUtf8(s: string): Uint8Array {
  return keccak_256(utf8ToBytes(s));
}

/** Bytes to `0x`-prefixed lowercase hex. */
export function toHex(bytes: Uint8Array): Hex {
  return `0x${bytesToHex(bytes)}` as Hex;
}

/**
 * `0x`-prefixed hex to bytes.
 * @throws MalformedError when not even-length hex, or not `length` bytes when given
 */
export function fromHex(hex: string, length?: number): Uint8Array {
  if (typeof hex !== 'string' || !/^0x([0-9a-fA-F]{2})*$/.test(hex)) throw new MalformedError('not 0x-prefixed hex');
  const bytes = nobleHexToBytes(hex.slice(2));
  if (length !== undefined && bytes.length !== length) {
    throw new MalformedError(`expected ${length} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/**
 * EIP-55 checksum of a 20-byte address.
 * @throws MalformedError when not a 20-byte hex address, or mixed-case with a wrong checksum
 */
export function toAddress(value: string | Uint8Array): Address {
  const lower = typeof value === 'string' ? value.toLowerCase() : toHex(value);
  if (!/^0x[0-9a-f]{40}$/.test(lower)) throw new MalformedError('not a 20-byte address');
  const body = lower.slice(2);
  const hash = bytesToHex(keccak_256(utf8ToBytes(body)));
  let out = '0x';
  for (let i = 0; i < 40; i++) out += parseInt(hash[i]!, 16) >= 8 ? body[i]!.toUpperCase() : body[i]!;
  if (
    typeof value === 'string' &&
    value !== lower &&
    value.slice(2) !== value.slice(2).toUpperCase() &&
    value !== out
  ) {
    throw new MalformedError('bad EIP-55 checksum');
  }
  return out as Address;
}

/** Lowercase 32-byte hex. @throws MalformedError when not 32 bytes. */
export function toBytes32(value: string | Uint8Array): Bytes32 {
  const bytes = typeof value === 'string' ? fromHex(value, 32) : value;
  if (bytes.length !== 32) throw new MalformedError('expected 32 bytes');
  return toHex(bytes) as string as Bytes32;
}

/** Big-endian 32-byte word of an unsigned integer (the EIP-712 / ABI encoding of a static uint). */
export function uintWord(value: bigint): Uint8Array {
  const out = new Uint8Array(32);
  let v = value;
  for (let i = 31; i >= 0 && v > 0n; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

/** Concatenate byte arrays. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Bytes to bigint (big-endian). */
export function bytesToBigint(b: Uint8Array): bigint {
  return b.length === 0 ? 0n : BigInt(`0x${bytesToHex(b)}`);
}
