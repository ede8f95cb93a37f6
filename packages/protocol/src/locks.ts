/**
 * Hashlocks (conditional transfers) as the signed state commits to them, and the rule the adjudicator applies to
 * them on-chain. Pure helpers: no I/O, no clock (the caller passes `now`).
 *
 * A lock is `amount` from `payer` to the other party, released by the 32-byte preimage of `hash`
 * (`hash = keccak256(preimage)`) if that preimage becomes known (on-chain: `reveal(preimage)`) at or before `expiry`
 * (chain timestamp, seconds); otherwise it returns to the payer. A state commits to its pending locks with
 * `locksRoot` (see {@link locksRoot}) and the totals `lockedByDevice` / `lockedByHub`; the adjudicator checks a lock
 * list supplied at force close, challenge and settle against that commitment.
 */
import { MalformedError } from './errors.js';
import { concatBytes, fromHex, keccak256, toHex, uintWord } from './hex.js';
import { MAX_UINT64, MAX_UINT256, ZERO_ROOT, type Bytes32, type Role } from './types.js';

/** One pending conditional transfer. Mirrors the Solidity struct `IAdjudicator.Lock` field for field. */
export interface Lock {
  /** Base units moved from `payer` to the other party when the lock is claimed; at least 1. */
  readonly amount: bigint;
  /** keccak256 of the 32-byte preimage that claims the lock. */
  readonly hash: Bytes32;
  /** Chain timestamp (seconds): a preimage revealed at or before it claims the lock; after it the payer takes it back. */
  readonly expiry: bigint;
  /** Who pays (whose side the amount is escrowed from). */
  readonly payer: Role;
}

/**
 * Most locks the adjudicator accepts in one state (`IAdjudicator.MAX_LOCKS`). A state with more can never be
 * enforced on-chain, so an off-chain limit on pending locks (e.g. 32) must not exceed it. Settling with this many
 * locks costs well under a block's gas (see contracts/GAS.md).
 */
export const MAX_LOCKS_ON_CHAIN = 64;

/** Bytes of one lock in the committed encoding: four 32-byte words (amount, hash, expiry, payer). */
export const LOCK_ENCODED_BYTES = 128;

/** The lock fields of a state: what {@link lockCommitment} returns and a `State` carries. */
export interface LockCommitment {
  readonly locksRoot: Bytes32;
  readonly lockedByDevice: bigint;
  readonly lockedByHub: bigint;
}

/**
 * Check one lock's ranges (amount 1..2^256−1, expiry ≤ 2^64−1, 32-byte hash, payer `device`/`hub`).
 * @throws MalformedError naming the field
 */
export function checkLock(lock: Lock, path = 'lock'): void {
  if (typeof lock.amount !== 'bigint' || lock.amount < 1n || lock.amount > MAX_UINT256) {
    throw new MalformedError(`${path}.amount: expected 1 to 2^256-1`, { details: { field: `${path}.amount` } });
  }
  if (typeof lock.expiry !== 'bigint' || lock.expiry < 0n || lock.expiry > MAX_UINT64) {
    throw new MalformedError(`${path}.expiry: expected a uint64`, { details: { field: `${path}.expiry` } });
  }
  if (lock.payer !== 'device' && lock.payer !== 'hub') {
    throw new MalformedError(`${path}.payer: expected 'device' or 'hub'`, { details: { field: `${path}.payer` } });
  }
  fromHex(lock.hash, 32);
}

/**
 * The committed encoding of one lock: `abi.encode(amount, hash, expiry, payer)` with payer 0 = device, 1 = hub
 * (the Solidity struct `Lock` as it sits in calldata).
 */
export function encodeLock(lock: Lock): Uint8Array {
  return concatBytes(
    uintWord(lock.amount),
    fromHex(lock.hash, 32),
    uintWord(lock.expiry),
    uintWord(lock.payer === 'hub' ? 1n : 0n),
  );
}

/**
 * The root a state commits its pending locks with: {@link ZERO_ROOT} for no locks, else
 * `keccak256(encodeLock(l0) ‖ encodeLock(l1) ‖ …)` in list order, exactly what the adjudicator computes over the
 * `Lock[]` it is given. The order is part of the commitment.
 * @throws MalformedError when a lock is out of range
 * @example
 * ```ts
 * const root = locksRoot([{ amount: 500n, hash, expiry: 1_900_000_000n, payer: 'device' }]);
 * ```
 */
export function locksRoot(locks: readonly Lock[]): Bytes32 {
  if (locks.length === 0) return ZERO_ROOT;
  const parts: Uint8Array[] = [];
  locks.forEach((l, i) => {
    checkLock(l, `locks[${i}]`);
    parts.push(encodeLock(l));
  });
  return toHex(keccak256(concatBytes(...parts))) as string as Bytes32;
}

