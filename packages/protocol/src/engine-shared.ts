/**
 * What the engine's core (`engine.ts`) and both roles' rules (`engine-hub.ts`, `engine-device.ts`) share: the effect
 * accumulator, refusals, frames, the checks of a peer's proposal and of lock terms, and proposing what is queued.
 * Internal to the engine: not an export of the package.
 *
 * @module
 */
import { checkLockTransition, checkTransition, sameState, type LockOp } from './channel.js';
import type { Lock } from './locks.js';
import { TrickleError, isTrickleError } from './errors.js';
import type { Message, WireLock, WireUnlock } from './codec.js';
import { signatureFromHex, signatureToHex } from './signer.js';
import { toHex } from './hex.js';
import {
  MAX_UINT256,
  MAX_UINT64,
  counterparty,
  type Hex,
  type Bytes32,
  type Role,
  type SignatureHex,
  type SignedState,
  type State,
} from './types.js';
import type {
  EngineChannel,
  EngineEffect,
  EngineEnv,
  EngineEvent,
  EngineRestore,
  EngineRules,
  EngineWrite,
  LockTerms,
  OwnClaim,
  OwnProposal,
  PeerUpdate,
  PendingCredit,
  PendingPay,
  StepResult,
  Unlock,
} from './engine.js';

/**
 * The hooks one role's rules give the engine. An intent or peer message a role never handles is absent: the engine
 * refuses it (or, a receipt at the hub, ignores it) as it always did.
 */
export interface RoleRules extends EngineRules {
  /** Device: `pay()` intents. */
  readonly pay?: (ch: EngineChannel, ev: Extract<EngineEvent, { type: 'pay' }>, env: EngineEnv) => StepResult;
  /** Device: `close()`. */
  readonly close?: (ch: EngineChannel, ev: Extract<EngineEvent, { type: 'close' }>, env: EngineEnv) => StepResult;
  /** Hub: a credit to the device. */
  readonly credit?: (ch: EngineChannel, ev: Extract<EngineEvent, { type: 'credit' }>, env: EngineEnv) => StepResult;
  /** Hub: the device's final state. */
  readonly peerClose?: (
    ch: EngineChannel,
    ev: Extract<EngineEvent, { type: 'peer-close' }>,
    env: EngineEnv,
  ) => StepResult;
  /** Hub: an ack of no proposal on a closing channel (the device's countersignature of the final state). */
  readonly closingAck?: (
    ch: EngineChannel,
    ev: Extract<EngineEvent, { type: 'peer-ack' }>,
    env: EngineEnv,
  ) => StepResult;
  /** Device: a routed payment's outcome. */
  readonly receipt?: (ch: EngineChannel, ev: Extract<EngineEvent, { type: 'receipt' }>) => StepResult;
  /** The peer's proposals, in arrival order. */
  readonly peerUpdates: (ch: EngineChannel, updates: readonly PeerUpdate[], env: EngineEnv) => StepResult;
  /** Propose what is queued when the window allows. */
  readonly propose: (ch: EngineChannel, out: Out, env: EngineEnv) => EngineChannel;
  /** Hub: the proposal it had stored and not yet seen answered, rebuilt from the record. */
  readonly restore?: (r: EngineRestore, locks: readonly Lock[]) => Partial<EngineChannel>;
  /** Our proposal `p` was countersigned (`settled`: every proposal the ack covers): answer what it carried. */
  readonly acked: (
    next: EngineChannel,
    p: OwnProposal,
    settled: readonly OwnProposal[],
    latest: SignedState,
    env: EngineEnv,
    out: Out,
  ) => EngineChannel;
  /** Our proposal `ch.proposals[i]` was refused (`conflict`: on a version conflict): retry or answer its callers. */
  readonly rejected: (
    ch: EngineChannel,
    i: number,
    conflict: boolean,
    ev: Extract<EngineEvent, { type: 'peer-reject' }>,
    out: Out,
    env: EngineEnv,
  ) => StepResult;
  /** A sync adopted the peer's `theirs` (lock list `locks`) over `before`: settle our proposals it covers. */
  readonly adopted: (
    next: EngineChannel,
    before: EngineChannel,
    settled: readonly OwnProposal[],
    theirs: SignedState,
    locks: readonly Lock[],
    env: EngineEnv,
    out: Out,
  ) => EngineChannel;
  /** What this role does on a tick besides expiring locks. */
  readonly tick?: (ch: EngineChannel, env: EngineEnv, out: Out) => EngineChannel;
  /**
   * After every step that changed the channel (`before` → `r.channel`): the hub settles its unsettled states, the
   * device drops the give-backs a state both signed reached.
   */
  readonly after?: (before: EngineChannel, r: StepResult, ev: EngineEvent, env: EngineEnv) => StepResult;
  /** What this role does once a sync has ended (before what is queued is proposed). */
  readonly resynced?: (ch: EngineChannel, env: EngineEnv, out: Out) => EngineChannel;
}

