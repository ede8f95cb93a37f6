/**
 * Branded primitive types and the channel data model. The TypeScript `State` mirrors the Solidity struct
 * `Adjudicator.State` field for field; `ChannelParams` mirrors `Adjudicator.Params`.
 */

declare const brand: unique symbol;
type Brand<T, B extends string> = T & { readonly [brand]: B };

/** `0x`-prefixed lowercase or mixed-case hex string. */
export type Hex = Brand<`0x${string}`, 'Hex'>;
/** EIP-55 checksummed 20-byte address. */
export type Address = Brand<`0x${string}`, 'Address'>;
/** 32-byte channel identifier, lowercase hex. */
export type ChannelId = Brand<`0x${string}`, 'ChannelId'>;
/** A 32-byte value as lowercase hex. */
export type Bytes32 = Brand<`0x${string}`, 'Bytes32'>;
/** 65-byte Ethereum signature r ‖ s ‖ v (v ∈ {27, 28}) as lowercase hex. */
export type SignatureHex = Brand<`0x${string}`, 'Signature'>;

/** The zero address stands for ETH as a channel's token. */
export const ETH_TOKEN = '0x0000000000000000000000000000000000000000' as Address;

/** The all-zero 32-byte value: the `locksRoot` of a state with no pending locks. */
export const ZERO_ROOT = '0x0000000000000000000000000000000000000000000000000000000000000000' as Bytes32;

/**
 * The lock fields of a state with no pending locks. Spread it into a state literal:
 * `{ channelId, version, paidByDevice, paidByHub, round, ...NO_LOCKS, isFinal }`.
 */
export const NO_LOCKS: { readonly locksRoot: Bytes32; readonly lockedByDevice: bigint; readonly lockedByHub: bigint } =
  Object.freeze({
    locksRoot: ZERO_ROOT,
    lockedByDevice: 0n,
    lockedByHub: 0n,
  });

/** The largest uint64 and uint256, for range checks. */
export const MAX_UINT64 = (1n << 64n) - 1n;
export const MAX_UINT256 = (1n << 256n) - 1n;

/** Who a party is in a channel. */
export type Role = 'device' | 'hub';

/** The parameters that fix a channel; the channel id is derived from them. */
export interface ChannelParams {
  readonly chainId: bigint;
  readonly adjudicator: Address;
  readonly device: Address;
  readonly hub: Address;
  /** ERC20 token address, or {@link ETH_TOKEN} for ETH. */
  readonly token: Address;
  /** Seconds a unilateral close can be challenged. */
  readonly challengeDuration: bigint;
  readonly salt: Bytes32;
}

/** The off-chain state both parties sign. Counters are cumulative and never fall. */
export interface State {
  readonly channelId: ChannelId;
  readonly version: bigint;
  /** Cumulative amount paid by the device to the hub, in token base units. */
  readonly paidByDevice: bigint;
  /** Cumulative amount paid by the hub to the device, in token base units. */
  readonly paidByHub: bigint;
  /** Last market round netted into this channel, 0 when none. */
  readonly round: bigint;
  /**
   * Commitment to the pending conditional transfers (hashlocks): `locksRoot` of `@trickle/protocol/locks` over the
   * lock list, {@link ZERO_ROOT} when there is none.
   */
  readonly locksRoot: Bytes32;
  /** Sum of the pending locks the device pays (escrowed from the device's side until claimed or expired). */
  readonly lockedByDevice: bigint;
  /** Sum of the pending locks the hub pays. */
  readonly lockedByHub: bigint;
  /** A final state closes the channel cooperatively; nothing may follow it. */
  readonly isFinal: boolean;
}

/** A state with the signatures collected so far. */
export interface SignedState {
  readonly state: State;
  readonly deviceSig?: SignatureHex | undefined;
  readonly hubSig?: SignatureHex | undefined;
}

/** The EIP-712 domain a state is signed under. */
export interface Domain {
  readonly name: string;
  readonly version: string;
  readonly chainId: bigint;
  readonly verifyingContract: Address;
}

/** Net on-chain funds available to each side (deposits minus withdrawals), as the adjudicator records them. */
export interface Funding {
  readonly device: bigint;
  readonly hub: bigint;
}

/** The other role. */
export function counterparty(role: Role): Role {
  return role === 'device' ? 'hub' : 'device';
}
