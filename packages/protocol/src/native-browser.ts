// What `@trickle/protocol/native` resolves to in a browser bundle (package.json `exports`, condition `browser`): the
// same API with no compiled add-ons behind it, so code that prefers the native backends where they exist (the
// device client calls `bestKeccak256()`) bundles for a browser without pulling `node:module` or the bindings.
import { TrickleError } from './errors.js';
import { keccak256, type Keccak256 } from './hex.js';
import { nobleSigner, nobleVerifier, type Signer, type Verifier } from './signer.js';

/** No compiled secp256k1 binding in a browser. @returns undefined */
export function loadNativeSecp(): undefined {
  return undefined;
}

/** No compiled keccak add-on in a browser. @returns undefined */
export function loadNativeKeccak(): undefined {
  return undefined;
}

/** The pure-JS keccak (noble), the only one in a browser. */
export function bestKeccak256(): Keccak256 {
  return keccak256;
}

/** @throws TrickleError('INVALID_ARGUMENT'): the native binding does not exist in a browser */
export function nativeSigner(_privateKey: string | Uint8Array): Signer {
  throw new TrickleError('INVALID_ARGUMENT', 'the native secp256k1 binding is not available in a browser');
}

/** @throws TrickleError('INVALID_ARGUMENT'): the native binding does not exist in a browser */
export function nativeVerifier(): Verifier {
  throw new TrickleError('INVALID_ARGUMENT', 'the native secp256k1 binding is not available in a browser');
}

/** The pure-JS verifier (noble), the only one in a browser. */
export function bestVerifier(): Verifier {
  return nobleVerifier;
}

/** The pure-JS signer (noble), the only one in a browser. */
export function bestSigner(privateKey: string | Uint8Array): Signer {
  return nobleSigner(privateKey);
}
