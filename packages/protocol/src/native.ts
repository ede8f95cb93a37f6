import { createRequire } from 'node:module';
import { TrickleError } from './errors.js';
import { fromHex, bytesToBigint, keccak256, type Keccak256 } from './hex.js';
import { assertSignable } from './signable.js';
import {
  addressOfPublicKey,
  checkSignatureShape,
  nobleSigner,
  nobleVerifier,
  SECP256K1_N,
  type Signer,
  type Verifier,
} from './signer.js';
import { BadSignatureError } from './errors.js';
import type { Hex } from './types.js';

/** The subset of the `secp256k1` (libsecp256k1 binding) API Trickle uses. */
interface NativeSecp {
  ecdsaSign(msg32: Uint8Array, privateKey: Uint8Array): { signature: Uint8Array; recid: number };
  ecdsaRecover(sig: Uint8Array, recid: number, msg32: Uint8Array, compressed: boolean): Uint8Array;
  publicKeyCreate(privateKey: Uint8Array, compressed: boolean): Uint8Array;
}

let cached: NativeSecp | null | undefined;

/**
 * Load the libsecp256k1 binding if it is installed (an optional dependency); `undefined` otherwise.
 * Only the compiled binding counts: the package's pure-JS fallback would be slower than noble.
 */
export function loadNativeSecp(): NativeSecp | undefined {
  if (cached === undefined) {
    try {
      cached = createRequire(import.meta.url)('secp256k1/bindings') as NativeSecp;
    } catch {
      cached = null;
    }
  }
  return cached ?? undefined;
}

/** The native state object of the `keccak` package (its compiled add-on, without the stream wrapper around it). */
interface NativeKeccakState {
  initialize(rate: number, capacity: number): void;
  absorb(data: Buffer): void;
  absorbLastFewBits(bits: number): void;
  squeeze(length: number): Buffer;
}

let keccakCached: ((data: Uint8Array) => Uint8Array) | null | undefined;

/**
 * keccak-256 on the `keccak` package's compiled add-on (an optional dependency; ~5× the pure-JS speed on a state
 * struct), or `undefined` when it is not installed. Only the compiled add-on counts, as for secp256k1.
 */
export function loadNativeKeccak(): ((data: Uint8Array) => Uint8Array) | undefined {
  if (keccakCached === undefined) {
    try {
      const require = createRequire(import.meta.url);
      const dir = require.resolve('keccak/package.json').replace(/package\.json$/, '');
      const addon = require(require.resolve('node-gyp-build', { paths: [dir] }))(dir) as new () => NativeKeccakState;
      if (typeof addon !== 'function') throw new Error('not a native add-on');
      const state = new addon();
      keccakCached = (data) => {
        state.initialize(1088, 512);
        state.absorb(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        state.absorbLastFewBits(0x01);
        const out = state.squeeze(32);
        return new Uint8Array(out.buffer, out.byteOffset, 32);
      };
    } catch {
      keccakCached = null;
    }
  }
  return keccakCached ?? undefined;
}

/**
 * The fastest keccak-256 here: the compiled add-on when installed, else the pure-JS one. Nothing global changes:
 * pass the result where states are digested (`stateDigest(separator, state, keccak)`); the output is
 * byte-identical either way.
 * @returns a keccak-256 function
 */
export function bestKeccak256(): Keccak256 {
  return loadNativeKeccak() ?? keccak256;
}

function requireNative(): NativeSecp {
  const n = loadNativeSecp();
  if (!n) throw new TrickleError('INVALID_ARGUMENT', 'the native secp256k1 binding is not installed');
  return n;
}

/**
 * A signer on libsecp256k1: ~8× faster signing than pure JS, byte-identical output (RFC 6979, low-s).
 * @throws TrickleError('INVALID_ARGUMENT') when the binding is not installed or the key is invalid
 */
export function nativeSigner(privateKey: string | Uint8Array): Signer {
  const secp = requireNative();
  const key = typeof privateKey === 'string' ? fromHex(privateKey, 32) : privateKey;
  const k = bytesToBigint(key);
  if (key.length !== 32 || k === 0n || k >= SECP256K1_N) {
    throw new TrickleError('INVALID_ARGUMENT', 'private key must be 32 bytes in [1, n-1]');
  }
  const address = addressOfPublicKey(secp.publicKeyCreate(key, false));
  return {
    address,
    signDigest(digest) {
      if (digest.length !== 32) throw new TrickleError('INVALID_ARGUMENT', 'digest must be 32 bytes');
      assertSignable(digest);
      const { signature, recid } = secp.ecdsaSign(digest, key);
      const out = new Uint8Array(65);
      out.set(signature, 0);
      out[64] = 27 + recid;
      return out;
    },
  };
}

/**
 * A verifier on libsecp256k1: ~40× faster recovery than pure JS.
 * @throws TrickleError('INVALID_ARGUMENT') when the binding is not installed
 */
export function nativeVerifier(): Verifier {
  const secp = requireNative();
  // Devices sign again and again with the same key: remember the address of each recovered public key (two
  // keccaks saved per verification). Bounded: cleared when full.
  const addresses = new Map<string, ReturnType<typeof addressOfPublicKey>>();
  const addressOf = (pub: Uint8Array) => {
    const k = Buffer.from(pub.buffer, pub.byteOffset, pub.length).toString('latin1');
    let a = addresses.get(k);
    if (a === undefined) {
      if (addresses.size >= 16_384) addresses.clear();
      addresses.set(k, (a = addressOfPublicKey(pub)));
    }
    return a;
  };
  return {
    recoverAddress(digest, signature) {
      if (digest.length !== 32) throw new TrickleError('INVALID_ARGUMENT', 'digest must be 32 bytes');
      const recid = checkSignatureShape(signature);
      let pub: Uint8Array;
      try {
        pub = secp.ecdsaRecover(signature.subarray(0, 64), recid, digest, false);
      } catch (cause) {
        throw new BadSignatureError('signature does not recover to a public key', { cause });
      }
      return addressOf(pub);
    },
  };
}

/** The fastest verifier available here: libsecp256k1 when installed, else pure JS (noble). */
export function bestVerifier(): Verifier {
  return loadNativeSecp() ? nativeVerifier() : nobleVerifier;
}

/** The fastest signer available here for a key: libsecp256k1 when installed, else pure JS (noble). */
export function bestSigner(privateKey: string | Uint8Array): Signer {
  return loadNativeSecp() ? nativeSigner(privateKey) : nobleSigner(privateKey);
}
