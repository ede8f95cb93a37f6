import { InvalidTransitionError, TrickleError, BadSignatureError } from './errors.js';
import { channelIdOf, domainSeparator, stateDigest, trickleDomain } from './eip712.js';
import { signatureToHex, signatureFromHex, type Signer, type Verifier } from './signer.js';
import {
  MAX_UINT64,
  MAX_UINT256,
  NO_LOCKS,
  ZERO_ROOT,
  counterparty,
  type Bytes32,
  type ChannelId,
  type ChannelParams,
  type Funding,
  type Role,
  type SignedState,
  type State,
} from './types.js';
import { checkLock, hashPreimage, lockCommitment, type Lock } from './locks.js';

/**
 * What a party needs to validate updates on one channel: its parameters, id, domain separator and on-chain funding.
 * Build it with {@link channelContext}; `funding` changes when a deposit or top-up is seen on-chain.
 */
export interface ChannelContext {
  readonly params: ChannelParams;
  readonly channelId: ChannelId;
  /** EIP-712 domain separator for the channel's chain and adjudicator. */
  readonly separator: Uint8Array;
  readonly funding: Funding;
}

/**
 * A channel whose device and hub are one address. The adjudicator's `open` refuses it (`SameDeviceAndHub`), and
 * off-chain one key would sign for both sides, so no party builds a context for it or accepts its states.
 */
export class SameDeviceAndHubError extends TrickleError {
  override readonly name = 'SameDeviceAndHubError';
  constructor(address: string) {
    super('INVALID_ARGUMENT', 'channel hub: device and hub must differ', {
      details: { field: 'hub', device: address, hub: address },
    });
  }
}

function assertTwoParties(p: ChannelParams): void {
  if (p.device.toLowerCase() === p.hub.toLowerCase()) throw new SameDeviceAndHubError(p.device);
}

/**
 * @param params - channel parameters
 * @param funding - deposits seen on-chain for each side
 * @returns the validation context of that channel
 * @throws SameDeviceAndHubError (`INVALID_ARGUMENT`) when device and hub are one address
 */
export function channelContext(params: ChannelParams, funding: Funding): ChannelContext {
  assertTwoParties(params);
  return {
    params,
    channelId: channelIdOf(params),
    separator: domainSeparator(trickleDomain(params.chainId, params.adjudicator)),
    funding,
  };
}

/** Bounds the adjudicator enforces on channel parameters and deposits; checked off-chain too, before any money moves. */
export const CHANNEL_LIMITS = {
  minChallengeDuration: 1n,
  maxChallengeDuration: 365n * 24n * 3600n,
  /** Each side's deposit is stored as a uint96 on-chain. */
  maxDeposit: (1n << 96n) - 1n,
} as const;

/**
 * Check channel parameters the way the adjudicator will on `open`.
 * @throws TrickleError('INVALID_ARGUMENT') naming the field
 */
export function validateParams(p: ChannelParams): void {
  const bad = (field: string, why: string) => {
    throw new TrickleError('INVALID_ARGUMENT', `channel ${field}: ${why}`, { details: { field } });
  };
  if (p.chainId <= 0n) bad('chainId', 'must be positive');
  assertTwoParties(p);
  if (
    p.challengeDuration < CHANNEL_LIMITS.minChallengeDuration ||
    p.challengeDuration > CHANNEL_LIMITS.maxChallengeDuration
  ) {
    bad('challengeDuration', `must be 1 s to 365 days (seconds, not milliseconds)`);
  }
}

/** Whether a state is the zero state the adjudicator accepts unsigned in a force close (isFinal is ignored there). */
export function isZeroState(s: State): boolean {
  return (
    s.version === 0n &&
    s.paidByDevice === 0n &&
    s.paidByHub === 0n &&
    s.round === 0n &&
    s.locksRoot === ZERO_ROOT &&
    s.lockedByDevice === 0n &&
    s.lockedByHub === 0n
  );
}

/**
 * Sign a state as one party, for tools and tests that build states by hand.
 * @returns the state with that party's signature set
 */
