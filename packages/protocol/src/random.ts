import { toHex } from './hex.js';
import type { Bytes32 } from './types.js';

/**
 * 32 random bytes as `0x`-hex (salts, payment ids, order ids), from the Web Crypto API's CSPRNG
 * (`globalThis.crypto.getRandomValues`), present in browsers and in Node ≥ 19 alike.
 * @returns a fresh random {@link Bytes32}
 * @example
 * ```ts
 * const paymentId = randomBytes32(); // '0x…' (64 hex digits)
 * ```
 */
export function randomBytes32(): Bytes32 {
  return toHex(globalThis.crypto.getRandomValues(new Uint8Array(32))) as string as Bytes32;
}
