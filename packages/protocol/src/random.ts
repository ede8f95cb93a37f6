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
  const b = globalThis.crypto.getRandomValues(new Uint8Array(32));
  let hex = '0x';
  for (const x of b) hex += HEX[x]!;
  return hex as Bytes32;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