export function signState(
  signer: Signer,
  separator: Uint8Array,
  state: State,
  as: Role,
  onto: SignedState = { state },
): SignedState {
  const sig = signatureToHex(signer.signDigest(stateDigest(separator, state)));
  return as === 'device' ? { ...onto, state, deviceSig: sig } : { ...onto, state, hubSig: sig };
}

/** The state every channel starts from: version 0, nothing paid; it needs no signatures. */
export function zeroState(channelId: ChannelId): State {
  return { channelId, version: 0n, paidByDevice: 0n, paidByHub: 0n, round: 0n, ...NO_LOCKS, isFinal: false };
}

/** Whether two states are the same field for field. */
export function sameState(a: State, b: State): boolean {
  return (
    a.channelId === b.channelId &&
    a.version === b.version &&
    a.paidByDevice === b.paidByDevice &&
    a.paidByHub === b.paidByHub &&
    a.round === b.round &&
    a.locksRoot === b.locksRoot &&
    a.lockedByDevice === b.lockedByDevice &&
    a.lockedByHub === b.lockedByHub &&
    a.isFinal === b.isFinal
  );
}

/** The address that plays a role in a channel. */
export function addressOf(params: ChannelParams, role: Role) {
  return role === 'device' ? params.device : params.hub;
}

/**
 * What each side would be paid if the channel settled on `state` (the adjudicator's formula), with every pending
 * lock still escrowed from its payer's side (each lock then goes to one side or the other whole).
 * Negative means the state is not affordable.
 */
export function payouts(state: State, funding: Funding): { device: bigint; hub: bigint } {
  return {
    device: funding.device - state.paidByDevice + state.paidByHub - state.lockedByDevice,
    hub: funding.hub - state.paidByHub + state.paidByDevice - state.lockedByHub,
  };
}

/** Why no state follows version 2⁶⁴ − 1: the version is a uint64 on the wire and on-chain. */
const NO_VERSION_LEFT = 'version above uint64: the channel has no version left (close it on-chain)';

type Fail = (code: ConstructorParameters<typeof InvalidTransitionError>[0], msg: string, details?: object) => never;

/** Throws the InvalidTransitionError of a transition from `prev` to `next` (both versions in its details). */
const failFor =
  (prev: State, next: State): Fail =>
  (code, msg, details = {}) => {
    throw new InvalidTransitionError(code, msg, {
      details: { version: next.version, current: prev.version, ...details },
    });
  };

/**
 * The rules every transition shares, in the order of protocol-spec §2: same channel, a higher version (a different
 * state at the current one is `EQUIVOCATION`), none above uint64, nothing after a final state.
 * @returns true when `next` is `prev` itself (a replay)
 */
function checkSuccession(prev: State, next: State, fail: Fail): boolean {
  if (next.channelId !== prev.channelId) fail('WRONG_CHANNEL', 'state is for another channel');
  if (next.version === prev.version) {
    if (sameState(prev, next)) return true;
    fail('EQUIVOCATION', 'a different state with the current version');
  }
  if (next.version < prev.version) fail('STALE_VERSION', 'version is not newer than the current one');
  if (next.version > MAX_UINT64) fail('MALFORMED', NO_VERSION_LEFT);
  // Nor a counter above uint256 or a round above uint64: the wire and the adjudicator cannot carry it, and its EIP-712
  // word would be another state's (only reachable with counters near 2^256, but then a payment or credit that
  // affords itself against the other counter would wrap).
  if (
    next.paidByDevice > MAX_UINT256 ||
    next.paidByHub > MAX_UINT256 ||
    next.lockedByDevice > MAX_UINT256 ||
    next.lockedByHub > MAX_UINT256 ||
    next.round > MAX_UINT64
  )
    fail('MALFORMED', 'a counter above uint256 or a round above uint64');
  if (prev.isFinal) fail('CHANNEL_FINAL', 'the channel has a final state');
  return false;
}

