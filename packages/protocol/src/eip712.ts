import {
  concatBytes,
  fromHex,
  keccak256,
  keccakUtf8,
  toHex,
  uintWord,
  writeHex,
  writeUintWord,
  type Keccak256,
} from './hex.js';
import { markSignable, markTrickleSeparator, signableParts, trickleDomainOf } from './signable.js';
import { MalformedError } from './errors.js';
import {
  MAX_UINT64,
  MAX_UINT256,
  type Address,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type Domain,
  type State,
} from './types.js';

/** EIP-712 domain name and version every Trickle signature is bound to (with chain id and adjudicator). */
export const DOMAIN_NAME = 'Trickle';
export const DOMAIN_VERSION = '1';

/** The EIP-712 type string of {@link State}; the adjudicator hashes the same string. */
export const STATE_TYPE =
  'State(bytes32 channelId,uint64 version,uint256 paidByDevice,uint256 paidByHub,uint64 round,bytes32 locksRoot,uint256 lockedByDevice,uint256 lockedByHub,bool isFinal)';
/** The EIP-712 domain type string (name, version, chainId, verifyingContract). */
export const DOMAIN_TYPE = 'EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)';

/** The EIP-712 `types` object for {@link STATE_TYPE}, in the form ethers / viem / eth_signTypedData_v4 take. */
export const STATE_TYPES = {
  State: [
    { name: 'channelId', type: 'bytes32' },
    { name: 'version', type: 'uint64' },
    { name: 'paidByDevice', type: 'uint256' },
    { name: 'paidByHub', type: 'uint256' },
    { name: 'round', type: 'uint64' },
    { name: 'locksRoot', type: 'bytes32' },
    { name: 'lockedByDevice', type: 'uint256' },
    { name: 'lockedByHub', type: 'uint256' },
    { name: 'isFinal', type: 'bool' },
  ],
} as const;

const STATE_TYPEHASH = keccakUtf8(STATE_TYPE);
const DOMAIN_TYPEHASH = keccakUtf8(DOMAIN_TYPE);
const NAME_HASH = keccakUtf8(DOMAIN_NAME);
const VERSION_HASH = keccakUtf8(DOMAIN_VERSION);
const PREFIX_1901 = new Uint8Array([0x19, 0x01]);

// EIP-712 encodeData of a struct whose members are all static types is the concatenation of one 32-byte word per
// member (uint/address/bool left-padded, bytes32 as is). Every struct Trickle signs is of that kind, so the digest
// is built from words directly; vectors pin it against ethers' TypedDataEncoder and the adjudicator's own hashing.

/**
 * The Trickle domain for a chain and adjudicator.
 * @param chainId - EVM chain id
 * @param adjudicator - the adjudicator contract address (verifyingContract)
 * @returns the domain every state of that adjudicator is signed under
 */
export function trickleDomain(chainId: bigint, adjudicator: Address): Domain {
  return { name: DOMAIN_NAME, version: DOMAIN_VERSION, chainId, verifyingContract: adjudicator };
}

/**
 * EIP-712 domain separator.
 * @param domain - the domain; `name`/`version` other than Trickle's are hashed as given
 * @returns 32-byte domain separator
 */
export function domainSeparator(domain: Domain): Uint8Array {
  const trickle = domain.name === DOMAIN_NAME && domain.version === DOMAIN_VERSION;
  const nameHash = domain.name === DOMAIN_NAME ? NAME_HASH : keccakUtf8(domain.name);
  const versionHash = domain.version === DOMAIN_VERSION ? VERSION_HASH : keccakUtf8(domain.version);
  const separator = keccak256(
    concatBytes(
      DOMAIN_TYPEHASH,
      nameHash,
      versionHash,
      uintWord(domain.chainId),
      uintWord(BigInt(domain.verifyingContract)),
    ),
  );
  // Only a Trickle domain's separator yields digests a Trickle signer signs.
  if (trickle)
    markTrickleSeparator(separator, {
      name: DOMAIN_NAME,
      version: DOMAIN_VERSION,
      chainId: domain.chainId,
      verifyingContract: domain.verifyingContract,
    });
  return separator;
}

const inRange = (v: bigint, max: bigint): boolean => v >= 0n && v <= max;

/**
 * Write a state's nine EIP-712 field words (its `hashStruct` input after the type hash, 288 bytes) into `b` at `at`,
 * which must hold zeros there: {@link hashStateStruct} and the hub's signing workers lay a state out this one way.
 * @param b - the buffer
 * @param at - the offset of the first word
 * @param state - the state
 * @throws MalformedError when a field is outside its EIP-712 type (a negative amount, a counter above uint256, a
 *   version or round above uint64): its word would be another state's
 */