/** One empty list shared by every idle channel (the engine never mutates a list; it builds new ones). */
export const NONE: readonly never[] = Object.freeze([]);

export const err = (e: unknown): TrickleError =>
  isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error', { cause: e });

/** Accumulates the effects of one step. */
export class Out {
  readonly effects: EngineEffect[] = [];
  readonly writes: EngineWrite[] = [];
  gate = false;
  behind = false;
  persist(gate: boolean, ...writes: EngineWrite[]): void {
    if (gate) this.gate = true;
    else this.behind = true;
    this.writes.push(...writes);
  }
  /** Effects with the persist first (one per step: gated wins over behind). */
  finish(channel: EngineChannel): StepResult {
    if (!this.gate && !this.behind && this.writes.length === 0) return { channel, effects: this.effects };
    // Evidence written counts against the channel's bound (config.maxEvidence) in every later step too.
    let evidence = 0;
    for (const w of this.writes) if (w.kind === 'evidence') evidence++;
    if (evidence > 0) channel = { ...channel, evidenceCount: channel.evidenceCount + evidence };
    // This accumulator is done with: its effect list becomes the step's, persist first (no copy per step).
    this.effects.unshift({ type: 'persist', gate: this.gate || this.writes.length > 0, writes: this.writes });
    return { channel, effects: this.effects };
  }
}

/**
 * Answer a caller with `e` (for `c.ref`), and every caller that joined it (a hub credit asked again while it waited,
 * `PendingCredit.joined`) with the same outcome.
 */
export function answerCallers(
  effects: EngineEffect[],
  c: { readonly ref: number; readonly joined?: readonly number[] | undefined },
  e: Extract<EngineEffect, { type: 'resolve' | 'reject' }>,
): void {
  effects.push(e);
  if (c.joined) for (const ref of c.joined) effects.push({ ...e, ref });
}

export function refuse(ch: EngineChannel, e: unknown, reply?: { id: number }): StepResult {
  const error = err(e);
  const effects: EngineEffect[] = [{ type: 'refused', error }];
  if (reply) effects.push({ type: 'send', msg: rejectFrame(ch, reply.id, error) });
  return { channel: ch, effects };
}

export function rejectFrame(ch: EngineChannel, id: number, e: TrickleError): Message {
  return { t: 'reject', id, channelId: ch.ctx.channelId, code: e.code, message: e.shortMessage, latest: ch.latest };
}

export function checkAmount(amount: unknown): void {
  if (typeof amount !== 'bigint' || amount <= 0n || amount > MAX_UINT256) {
    throw new TrickleError('INVALID_ARGUMENT', 'amount must be a positive uint256 bigint');
  }
}

/** The chain-seconds clock a step reads from `env.now` (milliseconds). */
export const nowSec = (env: EngineEnv): bigint => BigInt(Math.floor(env.now / 1000));

/** Every lock hash pending in the latest state, queued or in flight on this channel. */
export function lockHashesInUse(ch: EngineChannel): Set<Bytes32> {
  const hashes = new Set<Bytes32>(ch.locks.map((l) => l.hash));
  for (const p of ch.proposals) for (const l of p.locks) hashes.add(l.hash);
  for (const q of ch.queue) if (q.lock) hashes.add(q.lock.hash);
  return hashes;
}

/**
 * How many more locks the channel can take: `maxLocks` less its pending locks and the adds queued or proposed (either
 * party's: the limit counts both directions). A router asks before it accepts a lock it must forward on this channel.
 */
export function lockSlotsLeft(ch: EngineChannel): number {
  const pending =
    ch.locks.length + ch.queue.filter((q) => q.lock).length + ch.proposals.filter((p) => p.op?.kind === 'add').length;
  return ch.config.maxLocks - pending;
}