/**
 * The arithmetic rules of a transition from `prev` to `next` proposed (signed first) by `mover`. Pure and cheap: a
 * hub with a backlog runs it on every update but verifies signatures on the newest only.
 *
 * Rules, each with its code, checked in the order of protocol-spec §2 (a state that breaks several gets the code of
 * the first): same channel (`WRONG_CHANNEL`); the version rises (`STALE_VERSION`, or `EQUIVOCATION` for a different
 * state at the current version), to no version or round above uint64 and no counter above uint256 (`MALFORMED`:
 * nobody signs a state the wire and the adjudicator cannot carry); nothing follows a final state (`CHANNEL_FINAL`);
 * no counter falls (`COUNTER_DECREASED`); only the mover's counter rises (`WRONG_PAYER`); the mover can afford it
 * against its funding and what it has received (`INSUFFICIENT_FUNDS`); the round never falls and only the hub raises it
 * (`BAD_ROUND`); a final state moves no money and carries no pending lock (`BAD_FINAL`); a plain update leaves the
 * lock fields as they are (`MALFORMED`).
 *
 * @param prev - the current state
 * @param next - the proposed state
 * @param funding - on-chain funding of each side
 * @param mover - who signed `next` first
 * @returns `'duplicate'` when `next` equals `prev` (a replay to re-ack idempotently), else `'new'`
 * @throws InvalidTransitionError with the code of the first rule broken
 */
export function checkTransition(prev: State, next: State, funding: Funding, mover: Role): 'new' | 'duplicate' {
  const fail = failFor(prev, next);
  if (checkSuccession(prev, next, fail)) return 'duplicate';
  if (next.paidByDevice < prev.paidByDevice || next.paidByHub < prev.paidByHub) {
    fail('COUNTER_DECREASED', 'a cumulative counter went down');
  }
  const other = counterparty(mover);
  const otherRaised = other === 'device' ? next.paidByDevice > prev.paidByDevice : next.paidByHub > prev.paidByHub;
  if (otherRaised) fail('WRONG_PAYER', `only the ${mover}'s counter may rise in a state the ${mover} signs first`);
  const p = payouts(next, funding);
  if (p[mover] < 0n) fail('INSUFFICIENT_FUNDS', `the ${mover} cannot afford this state`, { shortfall: -p[mover] });
  if (next.round < prev.round) fail('BAD_ROUND', 'round went down');
  if (next.round > prev.round && mover !== 'hub') fail('BAD_ROUND', 'only the hub nets market rounds');
  if (next.isFinal && (next.paidByDevice !== prev.paidByDevice || next.paidByHub !== prev.paidByHub)) {
    fail('BAD_FINAL', 'a final state may not move money');
  }
  if (next.isFinal && (next.locksRoot !== ZERO_ROOT || next.lockedByDevice !== 0n || next.lockedByHub !== 0n)) {
    fail('BAD_FINAL', 'a final state carries no pending locks');
  }
  if (
    next.locksRoot !== prev.locksRoot ||
    next.lockedByDevice !== prev.lockedByDevice ||
    next.lockedByHub !== prev.lockedByHub
  ) {
    fail('MALFORMED', 'only a lock transition changes the lock fields');
  }
  return 'new';
}

/**
 * A change to a channel's pending locks. The first three are proposed (signed first) by the lock's payer, the last by
 * its payee:
 * - `add`: a new lock at the end of the list; the payer must afford it with everything it already locked;
 * - `claim`: the payee showed the preimage; the lock leaves the list and the payer's counter rises by its amount;
 * - `expire`: after the lock's expiry the payer takes it back; the lock leaves the list, no counter moves;
 * - `cancel`: the payee gives the lock back at any time (it will not claim it: a dead route, a refused sale); the lock
 *   leaves the list, no counter moves — the state the payer would reach at the expiry, sooner.
 */
export type LockOp =
  | { readonly kind: 'add'; readonly lock: Lock }
  | { readonly kind: 'claim'; readonly hash: Bytes32 }
  | { readonly kind: 'expire'; readonly hash: Bytes32 }
  | { readonly kind: 'cancel'; readonly hash: Bytes32 };