/**
 * The three lock fields of a state holding `locks`: root and the total each side has locked.
 * @throws MalformedError when a lock is out of range or a total exceeds 2^256−1
 */
export function lockCommitment(locks: readonly Lock[]): LockCommitment {
  let lockedByDevice = 0n;
  let lockedByHub = 0n;
  for (const l of locks) {
    if (l.payer === 'device') lockedByDevice += l.amount;
    else lockedByHub += l.amount;
  }
  if (lockedByDevice > MAX_UINT256 || lockedByHub > MAX_UINT256)
    throw new MalformedError('locked total exceeds 2^256-1');
  return { locksRoot: locksRoot(locks), lockedByDevice, lockedByHub };
}

/** The hash a preimage claims: keccak256 of its 32 bytes (what the adjudicator's `reveal` records). */
export function hashPreimage(preimage: Bytes32 | Uint8Array): Bytes32 {
  const bytes = typeof preimage === 'string' ? fromHex(preimage, 32) : preimage;
  if (bytes.length !== 32) throw new MalformedError('a preimage is 32 bytes');
  return toHex(keccak256(bytes)) as string as Bytes32;
}

/** Where a lock's amount goes: to the payee, back to the payer, or not decided yet. */
export type LockOutcome = 'payee' | 'payer' | 'pending';

/**
 * The adjudicator's rule for one lock: the payee's if its preimage was revealed at or before `expiry`; the payer's
 * if not and `now` is past `expiry`; otherwise still pending (settle waits for it).
 * @param lock - the lock
 * @param revealedAt - when the preimage first became known on-chain (`revealedAt(hash)`), 0n or undefined if never
 * @param now - the chain's current timestamp
 */
export function lockOutcome(lock: Lock, revealedAt: bigint | undefined, now: bigint): LockOutcome {
  if (revealedAt !== undefined && revealedAt !== 0n && revealedAt <= lock.expiry) return 'payee';
  if (now > lock.expiry) return 'payer';
  return 'pending';
}

/**
 * Whether a payee holding a lock's preimage should reveal it on-chain now (the device's lock guard and the
 * watchtower both ask): never past the expiry (a later reveal no longer pays); at once while the channel is being
 * force-closed; in an open channel only within `marginSeconds` of the expiry, since until then the payer can still
 * countersign the claim off-chain.
 * @param lock - the lock the preimage opens
 * @param now - the chain's current timestamp
 * @param closing - whether the channel is being force-closed
 * @param marginSeconds - how long before the expiry an open channel's claim is taken on-chain
 */
export function revealDue(lock: Lock, now: bigint, closing: boolean, marginSeconds: bigint): boolean {
  if (now > lock.expiry) return false;
  return closing || now + marginSeconds >= lock.expiry;
}

/** A lock list as a `sync` frame carries it: the 128-byte committed encodings ({@link encodeLock}) concatenated. */
export function encodeLocks(locks: readonly Lock[]): Uint8Array {
  return concatBytes(...locks.map((l, i) => (checkLock(l, `locks[${i}]`), encodeLock(l))));
}

/**
 * Read a lock list written by {@link encodeLocks}.
 * @throws MalformedError for a length that is not a multiple of 128, more than {@link MAX_LOCKS_ON_CHAIN} locks,
 * a payer word other than 0 or 1, an expiry above 2^64−1 or a zero amount
 */
export function decodeLocks(bytes: Uint8Array): Lock[] {
  if (bytes.length % LOCK_ENCODED_BYTES !== 0) throw new MalformedError('locks: expected a multiple of 128 bytes');
  const n = bytes.length / LOCK_ENCODED_BYTES;
  if (n > MAX_LOCKS_ON_CHAIN) throw new MalformedError(`locks: more than ${MAX_LOCKS_ON_CHAIN}`);
  const word = (i: number, w: number) =>
    bytes.subarray(i * LOCK_ENCODED_BYTES + w * 32, i * LOCK_ENCODED_BYTES + (w + 1) * 32);
  const out: Lock[] = [];
  for (let i = 0; i < n; i++) {
    const payerWord = BigInt(toHex(word(i, 3)));
    if (payerWord > 1n)
      throw new MalformedError(`locks[${i}].payer: expected 0 or 1`, { details: { field: `locks[${i}].payer` } });
    const lock: Lock = {
      amount: BigInt(toHex(word(i, 0))),
      hash: toHex(word(i, 1)) as string as Bytes32,
      expiry: BigInt(toHex(word(i, 2))),
      payer: payerWord === 1n ? 'hub' : 'device',
    };
    checkLock(lock, `locks[${i}]`);
    out.push(lock);
  }
  return out;
}