/**
 * @throws TrickleError INVALID_ARGUMENT (a hash that is not 32 bytes of lowercase hex, an expiry that is no uint64) /
 *   LOCK_EXPIRED / LIMIT_EXCEEDED / TOO_MANY_LOCKS for terms a new lock cannot have
 */
export function checkLockTerms(
  ch: EngineChannel,
  terms: LockTerms,
  escrowFor: Bytes32 | undefined,
  env: EngineEnv,
): void {
  if (escrowFor) throw new TrickleError('INVALID_ARGUMENT', 'an escrow is not conditional');
  // Canonical (lowercase) only: pending locks are matched by their hash string, and the peer reads every hash off
  // the wire as lowercase, so a lock kept here as `0xAB…` would never match the payee's claim of it (`UNKNOWN_LOCK`),
  // leaving the payee only the chain. `toBytes32` gives the canonical form.
  if (typeof terms.hash !== 'string' || !/^0x[0-9a-f]{64}$/.test(terms.hash))
    throw new TrickleError('INVALID_ARGUMENT', 'lock hash must be 32 bytes of lowercase 0x hex (see toBytes32)');
  if (typeof terms.expiry !== 'bigint' || terms.expiry > MAX_UINT64)
    throw new TrickleError('INVALID_ARGUMENT', 'lock expiry must be a uint64 bigint (chain seconds)');
  if (terms.expiry <= nowSec(env))
    throw new TrickleError('LOCK_EXPIRED', 'the lock would expire before it is added', {
      details: { expiry: terms.expiry },
    });
  checkLockHorizon(ch, terms.expiry, nowSec(env));
  if (lockHashesInUse(ch).has(terms.hash))
    throw new TrickleError('INVALID_ARGUMENT', 'a lock with this hash is already pending on this channel');
  if (lockSlotsLeft(ch) < 1)
    throw new TrickleError('TOO_MANY_LOCKS', `at most ${ch.config.maxLocks} pending locks per channel`, {
      details: { maxLocks: ch.config.maxLocks },
    });
}

/**
 * A lock may expire at most `maxLockSeconds` from now: settlement on-chain waits for every pending lock's expiry, so a
 * lock without a bound would freeze the channel, the counterparty's deposit included, for as long as its payer chose.
 * @throws TrickleError('LIMIT_EXCEEDED')
 */
export function checkLockHorizon(ch: EngineChannel, expiry: bigint, now: bigint): void {
  const latest = now + BigInt(ch.config.maxLockSeconds);
  if (expiry > latest)
    throw new TrickleError('LIMIT_EXCEEDED', `a lock may expire at most ${ch.config.maxLockSeconds} s from now`, {
      details: { expiry, latest },
    });
}

/** Propose what is queued when the window allows, then finish the step. */
export function finishWithProposals(ch: EngineChannel, out: Out, env: EngineEnv): StepResult {
  ch = queueExpiries(ch, env);
  ch = (ch.rules as RoleRules).propose(ch, out, env);
  return out.finish(ch);
}

/** Queue the expiry of this party's own locks that are past their expiry and not already being removed. */
export function queueExpiries(ch: EngineChannel, env: EngineEnv): EngineChannel {
  if (ch.locks.length === 0 || ch.status !== 'open' || ch.latest.state.isFinal) return ch;
  const now = nowSec(env);
  const busy = new Set<Bytes32>();
  for (const p of ch.proposals) if (p.op && p.op.kind !== 'add') busy.add(p.op.hash);
  for (const q of ch.queue) if (q.unlock) busy.add(q.unlock.hash);
  const due = ch.locks.filter(
    (l) => l.payer === ch.role && now > l.expiry && !busy.has(l.hash) && !ch.contested.includes(l.hash),
  );
  if (due.length === 0) return ch;
  const entries = due.map((l): PendingPay | PendingCredit =>
    ch.role === 'device'
      ? { ref: -1, amount: 0n, unlock: { hash: l.hash }, target: 0n }
      : { ref: -1, amount: 0n, unlock: { hash: l.hash }, attempts: 0 },
  );
  return { ...ch, queue: [...entries, ...ch.queue] };
}

export function nextVersion(ch: EngineChannel, base: State): bigint {
  return (base.version > ch.signedVersion ? base.version : ch.signedVersion) + 1n;
}

