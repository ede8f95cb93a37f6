/**
 * What callers may pass where the protocol keeps a strict type: a chain id as a number (as JSON-RPC tooling and
 * `trickle-chain` print it) or a bigint, an address as any `0x…` string literal. Each is normalised once, at the API
 * boundary, to the strict form (`bigint`, checksummed {@link Address}); mismatches are then never between a number
 * and a bigint that print the same.
 */
import { MalformedError, TrickleError } from './errors.js';
import { toAddress } from './hex.js';
import type { Address } from './types.js';

/** A chain id as a caller may give it: a positive safe-integer number, or a bigint. */
export type ChainIdInput = number | bigint;

/** An address as a caller may give it: a branded {@link Address} or any `0x…` literal (checked when normalised). */
export type AddressInput = Address | `0x${string}`;

/**
 * Normalise a chain id to a bigint.
 * @param value - number or bigint
 * @param name - the option's name, for the error
 * @returns the chain id as a bigint
 * @throws TrickleError `INVALID_ARGUMENT` unless a positive integer (a number must be a safe integer)
 * @example
 * ```ts
 * toChainId(31337) === 31337n;
 * ```
 */
export function toChainId(value: ChainIdInput, name = 'chainId'): bigint {
  if (typeof value === 'bigint' && value > 0n) return value;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) return BigInt(value);
  throw new TrickleError('INVALID_ARGUMENT', `${name} must be a positive integer (number or bigint)`, {
    details: {
      [name]: typeof value === 'bigint' || typeof value === 'number' ? String(value) : typeof value,
      type: typeof value,
    },
  });
}

/**
 * Normalise an address: 20 bytes of hex, EIP-55 checksum checked when the literal is mixed-case, returned checksummed.
 * @param value - the address
 * @param name - the option's name, for the error
 * @returns the checksummed address
 * @throws TrickleError `INVALID_ARGUMENT` naming the option, with the {@link MalformedError} as `cause`
 * @example
 * ```ts
 * const hub = toAddressInput('0x2b5ad5c4795c026514f8317c7a215e218dccd6cf', 'expectHub');
 * ```
 */
export function toAddressInput(value: AddressInput, name: string): Address {
  try {
    return toAddress(value);
  } catch (cause) {
    const why = cause instanceof MalformedError ? cause.shortMessage : String(cause);
    throw new TrickleError('INVALID_ARGUMENT', `${name} is not an address (${why})`, {
      details: { [name]: String(value) },
      cause,
    });
  }
}

/**
 * A value and its JavaScript type, for mismatch details (`31337 (number)` vs `31337 (bigint)` read differently).
 * @param value - anything printable
 * @returns e.g. `"31337 (bigint)"`
 */
export function typed(value: unknown): string {
  return `${String(value)} (${typeof value})`;
}