/** Limits a lock transition is checked against. */
export interface LockRules {
  /** Most pending locks a channel holds (`TOO_MANY_LOCKS` above). At most `MAX_LOCKS_ON_CHAIN`. */
  readonly maxLocks: number;
  /** The checker's clock in chain seconds: an `expire` before (or at) the expiry is `LOCK_NOT_EXPIRED`. Omit to skip. */
  readonly nowSec?: bigint | undefined;
  /**
   * The latest expiry an `add` may carry (the receiver's clock + `maxLockSeconds`): later is `LIMIT_EXCEEDED`, the
   * last rule of an add (protocol-spec §2). Omit to skip.
   */
  readonly maxExpiry?: bigint | undefined;
  /**
   * With a `claim`: the preimage the update carries. One that does not hash to the lock's hash is `BAD_PREIMAGE`,
   * checked after the version and finality rules and before the lock is looked up (`UNKNOWN_LOCK`). Omit to skip.
   */
  readonly preimage?: Bytes32 | undefined;
}

/** Default bound on pending locks per channel. */
export const DEFAULT_MAX_LOCKS = 32;

/**
 * The state fields a lock transition leads to from `prev` (version, round and isFinal untouched), and the new lock
 * list. The proposer builds its state from it; {@link checkLockTransition} compares a received state with it.
 * @throws InvalidTransitionError UNKNOWN_LOCK / WRONG_PAYER / TOO_MANY_LOCKS / MALFORMED (a hash already pending)
 */
export function applyLockOp(
  prev: State,
  prevLocks: readonly Lock[],
  op: LockOp,
  mover: Role,
  maxLocks = DEFAULT_MAX_LOCKS,
): { state: State; locks: readonly Lock[]; lock: Lock } {
  const fail = (code: ConstructorParameters<typeof InvalidTransitionError>[0], msg: string, details = {}): never => {
    throw new InvalidTransitionError(code, msg, { details: { version: prev.version, ...details } });
  };
  let locks: readonly Lock[];
  let lock: Lock;
  let paid = 0n;
  if (op.kind === 'add') {
    lock = op.lock;
    checkLock(lock);
    if (lock.payer !== mover) fail('WRONG_PAYER', `a lock the ${lock.payer} pays is added by the ${lock.payer}`);
    if (prevLocks.some((l) => l.hash === lock.hash))
      fail('MALFORMED', 'a lock with this hash is already pending', { hash: lock.hash });
    if (prevLocks.length + 1 > maxLocks)
      fail('TOO_MANY_LOCKS', `at most ${maxLocks} pending locks per channel`, { maxLocks });
    locks = [...prevLocks, lock];
  } else {
    const found = prevLocks.find((l) => l.hash === op.hash);
    if (!found) return fail('UNKNOWN_LOCK', 'no pending lock has this hash', { hash: op.hash });
    lock = found;
    if (op.kind === 'cancel') {
      if (lock.payer === mover) fail('WRONG_PAYER', `only the lock's payee gives it back; the ${mover} pays it`);
    } else if (lock.payer !== mover)
      fail('WRONG_PAYER', `only the lock's payer (${lock.payer}) proposes its ${op.kind}`);
    locks = prevLocks.filter((l) => l !== lock);
    if (op.kind === 'claim') paid = lock.amount;
  }
  const c = lockCommitment(locks);
  const state: State = {
    ...prev,
    ...c,
    paidByDevice: mover === 'device' ? prev.paidByDevice + paid : prev.paidByDevice,
    paidByHub: mover === 'hub' ? prev.paidByHub + paid : prev.paidByHub,
  };
  return { state, locks, lock };
}

/**
 * The rules of a lock transition from `prev` (holding `prevLocks`, in committed order) to `next`, proposed by
 * `mover`: the same channel, version and finality rules as {@link checkTransition}; `next` is exactly
 * {@link applyLockOp} of `prev` (lock fields, counters and round, else `MALFORMED`); the mover can afford `next`
 * with every lock it has pending counted against it (`INSUFFICIENT_FUNDS`, the code of every affordability
 * failure, so callers handle one code); an `expire` only once `rules.nowSec` is past the expiry (`LOCK_NOT_EXPIRED`);
 * a `cancel` (by the payee) at any time. In the order of protocol-spec §2: a claim's preimage (`rules.preimage`, `BAD_PREIMAGE`) right after the version and
 * finality rules, before the lock is looked up (`UNKNOWN_LOCK`); an add's expiry bound (`rules.maxExpiry`,
 * `LIMIT_EXCEEDED`) last, after `INSUFFICIENT_FUNDS`.
 * @returns the lock list of `next` and the lock the transition adds or removes
 * @throws InvalidTransitionError with the code of the first rule broken
 */