/** Lock op of a queued entry, as the mover `role` proposes it. */
export function opOf(
  role: Role,
  q: { readonly amount: bigint; readonly lock?: LockTerms | undefined; readonly unlock?: Unlock | undefined },
): LockOp {
  if (q.lock) return { kind: 'add', lock: { amount: q.amount, hash: q.lock.hash, expiry: q.lock.expiry, payer: role } };
  const u = q.unlock!;
  return u.preimage ? { kind: 'claim', hash: u.hash } : { kind: u.cancel ? 'cancel' : 'expire', hash: u.hash };
}

/**
 * The op of an `unlock` received from `mover` (or restored from a record): with a preimage a claim; without one the
 * return of the mover's own lock after its expiry, or, when the lock with that hash is the other party's, its payee
 * giving it back (a channel holds one lock per hash).
 */
export function unlockOp(unlock: WireUnlock, locks: readonly Lock[], mover: Role): LockOp {
  if (unlock.preimage !== undefined) return { kind: 'claim', hash: unlock.hash };
  const lock = locks.find((l) => l.hash === unlock.hash);
  return { kind: lock && lock.payer !== mover ? 'cancel' : 'expire', hash: unlock.hash };
}

/** Wire fields of a lock op. */
export function wireOp(
  op: LockOp | undefined,
  preimage: Bytes32 | undefined,
): { lock?: WireLock; unlock?: WireUnlock } {
  if (!op) return {};
  if (op.kind === 'add') return { lock: { amount: op.lock.amount, hash: op.lock.hash, expiry: op.lock.expiry } };
  return { unlock: op.kind === 'claim' ? { hash: op.hash, preimage } : { hash: op.hash } };
}

export function updateFrame(p: OwnProposal): Message {
  return {
    t: 'update',
    id: p.id,
    state: p.state,
    sig: signatureFromHex(p.sig!), // every update is signed by its proposer (only a device's close request is not)
    route: p.route,
    paymentId: p.escrowFor ?? p.credit?.paymentId,
    ...wireOp(p.op, p.preimage),
  };
}

export const nextIdAfter = (id: number): number => (id % 0x7fffffff) + 1;

export const sigHexOf = (digest: Uint8Array): Hex => toHex(digest) as Hex;

/**
 * The claim to show again right behind a `LOCK_CLAIMED` refusal of a lock's return (protocol-spec §2), so a payer that
 * finds the preimage revealed on-chain in time takes the claim now rather than after the next reconnect; undefined for
 * any other refusal, or a lock this party has not claimed.
 */
export function claimAgain(ch: EngineChannel, refusal: unknown, u: PeerUpdate): EngineEffect | undefined {
  if (!isTrickleError(refusal, 'LOCK_CLAIMED')) return undefined;
  const claim = ch.claims.find((c) => c.hash === u.unlock?.hash);
  if (!claim) return undefined;
  return {
    type: 'send',
    msg: {
      t: 'claim',
      id: claim.id,
      channelId: ch.ctx.channelId,
      unlock: { hash: claim.hash, preimage: claim.preimage },
    },
  };
}

export function ackFrame(ch: EngineChannel, id: number, version: bigint, sig: SignatureHex): Message {
  return { t: 'ack', id, channelId: ch.ctx.channelId, version, sig: signatureFromHex(sig) };
}

/** Keep a second, different state the peer signed at a version already signed here — only once its signature verifies. */
export function evidenceIfDifferent(
  ch: EngineChannel,
  u: { state: State; sig: Uint8Array },
  env: EngineEnv,
  out: Out,
): void {
  if (ch.evidenceCount + out.writes.filter((w) => w.kind === 'evidence').length >= ch.config.maxEvidence) return;
  if (
    u.state.channelId !== ch.ctx.channelId ||
    sameState(u.state, ch.latest.state) ||
    u.state.version !== ch.latest.state.version
  )
    return;
  try {
    if (env.crypto.recover(env.crypto.digest(u.state), u.sig) !== ch.ctx.params[counterparty(ch.role)]) return;
  } catch {
    return;
  }
  out.persist(true, {
    kind: 'evidence',
    version: u.state.version,
    held: ch.latest,
    offered: { state: u.state, sig: signatureToHex(u.sig) },
  });
}

/** The result of checking one peer proposal on top of `prev` (holding `prevLocks`). */
export interface PeerStep {
  readonly kind: 'new' | 'duplicate';
  readonly locks: readonly Lock[];
  readonly op?: LockOp | undefined;
  /** The lock the op adds or removes. */
  readonly lock?: Lock | undefined;
}

