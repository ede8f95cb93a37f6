import { keccak_256 } from '@noble/hashes/sha3.js';
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

const UTF8 = new TextEncoder();

/** A string's UTF-8 bytes (one encoder for the package). */
export const utf8 = (s: string): Uint8Array => UTF8.encode(s);

/** keccak256 of a UTF-8 string. */
export function keccakUtf8(s: string): Uint8Array {
  return keccak_256(UTF8.encode(s));
}

/** Where the runtime has `Uint8Array.prototype.toHex` (one flat string, native). */
const HEX_BUILTIN = typeof (Uint8Array.prototype as { toHex?: unknown }).toHex === 'function';

/** Bytes to `0x`-prefixed lowercase hex. */
export function toHex(bytes: Uint8Array): Hex {
  return HEX_BUILTIN
    ? (`0x${(bytes as Uint8Array & { toHex(): string }).toHex()}` as Hex)
    : bytesHex(bytes, 0, bytes.length);
}

/** The two hex digits' ASCII codes of every byte value. */
const HEX_CODES = new Uint8Array(512);
for (let i = 0; i < 256; i++) {
  HEX_CODES[2 * i] = '0123456789abcdef'.charCodeAt(i >> 4);
  HEX_CODES[2 * i + 1] = '0123456789abcdef'.charCodeAt(i & 15);
}
const hexScratch = new Uint8Array(2 + 2 * 65);
const asciiDecoder = new TextDecoder('latin1');

/** `len` bytes of `b` from `start` as lowercase `0x` hex. */
export function bytesHex(b: Uint8Array, start: number, len: number): Hex {
  // The hex digits' ASCII codes, decoded at once: ~3× faster than concatenating pairs, and one flat string (pairs
  // appended two digits at a time leave V8 a chain of string pieces that every later use flattens).
  const c = len > 65 ? new Uint8Array(2 + 2 * len) : hexScratch;
  c[0] = 0x30;
  c[1] = 0x78;
  for (let i = 0; i < len; i++) {
    const v = b[start + i]!;
    c[2 + 2 * i] = HEX_CODES[2 * v]!;
    c[3 + 2 * i] = HEX_CODES[2 * v + 1]!;
  }
  return asciiDecoder.decode(c.subarray(0, 2 + 2 * len)) as Hex;
}

/** Value of each ASCII hex digit, -1 for every other code unit (a table: no regular expression on the hot path). */
const HEX_VALUE = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let i = 0; i < 10; i++) t[48 + i] = i;
  for (let i = 0; i < 6; i++) t[65 + i] = t[97 + i] = 10 + i;
  return t;
})();

/**
 * Decode the hex digits of `hex` after its `0x` into `out` at `offset`; false when a digit is not hex or the
 * string does not fit. `hex` must already be known to start with `0x` and have an even length.
 */
function decodeHexInto(hex: string, out: Uint8Array, offset: number): boolean {
  const n = (hex.length - 2) >> 1;
  if (offset + n > out.length) return false;
  for (let i = 0, j = 2; i < n; i++, j += 2) {
    const hi = HEX_VALUE[hex.charCodeAt(j) & 0xffff] ?? -1;
    const lo = HEX_VALUE[hex.charCodeAt(j + 1) & 0xffff] ?? -1;
    if ((hi | lo) < 0) return false;
    out[offset + i] = (hi << 4) | lo;
  }
  return true;
}

const isPrefixedEven = (hex: unknown): hex is string =>
  typeof hex === 'string' &&
  hex.length >= 2 &&
  (hex.length & 1) === 0 &&
  hex.charCodeAt(0) === 48 /* 0 */ &&
  hex.charCodeAt(1) === 120; /* x */

/**
 * `0x`-prefixed hex to bytes.
 * @throws MalformedError when not even-length hex, or not `length` bytes when given
 */
export function fromHex(hex: string, length?: number): Uint8Array {
  if (!isPrefixedEven(hex)) throw new MalformedError('not 0x-prefixed hex');
  const bytes = new Uint8Array((hex.length - 2) >> 1);
  if (!decodeHexInto(hex, bytes, 0)) throw new MalformedError('not 0x-prefixed hex');
  if (length !== undefined && bytes.length !== length) {
    throw new MalformedError(`expected ${length} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/**
 * Write `0x`-prefixed hex of exactly `length` bytes into `out` at `offset` (no allocation).
 * @throws MalformedError as {@link fromHex}
 */
export function writeHex(out: Uint8Array, offset: number, hex: string, length: number): void {
  if (!isPrefixedEven(hex)) throw new MalformedError('not 0x-prefixed hex');
  const n = (hex.length - 2) >> 1;
  if (n !== length) {
    fromHex(hex); // the same error as fromHex for bad digits, before the length
    throw new MalformedError(`expected ${length} bytes, got ${n}`);
  }
  if (!decodeHexInto(hex, out, offset)) throw new MalformedError('not 0x-prefixed hex');
}

/**
 * EIP-55 checksum of a 20-byte address.
 * @throws MalformedError when not a 20-byte hex address, or mixed-case with a wrong checksum
 */
export function toAddress(value: string | Uint8Array): Address {
  const lower = typeof value === 'string' ? value.toLowerCase() : toHex(value);
  if (!/^0x[0-9a-f]{40}$/.test(lower)) throw new MalformedError('not a 20-byte address');
  const body = lower.slice(2);
  const hash = keccak_256(UTF8.encode(body));
  let out = '0x';
  for (let i = 0; i < 40; i++) out += (hash[i >> 1]! << (4 * (i & 1))) & 0x80 ? body[i]!.toUpperCase() : body[i]!;
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
  writeUintWord(out, 0, value);
  return out;
}

/**
 * Write the big-endian 32-byte word of an unsigned integer into `out` at `offset` (which must hold 32 zero bytes
 * there). Values below 2^48 take a number path; a negative value leaves the word zero, as {@link uintWord} always did.
 */
export function writeUintWord(out: Uint8Array, offset: number, value: bigint): void {
  if (value <= 0n) return;
  if (value < 0x1000000000000n) {
    let v = Number(value);
    for (let i = offset + 31; v > 0; i--) {
      out[i] = v % 256;
      v = Math.floor(v / 256);
    }
    return;
  }
  let v = value;
  for (let i = offset + 31; i >= offset && v > 0n; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
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
  return b.length === 0 ? 0n : BigInt(toHex(b));
}