export function checkLockTransition(
  prev: State,
  prevLocks: readonly Lock[],
  next: State,
  op: LockOp,
  funding: Funding,
  mover: Role,
  rules: LockRules,
): { locks: readonly Lock[]; lock: Lock } {
  const fail = failFor(prev, next);
  // A lock transition always changes the state: the same state again is no replay of one.
  if (checkSuccession(prev, next, fail)) fail('EQUIVOCATION', 'a different state with the current version');
  if (next.isFinal) fail('MALFORMED', 'a lock transition is never final');
  if (op.kind === 'claim' && rules.preimage !== undefined && hashPreimage(rules.preimage) !== op.hash)
    fail('BAD_PREIMAGE', 'the preimage does not hash to the lock’s hash');
  const { state: want, locks, lock } = applyLockOp(prev, prevLocks, op, mover, rules.maxLocks);
  if (
    next.paidByDevice !== want.paidByDevice ||
    next.paidByHub !== want.paidByHub ||
    next.round !== want.round ||
    next.locksRoot !== want.locksRoot ||
    next.lockedByDevice !== want.lockedByDevice ||
    next.lockedByHub !== want.lockedByHub
  ) {
    fail('MALFORMED', `the state does not match the lock ${op.kind} it carries`);
  }
  if (op.kind === 'expire' && rules.nowSec !== undefined && rules.nowSec <= lock.expiry) {
    fail('LOCK_NOT_EXPIRED', 'the lock has not expired yet', { expiry: lock.expiry });
  }
  const p = payouts(next, funding);
  if (p[mover] < 0n)
    fail('INSUFFICIENT_FUNDS', `the ${mover} cannot afford this state with its pending locks`, {
      shortfall: -p[mover],
    });
  if (op.kind === 'add' && rules.maxExpiry !== undefined && lock.expiry > rules.maxExpiry)
    fail('LIMIT_EXCEEDED', 'the lock expires too far ahead', { expiry: lock.expiry, latest: rules.maxExpiry });
  return { locks, lock };
}

/** A state update as it travels: the state and the proposer's signature. */
export interface Proposal {
  readonly state: State;
  readonly signature: Uint8Array;
}

/**
 * Check that a state carries valid signatures of both parties (or is the unsigned zero state). Used on states
 * received in a sync, restored from a backup, or handed to a watchtower.
 * @throws BadSignatureError / TrickleError('WRONG_CHANNEL'), SameDeviceAndHubError when device and hub are one address
 */
export function checkFullySigned(ctx: ChannelContext, signed: SignedState, verifier: Verifier): void {
  // A context built by hand bypasses channelContext(): with one address for both parties, one key signs both.
  assertTwoParties(ctx.params);
  const { state } = signed;
  if (state.channelId !== ctx.channelId) throw new TrickleError('WRONG_CHANNEL', 'state is for another channel');
  if (state.version === 0n && !signed.deviceSig && !signed.hubSig && sameState(state, zeroState(ctx.channelId))) return;
  if (!signed.deviceSig || !signed.hubSig) throw new BadSignatureError('both signatures are required');
  const digest = stateDigest(ctx.separator, state);
  if (verifier.recoverAddress(digest, signatureFromHex(signed.deviceSig)) !== ctx.params.device) {
    throw new BadSignatureError('device signature is not by the device');
  }
  if (verifier.recoverAddress(digest, signatureFromHex(signed.hubSig)) !== ctx.params.hub) {
    throw new BadSignatureError('hub signature is not by the hub');
  }
}

/**
 * Propose the next state as `me`: check it against our own rules first, then sign it.
 * @returns the proposal to send
 * @throws InvalidTransitionError when we would be proposing something the counterparty must refuse
 */
export function propose(ctx: ChannelContext, current: State, next: State, me: Role, signer: Signer): Proposal {
  checkTransition(current, next, ctx.funding, me);
  return { state: next, signature: signer.signDigest(stateDigest(ctx.separator, next)) };
}