export function writeStateWords(b: Uint8Array, at: number, state: State): void {
  // A word holds only the low 256 bits (and a negative value is written as zero): out of range, a state would hash as
  // another one, and a signature over it would be one over that state.
  if (
    !inRange(state.version, MAX_UINT64) ||
    !inRange(state.round, MAX_UINT64) ||
    !inRange(state.paidByDevice, MAX_UINT256) ||
    !inRange(state.paidByHub, MAX_UINT256) ||
    !inRange(state.lockedByDevice, MAX_UINT256) ||
    !inRange(state.lockedByHub, MAX_UINT256)
  )
    throw new MalformedError('a state field is outside its EIP-712 type (uint64 version and round, uint256 amounts)');
  writeHex(b, at, state.channelId, 32);
  writeUintWord(b, at + 32, state.version);
  writeUintWord(b, at + 64, state.paidByDevice);
  writeUintWord(b, at + 96, state.paidByHub);
  writeUintWord(b, at + 128, state.round);
  writeHex(b, at + 160, state.locksRoot, 32);
  writeUintWord(b, at + 192, state.lockedByDevice);
  writeUintWord(b, at + 224, state.lockedByHub);
  if (state.isFinal) b[at + 287] = 1;
}

/**
 * EIP-712 `hashStruct` of a state.
 * @param state - the state
 * @param keccak - the keccak-256 backend (default: pure JS)
 * @returns 32-byte struct hash
 * @throws MalformedError when a field is outside its EIP-712 type (see {@link writeStateWords})
 */
export function hashStateStruct(state: State, keccak: Keccak256 = keccak256): Uint8Array {
  // One buffer of ten words, written in place (this runs once per state on both sides of every payment).
  const b = new Uint8Array(320);
  b.set(STATE_TYPEHASH, 0);
  writeStateWords(b, 32, state);
  return keccak(b);
}

/**
 * The EIP-712 digest of a typed struct hash under a domain separator: keccak256(0x1901 ‖ separator ‖ structHash).
 * @param separator - from {@link domainSeparator}
 * @param structHash - the struct's hash
 * @param keccak - the keccak-256 backend (default: pure JS)
 */
export function typedDataDigest(
  separator: Uint8Array,
  structHash: Uint8Array,
  keccak: Keccak256 = keccak256,
): Uint8Array {
  const digest = keccak(concatBytes(PREFIX_1901, separator, structHash));
  const domain = trickleDomainOf(separator);
  if (domain !== undefined && structHash.length === 32) markSignable(digest, domain, structHash);
  return digest;
}

/**
 * What a digest from {@link typedDataDigest} under a Trickle domain was made of, so it can be made again elsewhere
 * (another thread): the domain and the struct hash. `undefined` for any other bytes, and for a digest changed
 * since it was made — a Trickle `Signer` signs exactly the digests for which this is defined.
 * @param digest - a digest
 * @returns its Trickle domain and struct hash, or `undefined`
 */
export function typedDigestParts(
  digest: Uint8Array,
): { readonly domain: Domain; readonly structHash: Uint8Array } | undefined {
  return signableParts(digest);
}

/**
 * The digest both parties sign for a state: what the adjudicator passes to `ecrecover`.
 * @param separator - the domain separator of the channel's chain and adjudicator (compute once per channel)
 * @param state - the state
 * @param keccak - the keccak-256 backend: pure JS by default; a hub or Node device passes `bestKeccak256()` from
 *   `@trickle/protocol/native` (the compiled add-on when installed, ~5× faster, byte-identical)
 * @returns 32-byte digest
 * @example
 * ```ts
 * const sep = domainSeparator(trickleDomain(31337n, adjudicator));
 * const digest = stateDigest(sep, state);
 * const same = stateDigest(sep, state, bestKeccak256());
 * ```
 */
export function stateDigest(separator: Uint8Array, state: State, keccak: Keccak256 = keccak256): Uint8Array {
  return typedDataDigest(separator, hashStateStruct(state, keccak), keccak);
}

/**
 * The channel id: keccak256(abi.encode(chainId, adjudicator, device, hub, token, challengeDuration, salt)), the
 * same expression the adjudicator evaluates on open.
 * @param p - channel parameters
 * @returns the channel id
 */
export function channelIdOf(p: ChannelParams): ChannelId {
  return toHex(
    keccak256(
      concatBytes(
        uintWord(p.chainId),
        uintWord(BigInt(p.adjudicator)),
        uintWord(BigInt(p.device)),
        uintWord(BigInt(p.hub)),
        uintWord(BigInt(p.token)),
        uintWord(p.challengeDuration),
        fromHex(p.salt, 32),
      ),
    ),
  ) as string as ChannelId;
}

/** A state's digest as lowercase hex, for logs and evidence. */
export function stateDigestHex(separator: Uint8Array, state: State, keccak: Keccak256 = keccak256): Bytes32 {
  return toHex(stateDigest(separator, state, keccak)) as string as Bytes32;
}

/** EIP-712 type of the handshake proof: the device signs the hub's fresh nonce. */
export const AUTH_TYPE = 'Auth(address device,address hub,bytes32 nonce)';
const AUTH_TYPEHASH = keccakUtf8(AUTH_TYPE);

/**
 * The digest a device signs to prove it holds its key during the handshake. Bound to the hub's chain and
 * adjudicator (the domain), the hub's address and a nonce the hub chose, so it cannot be replayed elsewhere.
 */
export function authDigest(separator: Uint8Array, device: Address, hub: Address, nonce: Bytes32): Uint8Array {
  return typedDataDigest(
    separator,
    keccak256(concatBytes(AUTH_TYPEHASH, uintWord(BigInt(device)), uintWord(BigInt(hub)), fromHex(nonce, 32))),
  );
}
