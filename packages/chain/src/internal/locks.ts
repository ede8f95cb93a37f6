import type { Lock } from '@trickle/protocol/locks';
import { ZERO_ROOT, type Address, type Bytes32, type ChannelId } from '@trickle/protocol/types';
import { AbiCoder, keccak256 } from 'ethers';
import type { Registration } from '../types.js';

/** A lock as the ABI tuple `IAdjudicator.Lock` (payer 0 = device, 1 = hub). */
export interface LockArg {
  readonly amount: bigint;
  readonly hash: Bytes32;
  readonly expiry: bigint;
  readonly payer: 0 | 1;
}

/** The ABI arguments of a lock list, in committed order. */
export function locksArg(locks: readonly Lock[] = []): LockArg[] {
  return locks.map((l) => ({ amount: l.amount, hash: l.hash, expiry: l.expiry, payer: l.payer === 'hub' ? 1 : 0 }));
}

/** The all-zero registration: what is passed for a channel that has none (the contract then refuses on status). */
export const NO_REGISTRATION: Registration = Object.freeze({
  device: '0x0000000000000000000000000000000000000000' as Address,
  depositDevice: 0n,
  token: '0x0000000000000000000000000000000000000000' as Address,
  hub: '0x0000000000000000000000000000000000000000' as Address,
  depositHub: 0n,
  version: 0n,
  deadline: 0n,
  payoutDevice: 0n,
  payoutHub: 0n,
  locksRoot: ZERO_ROOT,
});

const REGISTRATION_TUPLE =
  'tuple(address device,uint256 depositDevice,address token,address hub,uint256 depositHub,uint64 version,uint64 deadline,uint256 payoutDevice,uint256 payoutHub,bytes32 locksRoot)';
const HASH_MASK = (1n << 208n) - 1n;

/**
 * The registration hash the adjudicator keeps for a closing channel: the low 208 bits of
 * `keccak256(abi.encode(channelId, reg))`, as 32-byte hex.
 */
export function registrationHash(channelId: ChannelId, reg: Registration): Bytes32 {
  const h =
    BigInt(keccak256(AbiCoder.defaultAbiCoder().encode(['bytes32', REGISTRATION_TUPLE], [channelId, reg]))) & HASH_MASK;
  return `0x${h.toString(16).padStart(64, '0')}` as Bytes32;
}

/** The fields of a registration that `ForceClosed` / `Challenged` carry (all but the device and its deposit). */
export type RegisteredFields = Omit<Registration, 'device' | 'depositDevice'>;

/** A registration from an event's fields and the device slot (`getChannel` while closing). */
export function registrationOf(e: RegisteredFields, device: Address, depositDevice: bigint): Registration {
  return {
    device,
    depositDevice,
    token: e.token,
    hub: e.hub,
    depositHub: e.depositHub,
    version: e.version,
    deadline: e.deadline,
    payoutDevice: e.payoutDevice,
    payoutHub: e.payoutHub,
    locksRoot: e.locksRoot,
  };
}