/**
 * The rules of one peer proposal: a plain update by {@link checkTransition}, a lock transition by
 * {@link checkLockTransition} (with `now`, an expiry is countersigned only past the lock's expiry).
 */
export function peerTransition(
  ch: EngineChannel,
  prev: State,
  prevLocks: readonly Lock[],
  u: PeerUpdate,
  mover: Role,
  now: bigint | undefined,
): PeerStep {
  if (!u.lock && !u.unlock) return { kind: checkTransition(prev, u.state, ch.ctx.funding, mover), locks: prevLocks };
  if (sameState(prev, u.state)) return { kind: 'duplicate', locks: prevLocks };
  if (u.lock && u.unlock) throw new TrickleError('MALFORMED', 'an update adds a lock or removes one, not both');
  let op: LockOp;
  // The preimage and the expiry bound are checked inside, in the order of protocol-spec §2: a stale or misdirected
  // state is refused for that first, whatever its lock carries.
  if (u.lock)
    op = { kind: 'add', lock: { amount: u.lock.amount, hash: u.lock.hash, expiry: u.lock.expiry, payer: mover } };
  else op = unlockOp(u.unlock!, prevLocks, mover);
  const r = checkLockTransition(prev, prevLocks, u.state, op, ch.ctx.funding, mover, {
    maxLocks: ch.config.maxLocks,
    nowSec: now,
    maxExpiry: now !== undefined ? now + BigInt(ch.config.maxLockSeconds) : undefined,
    preimage: u.unlock?.preimage,
  });
  return { kind: 'new', locks: r.locks, op, lock: r.lock };
}

/**
 * Payee: refuse the return of a lock whose preimage this party showed before the expiry, or that was revealed on-chain
 * by then (`u.revealedAt`, read by the shell) (`LOCK_CLAIMED`): the claim stands, off-chain or on-chain.
 */
export function checkNotClaimed(ch: EngineChannel, st: PeerStep, u?: PeerUpdate): void {
  if (st.op?.kind !== 'expire') return;
  const at = u?.revealedAt;
  if (ch.claims.some((c) => c.hash === st.lock!.hash) || (at !== undefined && at !== 0n && at <= st.lock!.expiry)) {
    throw new TrickleError('LOCK_CLAIMED', 'the payee showed this lock’s preimage before its expiry', {
      details: { hash: st.lock!.hash },
    });
  }
}

/** Effects of a peer's lock transition that became the latest state (this party is the lock's payee). */
export function afterPeerLockOp(
  ch: EngineChannel,
  st: PeerStep,
  u: PeerUpdate,
  latest: SignedState,
  out: Out,
): EngineChannel {
  if (!st.op || !st.lock) return ch;
  if (st.op.kind === 'add') {
    out.effects.push({
      type: 'lock-incoming',
      lock: st.lock,
      paymentId: u.paymentId ?? u.route?.paymentId,
      state: latest,
    });
    return ch;
  }
  const claims = lockLeft(ch.claims, st.lock, st.op.kind === 'claim', u.unlock?.preimage, latest, out);
  return claims === ch.claims ? ch : { ...ch, claims };
}

/**
 * A lock left the latest state, `claimed` by its payee or refunded to its payer: report it (with the preimage shown,
 * ours if the payer's is not known), and answer the claim of ours that waited on it.
 * @returns the claims still waiting
 */
export function lockLeft(
  claims: readonly OwnClaim[],
  lock: Lock,
  claimed: boolean,
  preimage: Bytes32 | undefined,
  latest: SignedState,
  out: Out,
): readonly OwnClaim[] {
  const mine = claims.find((c) => c.hash === lock.hash);
  out.effects.push({
    type: 'lock-settled',
    lock,
    outcome: claimed ? 'claimed' : 'refunded',
    preimage: claimed ? (preimage ?? mine?.preimage) : undefined,
    state: latest,
  });
  if (!mine) return claims;
  if (mine.ref >= 0)
    out.effects.push(
      claimed
        ? { type: 'resolve', ref: mine.ref, state: latest, amount: lock.amount }
        : {
            type: 'reject',
            ref: mine.ref,
            error: new TrickleError('LOCK_EXPIRED', 'the payer took the lock back after its expiry'),
          },
    );
  return claims.filter((c) => c !== mine);
}
