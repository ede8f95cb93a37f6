/**
 * Which byte arrays are digests of Trickle's own typed messages: EIP-712 digests under a Trickle domain (name
 * `Trickle`, version `1`), made by `typedDataDigest` and the functions built on it (`stateDigest`, `authDigest`,
 * `receiptDigest`, the market's `clearingDigest` and `hashOrder`). The package's signers sign nothing else — not a
 * transaction hash, not another domain's typed data — so a `Signer` handed to code is not a key for everything.
 * Internal: no entry point of the package exports this module.
 *
 * Each entry keeps a copy of the bytes it was made with: an array rewritten in place afterwards is not signable.
 */
import { TrickleError } from './errors.js';
import type { Domain } from './types.js';

interface Made {
  readonly bytes: Uint8Array;
  readonly domain: Domain;
  readonly structHash: Uint8Array | undefined;
}

const separators = new WeakMap<Uint8Array, Made>();
const digests = new WeakMap<Uint8Array, Made>();

function unchanged(a: Uint8Array, made: Made | undefined): made is Made {
  if (made === undefined || a.length !== made.bytes.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== made.bytes[i]) return false;
  return true;
}

/** Remember a domain separator computed for a Trickle domain. */
export function markTrickleSeparator(separator: Uint8Array, domain: Domain): void {
  separators.set(separator, { bytes: separator.slice(), domain, structHash: undefined });
}

/** The Trickle domain a separator was computed for, if it was (and is unchanged). */
export function trickleDomainOf(separator: Uint8Array): Domain | undefined {
  const made = separators.get(separator);
  return unchanged(separator, made) ? made.domain : undefined;
}

/** Remember a digest as a Trickle typed-data digest. */
export function markSignable(digest: Uint8Array, domain: Domain, structHash: Uint8Array): void {
  digests.set(digest, { bytes: digest.slice(), domain, structHash: structHash.slice() });
}

/** The domain and struct hash of a Trickle typed-data digest, or `undefined` for any other bytes. */
export function signableParts(
  digest: Uint8Array,
): { readonly domain: Domain; readonly structHash: Uint8Array } | undefined {
  const made = digests.get(digest);
  return unchanged(digest, made) ? { domain: made.domain, structHash: made.structHash! } : undefined;
}

/** @throws TrickleError('INVALID_ARGUMENT') unless `digest` is a Trickle typed-data digest */
export function assertSignable(digest: Uint8Array): void {
  if (!unchanged(digest, digests.get(digest))) {
    throw new TrickleError(
      'INVALID_ARGUMENT',
      "a Trickle signer signs only Trickle's typed messages under the Trickle EIP-712 domain (stateDigest, authDigest, receiptDigest, clearingDigest, hashOrder)",
    );
  }
}
