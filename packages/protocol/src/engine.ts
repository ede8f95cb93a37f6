/**
 * The channel engine: every transition rule of a channel, for both parties, as one pure reducer.
 *
 * `step(channel, event, env) → { channel, effects }`. No I/O, no clock, no randomness, no globals: time and keys
 * arrive in `env` (`now`, an {@link EngineCrypto} whose signatures are deterministic, RFC 6979), so replaying the
 * same events gives the same states and the same signatures. The hub, the device client and the watchtower are
 * shells around it: decode → step → persist → act.
 *
 * The shell contract:
 * - A `persist` effect with `gate: true` must succeed before the shell adopts the returned channel or performs any
 *   other effect of the step. If it fails, the shell discards the step (keeps the channel it had), and reports
 *   `STORE_FAILURE` (see {@link storeFailure}) to every caller and peer message of the discarded step.
 * - A `persist` with `gate: false` is written behind: the state it records is already durable at the peer and
 *   forgetting it costs this party nothing (a device's own payment, which the hub committed before acking).
 * - Refused events leave the channel unchanged (the same object is returned) and carry a `refused` effect with a
 *   typed error; a refused peer message also gets a `reject` frame to send, and a refused intent (`credit`, `close`)
 *   a `reject` effect for its `ref`. Two exceptions: an equivocation whose evidence is written returns the channel
 *   with `evidenceCount` raised (and a gated persist), and a device that has not resynced answers a hub proposal
 *   with no frame at all (the hub resends it after the sync).
 *
 * @module
 */
import {
  applyLockOp,
  checkLockTransition,
  checkTransition,
  isZeroState,
  payouts,
  sameState,
  DEFAULT_MAX_LOCKS,
  type ChannelContext,
  type LockOp,
} from './channel.js';
import { encodeLocks, hashPreimage, lockCommitment, MAX_LOCKS_ON_CHAIN, type Lock } from './locks.js';
import { TrickleError, isTrickleError, type ErrorCode } from './errors.js';
import type { Message, RouteInstruction, WireLock, WireUnlock } from './codec.js';
import { signatureFromHex, signatureToHex } from './signer.js';
import { toHex } from './hex.js';
import {
  MAX_UINT256,
  counterparty,
  type Hex,
  type Address,
  type Bytes32,
  type Funding,
  type Role,
  type SignatureHex,
  type SignedState,
  type State,
} from './types.js';
import { CHANNEL_LIMITS } from './channel.js';

/** The key work a step needs, injected: deterministic, so a replay signs the same bytes. */
export interface EngineCrypto {
  /** EIP-712 digest of a state under the channel's domain. */
  digest(state: State): Uint8Array;
  /** Sign a state digest with this party's key (65 bytes r ‖ s ‖ v). */
  sign(digest: Uint8Array): Uint8Array;
  /** Recover the signer of a digest. @throws BadSignatureError for a malformed signature */
  recover(digest: Uint8Array, signature: Uint8Array): Address;
}

/** What a step may read besides the channel and the event. */
export interface EngineEnv {
  readonly crypto: EngineCrypto;
  /** Milliseconds since the epoch, from the shell's clock. */
  readonly now: number;
}

/** Limits fixed when a channel is created or restored. */
export interface EngineConfig {
  /** Device: own proposals in flight at once (pipelining window). */
  readonly maxInFlight: number;
  /** Hub: how often a credit refused on a version conflict is proposed again. */
  readonly maxCreditRetries: number;
  /** Equivocation evidence records kept per channel. */
  readonly maxEvidence: number;
  /** Device: after a crossing with a hub credit, hold new proposals this long so the hub can re-propose. */
  readonly yieldMs: number;
  /** Device: how long a routed payment waits for its delivery receipt. */
  readonly routeTimeoutMs: number;
  /** Most pending locks per channel (both directions); more is `TOO_MANY_LOCKS`. At most `MAX_LOCKS_ON_CHAIN`. */
  readonly maxLocks: number;
  /**
   * Device: versions reserved durably at a time. A device writes its own proposals behind, so a crash can forget a
   * version it signed (and the hub refused); before signing above the reserved ceiling it makes a higher ceiling
   * durable (one gated write per this many states), and after a restart it signs only above it.
   */
  readonly reserveVersions: number;
}

/** Defaults of {@link EngineConfig}. */
export const DEFAULT_ENGINE_CONFIG: EngineConfig = {
  maxInFlight: 8,
  maxCreditRetries: 30,
  maxEvidence: 16,
  yieldMs: 50,
  routeTimeoutMs: 30_000,
  maxLocks: DEFAULT_MAX_LOCKS,
  reserveVersions: 1024,
};

/** Where a channel is in its on-chain life. */
export type EngineStatus = 'open' | 'closing' | 'closed';

/** A conditional payment's condition: released by the preimage of `hash` until `expiry` (chain seconds). */
export interface LockTerms {
  readonly hash: Bytes32;
  readonly expiry: bigint;
}

/**
 * One `pay()` call: a device payment to the hub, or through it with `route`, or a market order's escrow; with `lock`,
 * a conditional payment (a lock the device pays; with `route`, the hub forwards it as a lock).
 */
export interface PayIntent {
  readonly ref: number;
  readonly amount: bigint;
  readonly route?: RouteInstruction | undefined;
  readonly escrowFor?: Bytes32 | undefined;
  readonly lock?: LockTerms | undefined;
}

/** Removing one of this party's own locks: claimed with the payee's preimage, or taken back (no preimage) after expiry. */
export interface Unlock {
  readonly hash: Bytes32;
  readonly preimage?: Bytes32 | undefined;
}

/** A device payment waiting to be included in a state. `target` is the cumulative paid once it is in. */
export interface PendingPay {
  readonly ref: number;
  readonly amount: bigint;
  readonly route?: RouteInstruction | undefined;
  readonly escrowFor?: Bytes32 | undefined;
  readonly lock?: LockTerms | undefined;
  /** An unlock of the device's own lock (amount 0: a claim moves locked money to paid). */
  readonly unlock?: Unlock | undefined;
  readonly target: bigint;
}

/** A hub credit waiting to be proposed or answered; with `lock` a lock the hub pays, with `unlock` one it removes. */
export interface PendingCredit {
  readonly ref: number;
  readonly amount: bigint;
  readonly paymentId?: Bytes32 | undefined;
  readonly round?: bigint | undefined;
  readonly lock?: LockTerms | undefined;
  readonly unlock?: Unlock | undefined;
  readonly attempts: number;
}

/** A claim this party made as a lock's payee: the preimage shown to the payer, waiting for its claim update. */
export interface OwnClaim {
  readonly ref: number;
  readonly id: number;
  readonly hash: Bytes32;
  readonly preimage: Bytes32;
}

/** A state this party signed first and sent, not yet answered. */
export interface OwnProposal {
  readonly id: number;
  readonly state: State;
  readonly sig: SignatureHex;
  /** Device: payments this proposal added over the one below it. */
  readonly pays: readonly PendingPay[];
  /** Hub: the credit it carries. */
  readonly credit?: PendingCredit | undefined;
  readonly route?: RouteInstruction | undefined;
  readonly escrowFor?: Bytes32 | undefined;
  /** Set for a cooperative-close proposal (final state). */
  readonly closeRefs?: readonly number[] | undefined;
  /** The pending locks of `state`, in committed order. */
  readonly locks: readonly Lock[];
  /** The lock transition this proposal makes, if any (a barrier: nothing is pipelined on top of it). */
  readonly op?: LockOp | undefined;
  /** With a claim `op`: the preimage the payee showed. */
  readonly preimage?: Bytes32 | undefined;
}

/** A routed payment the hub acked, waiting for its delivery receipt (device). */
export interface RoutedWait {
  readonly ref: number;
  readonly paymentId: Bytes32;
  readonly amount: bigint;
  readonly target: bigint;
  readonly version: bigint;
  readonly since: number;
}

/** Everything one party keeps per channel. Immutable: every step returns a new value or the same one. */
export interface EngineChannel {
  readonly role: Role;
  readonly ctx: ChannelContext;
  readonly config: EngineConfig;
  readonly status: EngineStatus;
  /** Latest state both parties signed (the unsigned zero state before any update). */
  readonly latest: SignedState;
  /** Highest version this party has ever signed, and the digest signed there. */
  readonly signedVersion: bigint;
  readonly signedDigest?: Hex | undefined;
  /** Device: the durable ceiling of versions it may have signed (see `EngineConfig.reserveVersions`). */
  readonly reservedVersion: bigint;
  /** Highest version the peer is known to hold or have proposed. */
  readonly peerVersion: bigint;
  /** Intents not yet in a proposal, in order (device pays or hub credits). */
  readonly queue: readonly (PendingPay | PendingCredit)[];
  /** Own proposals in flight, oldest first. */
  readonly proposals: readonly OwnProposal[];
  /** Device: routed payments acked, waiting for their receipt. Early receipts are kept in `early`. */
  readonly routed: readonly RoutedWait[];
  readonly early: readonly { readonly paymentId: Bytes32; readonly delivered: boolean }[];
  /** Whether the peer is connected (proposals are only sent then). */
  readonly connected: boolean;
  /**
   * Device: false after a restore until the hub's sync reply is adopted. Nothing is signed before, so a state
   * signed before a crash and not yet written is never signed differently.
   */
  readonly synced: boolean;
  /** Callers of close() waiting for the final state. */
  readonly closeRefs: readonly number[];
  /** Device: new proposals are held until this time after a crossing. */
  readonly yieldUntil: number;
  /** Evidence records stored so far (bounded by `config.maxEvidence`). */
  readonly evidenceCount: number;
  /** Next id for own proposals on the wire. */
  readonly nextId: number;
  /** The pending locks of `latest.state`, in committed order (both directions). */
  readonly locks: readonly Lock[];
  /** Claims this party made as a payee, waiting for the payer's claim update (sent again after a reconnect). */
  readonly claims: readonly OwnClaim[];
  /** Own locks whose return the payee refused with `LOCK_CLAIMED`: not proposed again (settled by a claim or on-chain). */
  readonly contested: readonly Bytes32[];
}

/** A proposal as the peer sent it. */
export interface PeerUpdate {
  readonly id: number;
  readonly state: State;
  readonly sig: Uint8Array;
  readonly route?: RouteInstruction | undefined;
  readonly escrowFor?: Bytes32 | undefined;
  readonly paymentId?: Bytes32 | undefined;
  /** The state adds this lock, paid by the proposer. */
  readonly lock?: WireLock | undefined;
  /** The state removes the proposer's lock with this hash (claimed with the preimage, or expired). */
  readonly unlock?: WireUnlock | undefined;
}

/** Events a channel reduces. */
export type EngineEvent =
  /** Device intent: pay the hub (or, with `route`, another device through it). */
  | { readonly type: 'pay'; readonly pays: readonly PayIntent[] }
  /** Hub intent: pay the device (routed delivery, refund, market round). */
  | {
      readonly type: 'credit';
      readonly ref: number;
      readonly amount: bigint;
      readonly paymentId?: Bytes32 | undefined;
      readonly round?: bigint | undefined;
      readonly lock?: LockTerms | undefined;
    }
  /** Payee intent: claim a lock the peer pays by showing its preimage. Resolves when the claim state is durable. */
  | { readonly type: 'claim'; readonly ref: number; readonly hash: Bytes32; readonly preimage: Bytes32 }
  /** The peer (a lock's payee) showed the preimage of one of our locks: claim it. */
  | { readonly type: 'peer-claim'; readonly id: number; readonly hash: Bytes32; readonly preimage: Bytes32 }
  /** Device intent: close cooperatively (a final state once nothing is in flight). */
  | { readonly type: 'close'; readonly ref: number }
  /** Proposals from the peer, in arrival order (a hub with a backlog checks all, verifies the newest). */
  | { readonly type: 'peer-updates'; readonly updates: readonly PeerUpdate[] }
  /** The device proposes the final state (hub side). `owes`: something outside the channel still owes it a credit. */
  | {
      readonly type: 'peer-close';
      readonly id: number;
      readonly state: State;
      readonly sig: Uint8Array;
      readonly owes: boolean;
    }
  /** The peer countersigned our proposal at `version` (cumulative: it covers every version below). */
  | { readonly type: 'peer-ack'; readonly id: number; readonly version: bigint; readonly sig: Uint8Array }
  /** The peer refused our proposal `id`. */
  | {
      readonly type: 'peer-reject';
      readonly id: number;
      readonly code: ErrorCode;
      readonly message?: string | undefined;
    }
  /** The peer's latest fully signed state: a sync request (hub side, `id` to answer) or a sync reply (device side). */
  | {
      readonly type: 'peer-sync';
      readonly id: number;
      readonly latest: SignedState | null;
      readonly locks?: readonly Lock[] | undefined;
    }
  /** A routed payment's outcome (device side). */
  | { readonly type: 'receipt'; readonly paymentId: Bytes32; readonly delivered: boolean }
  | { readonly type: 'connected' }
  | { readonly type: 'disconnected' }
  /** On-chain facts. */
  | { readonly type: 'funding'; readonly funding: Funding }
  | { readonly type: 'chain-status'; readonly status: EngineStatus }
  /** A force close registered `version` on-chain; the engine answers with the newer state if it holds one. */
  | { readonly type: 'force-close-registered'; readonly version: bigint }
  | { readonly type: 'tick' };

/** A write that must be made durable atomically with the channel (hub side). */
export type EngineWrite =
  | { readonly kind: 'credited'; readonly paymentId: Bytes32; readonly version: bigint }
  | {
      readonly kind: 'route';
      readonly route: RouteInstruction;
      readonly from: Address;
      readonly lock?: Lock | undefined;
    }
  /** A valid preimage this party (a lock's payer) was shown: durable before it claims, so a restart still claims upstream. */
  | { readonly kind: 'preimage'; readonly hash: Bytes32; readonly preimage: Bytes32 }
  | { readonly kind: 'escrow'; readonly orderId: Bytes32; readonly amount: bigint }
  | {
      readonly kind: 'evidence';
      readonly version: bigint;
      readonly held: SignedState;
      readonly offered: { readonly state: State; readonly sig: SignatureHex };
    };

/** What the shell must do after a step, in order. */
export type EngineEffect =
  /** Make the returned channel (and `writes`) durable; with `gate`, before anything else of this step. */
  | { readonly type: 'persist'; readonly gate: boolean; readonly writes: readonly EngineWrite[] }
  | { readonly type: 'send'; readonly msg: Message }
  /** A caller's intent is done: `state` is the fully signed state that holds it. */
  | {
      readonly type: 'resolve';
      readonly ref: number;
      readonly state: SignedState;
      readonly amount: bigint;
      readonly paymentId?: Bytes32 | undefined;
      readonly locked?: Bytes32 | undefined;
    }
  | { readonly type: 'reject'; readonly ref: number; readonly error: TrickleError }
  /** The event was refused; the channel is unchanged. */
  | { readonly type: 'refused'; readonly error: TrickleError }
  /** Money arrived (device: a credit countersigned and durable). */
  | {
      readonly type: 'incoming';
      readonly amount: bigint;
      readonly paymentId?: Bytes32 | undefined;
      readonly round?: bigint | undefined;
      readonly state: SignedState;
    }
  /** Hub: a routed payment was made durable with the payer's state; forward it (as a lock when `lock` is set). */
  | {
      readonly type: 'routed';
      readonly route: RouteInstruction;
      readonly from: Address;
      readonly lock?: Lock | undefined;
    }
  /** Payee: a lock toward this party was countersigned and is durable. */
  | {
      readonly type: 'lock-incoming';
      readonly lock: Lock;
      readonly paymentId?: Bytes32 | undefined;
      readonly state: SignedState;
    }
  /** A lock left the latest state: claimed (with its preimage) or refunded to its payer. */
  | {
      readonly type: 'lock-settled';
      readonly lock: Lock;
      readonly outcome: 'claimed' | 'refunded';
      readonly preimage?: Bytes32 | undefined;
      readonly state: SignedState;
    }
  /** Payer: a payee showed a valid preimage (durable with this step): a hub claims the upstream lock with it. */
  | { readonly type: 'preimage'; readonly hash: Bytes32; readonly preimage: Bytes32 }
  /** Hub: a market order's escrow was paid and made durable. */
  | { readonly type: 'escrow'; readonly orderId: Bytes32; readonly amount: bigint }
  /** Submit the held state on-chain as a challenge to a stale force close. */
  | { readonly type: 'submit'; readonly action: 'challenge'; readonly state: SignedState }
  /** Call back with a `tick` at `at` (ms). */
  | { readonly type: 'timer'; readonly at: number };

/** The result of a step. */
export interface StepResult {
  readonly channel: EngineChannel;
  readonly effects: readonly EngineEffect[];
}

/** What a party restores from its store to build an engine channel. */
export interface EngineRestore {
  readonly role: Role;
  readonly ctx: ChannelContext;
  readonly status?: EngineStatus | undefined;
  readonly latest: SignedState;
  readonly signedVersion: bigint;
  /** The pending locks of `latest.state` (must match its commitment). */
  readonly locks?: readonly Lock[] | undefined;
  /** Hub: a credit proposal it had signed and stored, not yet answered (with its lock list and lock transition). */
  readonly outgoing?:
    | {
        readonly state: State;
        readonly sig: SignatureHex;
        readonly paymentId?: Bytes32 | undefined;
        readonly ref: number;
        readonly locks?: readonly Lock[] | undefined;
        readonly lock?: WireLock | undefined;
        readonly unlock?: WireUnlock | undefined;
      }
    | undefined;
  readonly config?: Partial<EngineConfig> | undefined;
  /** Device: whether it must resync before signing (true after a restart). Default true for devices. */
  readonly needsSync?: boolean | undefined;
  readonly evidenceCount?: number | undefined;
}

/**
 * Build an engine channel from what a party holds (a new channel, or a record read back after a restart).
 * @throws TrickleError('INVALID_ARGUMENT') for funding outside the on-chain widths
 */
export function createEngineChannel(r: EngineRestore): EngineChannel {
  checkFunding(r.ctx.funding);
  const config = resolveConfig(r.config);
  if (!Number.isInteger(config.maxLocks) || config.maxLocks < 0 || config.maxLocks > MAX_LOCKS_ON_CHAIN) {
    throw new TrickleError('INVALID_ARGUMENT', `maxLocks must be an integer from 0 to ${MAX_LOCKS_ON_CHAIN}`);
  }
  const latest = r.latest;
  const locks = r.locks && r.locks.length > 0 ? r.locks : NONE;
  checkLocksMatch(latest.state, locks);
  const proposals: OwnProposal[] = [];
  let queue: PendingCredit[] = [];
  if (r.outgoing && r.outgoing.state.version > latest.state.version) {
    const o = r.outgoing;
    const unlock = o.unlock;
    const amount = o.lock ? o.lock.amount : unlock ? 0n : o.state.paidByHub - latest.state.paidByHub;
    const credit: PendingCredit = {
      ref: o.ref,
      amount,
      paymentId: o.paymentId,
      round: o.state.round > latest.state.round ? o.state.round : undefined,
      lock: o.lock ? { hash: o.lock.hash, expiry: o.lock.expiry } : undefined,
      unlock: unlock ? { hash: unlock.hash, preimage: unlock.preimage } : undefined,
      attempts: 0,
    };
    const op: LockOp | undefined = o.lock
      ? { kind: 'add', lock: { ...o.lock, payer: 'hub' } }
      : unlock
        ? unlock.preimage
          ? { kind: 'claim', hash: unlock.hash }
          : { kind: 'expire', hash: unlock.hash }
        : undefined;
    proposals.push({
      id: 1,
      state: o.state,
      sig: o.sig,
      pays: [],
      credit,
      locks: o.locks ?? locks,
      op,
      preimage: unlock?.preimage,
    });
    queue = [];
  }
  const signedVersion = r.signedVersion > latest.state.version ? r.signedVersion : latest.state.version;
  return {
    role: r.role,
    ctx: r.ctx,
    config,
    status: r.status ?? 'open',
    latest,
    signedVersion,
    reservedVersion: signedVersion,
    peerVersion: latest.state.version,
    queue: queue.length > 0 ? queue : NONE,
    proposals: proposals.length > 0 ? proposals : NONE,
    routed: NONE,
    early: NONE,
    connected: false,
    synced: r.role === 'hub' ? true : !(r.needsSync ?? true),
    closeRefs: NONE,
    yieldUntil: 0,
    evidenceCount: r.evidenceCount ?? 0,
    nextId: 2,
    locks,
    claims: NONE,
    contested: NONE,
  };
}

/** @throws TrickleError('INVALID_ARGUMENT') when a lock list does not match a state's lock commitment */
function checkLocksMatch(state: State, locks: readonly Lock[]): void {
  if (!commitsTo(state, locks))
    throw new TrickleError('INVALID_ARGUMENT', 'the lock list does not match the state’s lock commitment');
}

/** Whether `state` commits to exactly `locks` (root and both totals). */
export function commitsTo(state: State, locks: readonly Lock[]): boolean {
  if (locks.length === 0) return isZeroRoot(state);
  const c = lockCommitment(locks);
  return (
    c.locksRoot === state.locksRoot && c.lockedByDevice === state.lockedByDevice && c.lockedByHub === state.lockedByHub
  );
}

const isZeroRoot = (s: State): boolean => s.lockedByDevice === 0n && s.lockedByHub === 0n && /^0x0+$/.test(s.locksRoot);

/** One empty list shared by every idle channel (the engine never mutates a list; it builds new ones). */
const NONE: readonly never[] = Object.freeze([]);

/** One resolved config per partial config object: a hub's thousands of channels share one. */
const configs = new WeakMap<object, EngineConfig>();
function resolveConfig(partial: Partial<EngineConfig> | undefined): EngineConfig {
  if (!partial) return DEFAULT_ENGINE_CONFIG;
  let c = configs.get(partial);
  if (!c) configs.set(partial, (c = { ...DEFAULT_ENGINE_CONFIG, ...partial }));
  return c;
}

/** The error a shell reports for every caller and peer message of a step whose persist failed. */
export function storeFailure(cause?: unknown): TrickleError {
  return new TrickleError('STORE_FAILURE', 'the store failed; this channel is frozen until writes succeed again', {
    cause,
  });
}

/** What the device could still pay: settled balance less everything queued or in flight. */
export function availableToPay(ch: EngineChannel): bigint {
  const s = ch.latest.state;
  const top = ch.proposals.length > 0 ? ch.proposals[ch.proposals.length - 1]!.state : s;
  let queued = 0n;
  for (const q of ch.queue) queued += q.amount;
  const mine = ch.role === 'device' ? top.paidByDevice + top.lockedByDevice : top.paidByHub + top.lockedByHub;
  const theirs = ch.role === 'device' ? s.paidByHub : s.paidByDevice;
  return ch.ctx.funding[ch.role] + theirs - mine - queued;
}

/** The hub's credit proposal in flight, if any (what the hub stores as its outstanding proposal). */
export function outstandingCredit(ch: EngineChannel): OwnProposal | undefined {
  return ch.role === 'hub' ? ch.proposals[0] : undefined;
}

function checkFunding(f: Funding): void {
  for (const side of ['device', 'hub'] as const) {
    const v = f[side];
    if (typeof v !== 'bigint' || v < 0n || v > CHANNEL_LIMITS.maxDeposit) {
      throw new TrickleError('INVALID_ARGUMENT', `funding.${side} must be a uint96`, { details: { side } });
    }
  }
}

function checkAmount(amount: unknown): void {
  if (typeof amount !== 'bigint' || amount <= 0n || amount > MAX_UINT256) {
    throw new TrickleError('INVALID_ARGUMENT', 'amount must be a positive uint256 bigint');
  }
}

const VERSION_CONFLICT: ReadonlySet<ErrorCode> = new Set(['STALE_VERSION', 'EQUIVOCATION']);

const err = (e: unknown): TrickleError =>
  isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error', { cause: e });

/** Accumulates the effects of one step. */
class Out {
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

function refuse(ch: EngineChannel, e: unknown, reply?: { id: number }): StepResult {
  const error = err(e);
  const effects: EngineEffect[] = [{ type: 'refused', error }];
  if (reply) effects.push({ type: 'send', msg: rejectFrame(ch, reply.id, error) });
  return { channel: ch, effects };
}

function rejectFrame(ch: EngineChannel, id: number, e: TrickleError): Message {
  return { t: 'reject', id, channelId: ch.ctx.channelId, code: e.code, message: e.shortMessage, latest: ch.latest };
}

/**
 * The channel reducer.
 * @param channel - the channel as the shell holds it (durable)
 * @param event - what happened
 * @param env - clock and keys
 * @returns the next channel and the effects to perform, persist first
 * @example
 * ```ts
 * const { channel: next, effects } = step(channel, { type: 'pay', ref: 1, amount: 1_000n }, { crypto, now: Date.now() });
 * ```
 */
export function step(channel: EngineChannel, event: EngineEvent, env: EngineEnv): StepResult {
  try {
    switch (event.type) {
      case 'pay':
        return onPay(channel, event, env);
      case 'credit':
        return onCredit(channel, event, env);
      case 'close':
        return onClose(channel, event, env);
      case 'peer-updates':
        return onPeerUpdates(channel, event.updates, env);
      case 'peer-close':
        return onPeerClose(channel, event, env);
      case 'peer-ack':
        return onPeerAck(channel, event, env);
      case 'peer-reject':
        return onPeerReject(channel, event, env);
      case 'peer-sync':
        return onPeerSync(channel, event, env);
      case 'receipt':
        return onReceipt(channel, event);
      case 'claim':
        return onClaim(channel, event, env);
      case 'peer-claim':
        return onPeerClaim(channel, event, env);
      case 'connected': {
        const ch = { ...channel, connected: true };
        const out = new Out();
        // The hub sends its outstanding credit again; a device sends its own again once the hub answered its sync.
        if (ch.role === 'hub') {
          resendProposals(ch, out);
          resendClaims(ch, out);
        }
        expiryTimer(ch, env, out);
        return finishWithProposals(ch, out, env);
      }
      case 'disconnected':
        // A device resyncs after every reconnect before it proposes again.
        return {
          channel:
            channel.connected || channel.synced !== (channel.role === 'hub')
              ? { ...channel, connected: false, synced: channel.role === 'hub' }
              : channel,
          effects: [],
        };
      case 'funding': {
        checkFunding(event.funding);
        const f = channel.ctx.funding;
        if (event.funding.device < f.device || event.funding.hub < f.hub) {
          // Funding falls only through a withdrawal after close: record it, it stops nothing.
          if (channel.status === 'open')
            throw new TrickleError('INVALID_ARGUMENT', 'funding only grows while a channel is open');
        }
        if (event.funding.device === f.device && event.funding.hub === f.hub) return { channel, effects: [] };
        const ch = { ...channel, ctx: { ...channel.ctx, funding: event.funding } };
        const out = new Out();
        out.persist(true);
        return finishWithProposals(ch, out, env);
      }
      case 'chain-status': {
        if (event.status === channel.status) return { channel, effects: [] };
        const order = { open: 0, closing: 1, closed: 2 } as const;
        if (order[event.status] < order[channel.status])
          throw new TrickleError('INVALID_ARGUMENT', 'a channel never reopens');
        const out = new Out();
        out.persist(true);
        const e = new TrickleError('CHANNEL_NOT_OPEN', 'channel is closing on-chain');
        let ch: EngineChannel = { ...channel, status: event.status };
        for (const q of ch.queue) out.effects.push({ type: 'reject', ref: q.ref, error: e });
        ch = { ...ch, queue: [] };
        return out.finish(ch);
      }
      case 'force-close-registered': {
        const held = channel.latest;
        return {
          channel,
          effects: challengeWith(held, event.version) ? [{ type: 'submit', action: 'challenge', state: held }] : [],
        };
      }
      case 'tick':
        return onTick(channel, env);
    }
  } catch (e) {
    const r = refuse(channel, e);
    // A refused intent answers its caller too: a credit() or close() refused here must not wait forever.
    if (event.type === 'credit' || event.type === 'close' || event.type === 'claim')
      return { channel, effects: [...r.effects, { type: 'reject', ref: event.ref, error: err(e) }] };
    return r;
  }
}

// ---------- device intents ----------

/** The chain-seconds clock a step reads from `env.now` (milliseconds). */
const nowSec = (env: EngineEnv): bigint => BigInt(Math.floor(env.now / 1000));

/** Every lock hash pending in the latest state, queued or in flight on this channel. */
function lockHashesInUse(ch: EngineChannel): Set<Bytes32> {
  const hashes = new Set<Bytes32>(ch.locks.map((l) => l.hash));
  for (const p of ch.proposals) for (const l of p.locks) hashes.add(l.hash);
  for (const q of ch.queue) if (q.lock) hashes.add(q.lock.hash);
  return hashes;
}

/** @throws TrickleError INVALID_ARGUMENT / LOCK_EXPIRED / TOO_MANY_LOCKS for terms a new lock cannot have */
function checkLockTerms(ch: EngineChannel, terms: LockTerms, escrowFor: Bytes32 | undefined, env: EngineEnv): void {
  if (escrowFor) throw new TrickleError('INVALID_ARGUMENT', 'an escrow is not conditional');
  if (typeof terms.hash !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(terms.hash))
    throw new TrickleError('INVALID_ARGUMENT', 'lock hash must be 32 bytes of 0x hex');
  if (typeof terms.expiry !== 'bigint' || terms.expiry > MAX_UINT64)
    throw new TrickleError('INVALID_ARGUMENT', 'lock expiry must be a uint64 bigint (chain seconds)');
  if (terms.expiry <= nowSec(env))
    throw new TrickleError('LOCK_EXPIRED', 'the lock would expire before it is added', {
      details: { expiry: terms.expiry },
    });
  if (lockHashesInUse(ch).has(terms.hash))
    throw new TrickleError('INVALID_ARGUMENT', 'a lock with this hash is already pending on this channel');
  const pending =
    ch.locks.length + ch.queue.filter((q) => q.lock).length + ch.proposals.filter((p) => p.op?.kind === 'add').length;
  if (pending + 1 > ch.config.maxLocks)
    throw new TrickleError('TOO_MANY_LOCKS', `at most ${ch.config.maxLocks} pending locks per channel`, {
      details: { maxLocks: ch.config.maxLocks },
    });
}

// ---------- locks: payee claims, payer answers ----------

/** Payee: show the preimage of a lock the peer pays. The claim is sent now and again after every reconnect. */
function onClaim(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'claim' }>, env: EngineEnv): StepResult {
  if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
  const lock = ch.locks.find((l) => l.hash === ev.hash && l.payer === counterparty(ch.role));
  if (!lock)
    throw new TrickleError('UNKNOWN_LOCK', 'no pending lock toward this party has this hash', {
      details: { hash: ev.hash },
    });
  if (hashPreimage(ev.preimage) !== ev.hash)
    throw new TrickleError('BAD_PREIMAGE', 'the preimage does not hash to the lock’s hash');
  if (nowSec(env) > lock.expiry)
    throw new TrickleError('LOCK_EXPIRED', 'the lock has expired', { details: { expiry: lock.expiry } });
  const out = new Out();
  const already = ch.claims.find((c) => c.hash === ev.hash);
  const claim: OwnClaim = { ref: ev.ref, id: already?.id ?? ch.nextId, hash: ev.hash, preimage: ev.preimage };
  if (already && already.ref >= 0)
    out.effects.push({
      type: 'reject',
      ref: already.ref,
      error: new TrickleError('INVALID_ARGUMENT', 'claimed again'),
    });
  const next: EngineChannel = {
    ...ch,
    claims: [...ch.claims.filter((c) => c !== already), claim],
    nextId: already ? ch.nextId : nextIdAfter(ch.nextId),
  };
  if (ch.connected && (ch.role === 'hub' || ch.synced)) out.effects.push({ type: 'send', msg: claimFrame(ch, claim) });
  return out.finish(next);
}

function claimFrame(ch: EngineChannel, c: OwnClaim): Message {
  return { t: 'claim', id: c.id, channelId: ch.ctx.channelId, unlock: { hash: c.hash, preimage: c.preimage } };
}

function resendClaims(ch: EngineChannel, out: Out): void {
  if (!ch.connected) return;
  for (const c of ch.claims) out.effects.push({ type: 'send', msg: claimFrame(ch, c) });
}

/**
 * Payer: the payee showed a preimage. Checked (`UNKNOWN_LOCK`, `BAD_PREIMAGE`, `LOCK_EXPIRED` — each answered with a
 * `reject` and no change), made durable (a hub claims its upstream lock with it, after a restart too), then the
 * claim state is proposed ahead of anything queued.
 */
function onPeerClaim(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'peer-claim' }>, env: EngineEnv): StepResult {
  try {
    if (ch.status !== 'open' || ch.latest.state.isFinal)
      throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
    const lock = ch.locks.find((l) => l.hash === ev.hash && l.payer === ch.role);
    if (!lock)
      throw new TrickleError('UNKNOWN_LOCK', 'no pending lock of ours has this hash', { details: { hash: ev.hash } });
    if (hashPreimage(ev.preimage) !== ev.hash)
      throw new TrickleError('BAD_PREIMAGE', 'the preimage does not hash to the lock’s hash');
    const inFlight = [
      ...ch.proposals.map((p) => (p.op && p.op.kind !== 'add' && p.op.hash === ev.hash ? p.op.kind : undefined)),
      ...ch.queue.map((q) => (q.unlock?.hash === ev.hash ? (q.unlock.preimage ? 'claim' : 'expire') : undefined)),
    ].find((k) => k);
    if (inFlight === 'claim') return { channel: ch, effects: [] }; // a copy of a claim already being answered
    if (inFlight === 'expire' || nowSec(env) > lock.expiry)
      throw new TrickleError('LOCK_EXPIRED', 'the lock has expired', { details: { expiry: lock.expiry } });
    const out = new Out();
    out.persist(true, { kind: 'preimage', hash: ev.hash, preimage: ev.preimage });
    out.effects.push({ type: 'preimage', hash: ev.hash, preimage: ev.preimage });
    const unlock: Unlock = { hash: ev.hash, preimage: ev.preimage };
    const entry: PendingPay | PendingCredit =
      ch.role === 'device' ? { ref: -1, amount: 0n, unlock, target: 0n } : { ref: -1, amount: 0n, unlock, attempts: 0 };
    return finishWithProposals({ ...ch, queue: [entry, ...ch.queue] }, out, env);
  } catch (e) {
    return refuse(ch, e, { id: ev.id });
  }
}

/** Queue the expiry of this party's own locks that are past their expiry and not already being removed. */
function queueExpiries(ch: EngineChannel, env: EngineEnv): EngineChannel {
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

/** A timer for the first of this party's own locks to expire (its expiry is proposed on that tick). */
function expiryTimer(ch: EngineChannel, env: EngineEnv, out: Out): void {
  let first: bigint | undefined;
  for (const l of ch.locks) if (l.payer === ch.role && (first === undefined || l.expiry < first)) first = l.expiry;
  if (first === undefined) return;
  const at = Number(first + 1n) * 1000;
  out.effects.push({ type: 'timer', at: at > env.now ? at : env.now + 1000 });
}

/** The lock-settled effects of a lock transition that became the latest state. */
function settledLock(
  op: LockOp | undefined,
  lock: Lock | undefined,
  preimage: Bytes32 | undefined,
  latest: SignedState,
  out: Out,
): void {
  if (!op || op.kind === 'add' || !lock) return;
  out.effects.push({
    type: 'lock-settled',
    lock,
    outcome: op.kind === 'claim' ? 'claimed' : 'refunded',
    preimage: op.kind === 'claim' ? preimage : undefined,
    state: latest,
  });
}

function onPay(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'pay' }>, env: EngineEnv): StepResult {
  if (ch.role !== 'device')
    throw new TrickleError('INVALID_ARGUMENT', 'only the device pays through pay(); the hub credits');
  const out = new Out();
  const queue = [...ch.queue];
  let available = availableToPay(ch);
  for (const p of ev.pays) {
    try {
      checkAmount(p.amount);
      if (
        ch.status !== 'open' ||
        ch.latest.state.isFinal ||
        ch.closeRefs.length > 0 ||
        ch.proposals.some((x) => x.state.isFinal)
      ) {
        throw new TrickleError('CHANNEL_FINAL', 'channel is closing');
      }
      if (p.route && p.escrowFor)
        throw new TrickleError('INVALID_ARGUMENT', 'a payment is routed or an escrow, not both');
      if (p.route && p.route.amount !== p.amount)
        throw new TrickleError('INVALID_ARGUMENT', 'routed amount differs from the payment');
      // Against this batch's queue too: two locks on one hash (or past maxLocks) in one call are refused alike.
      if (p.lock) checkLockTerms(queue.length === ch.queue.length ? ch : { ...ch, queue }, p.lock, p.escrowFor, env);
      if (p.amount > available)
        throw new TrickleError('INSUFFICIENT_FUNDS', 'not enough balance in the channel', { details: { available } });
      available -= p.amount;
      queue.push({ ref: p.ref, amount: p.amount, route: p.route, escrowFor: p.escrowFor, lock: p.lock, target: 0n });
    } catch (e) {
      out.effects.push({ type: 'reject', ref: p.ref, error: err(e) });
    }
  }
  return finishWithProposals({ ...ch, queue }, out, env);
}

function onClose(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'close' }>, env: EngineEnv): StepResult {
  if (ch.role !== 'device') throw new TrickleError('INVALID_ARGUMENT', 'the device proposes the final state');
  if (ch.latest.state.isFinal) {
    return { channel: ch, effects: [{ type: 'resolve', ref: ev.ref, state: ch.latest, amount: 0n }] };
  }
  if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
  const out = new Out();
  // Payments not yet proposed never will be: the channel is closing.
  const e = new TrickleError('CHANNEL_FINAL', 'channel is closing');
  for (const q of ch.queue) out.effects.push({ type: 'reject', ref: q.ref, error: e });
  const pendingClose = ch.proposals.find((p) => p.closeRefs);
  if (pendingClose) {
    // A second close() joins the first: one final state, one answer for both.
    const proposals = ch.proposals.map((p) =>
      p === pendingClose ? { ...p, closeRefs: [...p.closeRefs!, ev.ref] } : p,
    );
    return out.finish({ ...ch, queue: [], proposals });
  }
  return finishWithProposals({ ...ch, queue: [], closeRefs: [...ch.closeRefs, ev.ref] }, out, env);
}

// ---------- hub intents ----------

function onCredit(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'credit' }>, env: EngineEnv): StepResult {
  if (ch.role !== 'hub') throw new TrickleError('INVALID_ARGUMENT', 'only the hub credits');
  // A market round may net to nothing for a participant: a zero credit still moves the channel to that round.
  if (!(ev.amount === 0n && ev.round !== undefined)) checkAmount(ev.amount);
  if (ch.status !== 'open' || ch.latest.state.isFinal)
    throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
  if (ev.round !== undefined && (ev.round < 0n || ev.round > MAX_UINT64))
    throw new TrickleError('INVALID_ARGUMENT', 'round must be a uint64');
  // The same credit may already be on its way (restored after a restart): the caller joins it.
  const same = (c: PendingCredit) =>
    c.amount === ev.amount &&
    (ev.paymentId !== undefined
      ? c.paymentId === ev.paymentId
      : ev.round !== undefined && c.round === ev.round && c.paymentId === undefined);
  const inFlight = ch.proposals.find((p) => p.credit && p.credit.ref < 0 && same(p.credit));
  if (inFlight) {
    const proposals = ch.proposals.map((p) => (p === inFlight ? { ...p, credit: { ...p.credit!, ref: ev.ref } } : p));
    return { channel: { ...ch, proposals }, effects: [] };
  }
  const queued = (ch.queue as readonly PendingCredit[]).find((c) => c.ref < 0 && same(c));
  if (queued)
    return {
      channel: { ...ch, queue: ch.queue.map((c) => (c === queued ? { ...queued, ref: ev.ref } : c)) },
      effects: [],
    };
  if (ev.lock) {
    checkLockTerms(ch, ev.lock, undefined, env);
    if (ev.amount > availableToPay(ch))
      throw new TrickleError('INSUFFICIENT_FUNDS', 'the hub cannot afford this lock in the channel');
  }
  const credit: PendingCredit = {
    ref: ev.ref,
    amount: ev.amount,
    paymentId: ev.paymentId,
    round: ev.round,
    lock: ev.lock,
    attempts: 0,
  };
  return finishWithProposals({ ...ch, queue: [...ch.queue, credit] }, new Out(), env);
}

const MAX_UINT64 = (1n << 64n) - 1n;

// ---------- proposing ----------

/** Propose what is queued when the window allows, then finish the step. */
function finishWithProposals(ch: EngineChannel, out: Out, env: EngineEnv): StepResult {
  ch = queueExpiries(ch, env);
  ch = ch.role === 'device' ? proposeDevice(ch, out, env) : proposeHub(ch, out, env);
  return out.finish(ch);
}

function nextVersion(ch: EngineChannel, base: State): bigint {
  return (base.version > ch.signedVersion ? base.version : ch.signedVersion) + 1n;
}

function proposeDevice(ch: EngineChannel, out: Out, env: EngineEnv): EngineChannel {
  while (true) {
    if (!ch.synced || !ch.connected || ch.status !== 'open' || ch.proposals.length >= ch.config.maxInFlight) return ch;
    const top = ch.proposals.at(-1);
    // A routed payment, an escrow, a lock transition or a final state is a barrier: nothing is pipelined on top of
    // it. Were a later cumulative state accepted while it was refused, the hub would hold the money without the
    // instruction (and a lock list built on a refused one would not match the hub's).
    if (top && (top.route || top.escrowFor || top.op || top.state.isFinal)) return ch;
    if (ch.queue.length === 0) {
      if (ch.closeRefs.length > 0 && ch.proposals.length === 0) return proposeFinal(ch, out, env);
      return ch;
    }
    if (ch.yieldUntil > env.now) {
      out.effects.push({ type: 'timer', at: ch.yieldUntil });
      return ch;
    }
    const base = top?.state ?? ch.latest.state;
    const baseLocks = top?.locks ?? ch.locks;
    const head = ch.queue[0] as PendingPay;
    if (head.lock || head.unlock) {
      ch = proposeDeviceLockOp(ch, head, base, baseLocks, out, env);
      continue;
    }
    let n = 0;
    let total = 0n;
    let route: RouteInstruction | undefined;
    let escrowFor: Bytes32 | undefined;
    for (const q of ch.queue as readonly PendingPay[]) {
      if (q.lock || q.unlock) break;
      const alone = q.route !== undefined || q.escrowFor !== undefined;
      if (alone && n > 0) break;
      n++;
      total += q.amount;
      if (alone) {
        route = q.route;
        escrowFor = q.escrowFor;
        break;
      }
    }
    let target = base.paidByDevice;
    const pays = (ch.queue.slice(0, n) as readonly PendingPay[]).map((q) => ({ ...q, target: (target += q.amount) }));
    const state: State = { ...base, version: nextVersion(ch, base), paidByDevice: base.paidByDevice + total };
    const rest = ch.queue.slice(n);
    try {
      checkTransition(base, state, ch.ctx.funding, 'device');
    } catch (e) {
      for (const p of pays) out.effects.push({ type: 'reject', ref: p.ref, error: err(e) });
      ch = { ...ch, queue: rest };
      continue;
    }
    const digest = env.crypto.digest(state);
    const sig = signatureToHex(env.crypto.sign(digest));
    const id = ch.nextId;
    const proposal: OwnProposal = { id, state, sig, pays, route, escrowFor, locks: baseLocks };
    ch = {
      ...ch,
      queue: rest,
      proposals: [...ch.proposals, proposal],
      signedVersion: state.version,
      reservedVersion: reserveUpTo(ch, state.version, out),
      signedDigest: sigHexOf(digest),
      nextId: nextIdAfter(id),
    };
    // Written behind: the hub holds every state the device signs, and the device signs nothing after a restart
    // before it has resynced, so losing this write can neither cost it money nor make it sign a version twice.
    out.persist(false);
    out.effects.push({ type: 'send', msg: updateFrame(proposal) });
  }
}

/** Lock op of a queued entry, as the mover `role` proposes it. */
function opOf(
  role: Role,
  q: { readonly amount: bigint; readonly lock?: LockTerms | undefined; readonly unlock?: Unlock | undefined },
): LockOp {
  if (q.lock) return { kind: 'add', lock: { amount: q.amount, hash: q.lock.hash, expiry: q.lock.expiry, payer: role } };
  return q.unlock!.preimage ? { kind: 'claim', hash: q.unlock!.hash } : { kind: 'expire', hash: q.unlock!.hash };
}

/** Wire fields of a lock op. */
function wireOp(op: LockOp | undefined, preimage: Bytes32 | undefined): { lock?: WireLock; unlock?: WireUnlock } {
  if (!op) return {};
  if (op.kind === 'add') return { lock: { amount: op.lock.amount, hash: op.lock.hash, expiry: op.lock.expiry } };
  return { unlock: op.kind === 'claim' ? { hash: op.hash, preimage } : { hash: op.hash } };
}

/** Device: propose the lock transition at the head of the queue (alone: a barrier). */
function proposeDeviceLockOp(
  ch: EngineChannel,
  q: PendingPay,
  base: State,
  baseLocks: readonly Lock[],
  out: Out,
  env: EngineEnv,
): EngineChannel {
  const rest = ch.queue.slice(1);
  const op = opOf('device', q);
  let state: State;
  let locks: readonly Lock[];
  try {
    const r = applyLockOp(base, baseLocks, op, 'device', ch.config.maxLocks);
    state = { ...r.state, version: nextVersion(ch, base) };
    locks = checkLockTransition(base, baseLocks, state, op, ch.ctx.funding, 'device', {
      maxLocks: ch.config.maxLocks,
    }).locks;
  } catch (e) {
    if (q.ref >= 0) out.effects.push({ type: 'reject', ref: q.ref, error: err(e) });
    return { ...ch, queue: rest };
  }
  const pays: PendingPay[] = [{ ...q, target: state.paidByDevice }];
  const digest = env.crypto.digest(state);
  const sig = signatureToHex(env.crypto.sign(digest));
  const id = ch.nextId;
  const proposal: OwnProposal = { id, state, sig, pays, route: q.route, locks, op, preimage: q.unlock?.preimage };
  // Durable before it leaves: after a restart the device must know the lock list of any state it signed.
  out.persist(true);
  out.effects.push({ type: 'send', msg: updateFrame(proposal) });
  return {
    ...ch,
    queue: rest,
    proposals: [...ch.proposals, proposal],
    signedVersion: state.version,
    reservedVersion: reserveUpTo(ch, state.version, out),
    signedDigest: sigHexOf(digest),
    nextId: nextIdAfter(id),
  };
}

function proposeFinal(ch: EngineChannel, out: Out, env: EngineEnv): EngineChannel {
  const base = ch.latest.state;
  const state: State = { ...base, version: nextVersion(ch, base), isFinal: true };
  checkTransition(base, state, ch.ctx.funding, 'device');
  const digest = env.crypto.digest(state);
  const sig = signatureToHex(env.crypto.sign(digest));
  const id = ch.nextId;
  const proposal: OwnProposal = { id, state, sig, pays: [], closeRefs: ch.closeRefs, locks: ch.locks };
  out.persist(true); // the channel is closing: durable before the final state leaves
  out.effects.push({ type: 'send', msg: { t: 'close', id, state, sig: signatureFromHex(sig) } });
  return {
    ...ch,
    proposals: [proposal],
    closeRefs: [],
    signedVersion: state.version,
    reservedVersion: reserveUpTo(ch, state.version, out),
    signedDigest: sigHexOf(digest),
    nextId: nextIdAfter(id),
  };
}

function proposeHub(ch: EngineChannel, out: Out, env: EngineEnv): EngineChannel {
  while (
    ch.proposals.length === 0 &&
    ch.queue.length > 0 &&
    ch.connected &&
    ch.status === 'open' &&
    !ch.latest.state.isFinal
  ) {
    const credit = ch.queue[0] as PendingCredit;
    const rest = ch.queue.slice(1);
    const cur = ch.latest.state;
    let state: State;
    let locks = ch.locks;
    const op = credit.lock || credit.unlock ? opOf('hub', credit) : undefined;
    try {
      if (op) {
        state = { ...applyLockOp(cur, ch.locks, op, 'hub', ch.config.maxLocks).state, version: nextVersion(ch, cur) };
        locks = checkLockTransition(cur, ch.locks, state, op, ch.ctx.funding, 'hub', {
          maxLocks: ch.config.maxLocks,
        }).locks;
      } else {
        state = {
          ...cur,
          version: nextVersion(ch, cur),
          paidByHub: cur.paidByHub + credit.amount,
          round: credit.round !== undefined && credit.round > cur.round ? credit.round : cur.round,
        };
        checkTransition(cur, state, ch.ctx.funding, 'hub');
      }
    } catch (e) {
      out.effects.push({ type: 'reject', ref: credit.ref, error: err(e) });
      ch = { ...ch, queue: rest };
      continue;
    }
    const digest = env.crypto.digest(state);
    const sig = signatureToHex(env.crypto.sign(digest));
    const id = ch.nextId;
    const proposal: OwnProposal = { id, state, sig, pays: [], credit, locks, op, preimage: credit.unlock?.preimage };
    // Durable before it leaves: the hub never signs two different states at one version, across restarts too.
    out.persist(true);
    out.effects.push({ type: 'send', msg: updateFrame(proposal) });
    return {
      ...ch,
      queue: rest,
      proposals: [proposal],
      signedVersion: state.version,
      signedDigest: sigHexOf(digest),
      nextId: nextIdAfter(id),
    };
  }
  return ch;
}

function updateFrame(p: OwnProposal): Message {
  return {
    t: 'update',
    id: p.id,
    state: p.state,
    sig: signatureFromHex(p.sig),
    route: p.route,
    paymentId: p.escrowFor ?? p.credit?.paymentId,
    ...wireOp(p.op, p.preimage),
  };
}

function resendProposals(ch: EngineChannel, out: Out): void {
  if (!ch.connected) return;
  for (const p of ch.proposals) {
    out.effects.push({
      type: 'send',
      msg:
        p.state.isFinal && ch.role === 'device'
          ? { t: 'close', id: p.id, state: p.state, sig: signatureFromHex(p.sig) }
          : updateFrame(p),
    });
  }
}

/**
 * Device: the reserved ceiling once `version` is signed; a new ceiling is made durable (a gated persist) before the
 * state leaves when `version` is above the current one.
 */
function reserveUpTo(ch: EngineChannel, version: bigint, out: Out): bigint {
  if (ch.role !== 'device' || version <= ch.reservedVersion) return ch.reservedVersion;
  out.persist(true);
  return version + BigInt(Math.max(0, ch.config.reserveVersions - 1));
}

const nextIdAfter = (id: number): number => (id % 0x7fffffff) + 1;
const sigHexOf = (digest: Uint8Array): Hex => toHex(digest) as Hex;

// ---------- peer proposals ----------

/**
 * Which of a backlog of peer updates would be verified: the newest one whose arithmetic holds on top of the ones
 * before it. Pure; a hub shell uses it to verify and countersign that one on a worker thread before the step.
 * @returns the index in `updates`, or -1
 */
export function newestCandidate(ch: EngineChannel, updates: readonly PeerUpdate[]): number {
  let prev = ch.latest.state;
  let locks = ch.locks;
  let found = -1;
  for (let i = 0; i < updates.length; i++) {
    try {
      const st = peerTransition(ch, prev, locks, updates[i]!, counterparty(ch.role), undefined);
      if (st.kind === 'new') {
        prev = updates[i]!.state;
        locks = st.locks;
        found = i;
      }
    } catch {
      /* refused in the step */
    }
  }
  return found;
}

function onPeerUpdates(ch: EngineChannel, updates: readonly PeerUpdate[], env: EngineEnv): StepResult {
  if (ch.role === 'device') {
    let r: StepResult = { channel: ch, effects: [] };
    const effects: EngineEffect[] = [];
    for (const u of updates) {
      r = onHubCredit(r.channel, u, env);
      effects.push(...r.effects);
    }
    return mergePersists(r.channel, effects);
  }
  return onDeviceUpdates(ch, updates, env);
}

/** Several steps' effects as one: one persist (gated when any was), at the front. */
function mergePersists(channel: EngineChannel, effects: readonly EngineEffect[]): StepResult {
  const persists = effects.filter((e): e is Extract<EngineEffect, { type: 'persist' }> => e.type === 'persist');
  if (persists.length <= 1 && (persists.length === 0 || effects[0] === persists[0])) return { channel, effects };
  const merged: EngineEffect = {
    type: 'persist',
    gate: persists.some((p) => p.gate),
    writes: persists.flatMap((p) => p.writes),
  };
  return { channel, effects: [merged, ...effects.filter((e) => e.type !== 'persist')] };
}

function onDeviceUpdates(ch: EngineChannel, updates: readonly PeerUpdate[], env: EngineEnv): StepResult {
  const out = new Out();
  const params = ch.ctx.params;
  const candidates: PeerUpdate[] = [];
  const steps: PeerStep[] = [];
  let prev = ch.latest.state;
  let prevLocks = ch.locks;
  let routedPending = 0n;
  const now = nowSec(env);
  for (const u of updates) {
    try {
      if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
      if (u.state.isFinal) throw new TrickleError('MALFORMED', 'a final state comes in a close message');
      const st = peerTransition(ch, prev, prevLocks, u, 'device', now);
      checkNotClaimed(ch, st);
      const kind = st.kind;
      if (kind === 'duplicate') {
        // A replay of the current state: answer with the same countersignature, change nothing.
        if (prev === ch.latest.state && ch.latest.hubSig)
          out.effects.push({ type: 'send', msg: ackFrame(ch, u.id, prev.version, ch.latest.hubSig) });
        else if (prev === ch.latest.state) evidenceIfDifferent(ch, u, env, out);
        continue;
      }
      if (u.state.version <= ch.signedVersion) {
        throw new TrickleError('STALE_VERSION', 'the hub already signed a state at this version', {
          details: { signedVersion: ch.signedVersion },
        });
      }
      if (u.route && u.escrowFor)
        throw new TrickleError('MALFORMED', 'an update is a routed payment or an escrow, not both');
      if (u.route) {
        checkAmount(u.route.amount);
        if (u.unlock) throw new TrickleError('MALFORMED', 'an unlock is not routed');
        const paid = st.op?.kind === 'add' ? st.lock!.amount : u.state.paidByDevice - prev.paidByDevice;
        if (u.route.amount > paid)
          throw new TrickleError('INSUFFICIENT_FUNDS', 'routed amount exceeds the payment in this update');
        routedPending += u.route.amount;
      }
      candidates.push(u);
      steps.push(st);
      prev = u.state;
      prevLocks = st.locks;
    } catch (e) {
      const error = err(e);
      if (isTrickleError(e, 'EQUIVOCATION')) evidenceIfDifferent(ch, u, env, out);
      out.effects.push({ type: 'refused', error }, { type: 'send', msg: rejectFrame(ch, u.id, error) });
    }
  }
  // Verify and countersign only the newest: it covers every payment below it (counters are cumulative).
  let accepted: PeerUpdate | undefined;
  let hubSig: Uint8Array | undefined;
  while (candidates.length > 0) {
    const last = candidates[candidates.length - 1]!;
    const digest = env.crypto.digest(last.state);
    try {
      if (env.crypto.recover(digest, last.sig) !== params.device)
        throw new TrickleError('BAD_SIGNATURE', 'update not signed by the device');
      hubSig = env.crypto.sign(digest);
      accepted = last;
      break;
    } catch (e) {
      const error = err(e);
      out.effects.push({ type: 'refused', error }, { type: 'send', msg: rejectFrame(ch, last.id, error) });
      candidates.pop();
      steps.pop();
    }
  }
  if (!accepted || !hubSig) return out.finish(ch);
  const latest: SignedState = {
    state: accepted.state,
    deviceSig: signatureToHex(accepted.sig),
    hubSig: signatureToHex(hubSig),
  };
  let next: EngineChannel = {
    ...ch,
    latest,
    locks: steps[steps.length - 1]!.locks,
    signedVersion: accepted.state.version,
    peerVersion: accepted.state.version,
  };
  for (let i = 0; i < candidates.length; i++) next = afterPeerLockOp(next, steps[i]!, candidates[i]!, latest, out);
  // A device state superseded the hub's outstanding credit: the device will refuse it; propose it again on top.
  next = dropOutstandingCredit(next);
  const writes: EngineWrite[] = [];
  let before = ch.latest.state.paidByDevice;
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i]!;
    if (c.escrowFor) {
      const paid = c.state.paidByDevice - before;
      if (paid > 0n) writes.push({ kind: 'escrow', orderId: c.escrowFor, amount: paid });
    }
    before = c.state.paidByDevice;
    const st = steps[i]!;
    if (c.route)
      writes.push({
        kind: 'route',
        route: c.route,
        from: params.device,
        ...(st.op?.kind === 'add' ? { lock: st.lock } : {}),
      });
  }
  out.persist(true, ...writes);
  for (const w of writes) {
    if (w.kind === 'route') out.effects.push({ type: 'routed', route: w.route, from: w.from, lock: w.lock });
    if (w.kind === 'escrow') out.effects.push({ type: 'escrow', orderId: w.orderId, amount: w.amount });
  }
  // The countersignature goes out as the bytes it was made in (no hex round trip on the hot path).
  out.effects.push({
    type: 'send',
    msg: { t: 'ack', id: accepted.id, channelId: ch.ctx.channelId, version: accepted.state.version, sig: hubSig },
  });
  return finishWithProposals(next, out, env);
}

function dropOutstandingCredit(ch: EngineChannel): EngineChannel {
  const out = ch.proposals[0];
  if (ch.role !== 'hub' || !out?.credit) return ch;
  return { ...ch, proposals: [], queue: [out.credit, ...ch.queue] };
}

function ackFrame(ch: EngineChannel, id: number, version: bigint, sig: SignatureHex): Message {
  return { t: 'ack', id, channelId: ch.ctx.channelId, version, sig: signatureFromHex(sig) };
}

/** Keep a second, different state the peer signed at a version already signed here — only once its signature verifies. */
function evidenceIfDifferent(ch: EngineChannel, u: { state: State; sig: Uint8Array }, env: EngineEnv, out: Out): void {
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

function onHubCredit(ch: EngineChannel, u: PeerUpdate, env: EngineEnv): StepResult {
  const out = new Out();
  const reply = (e: unknown): StepResult => {
    const error = err(e);
    out.effects.push({ type: 'refused', error }, { type: 'send', msg: rejectFrame(ch, u.id, error) });
    return out.finish(ch);
  };
  try {
    // Not resynced yet: no answer at all. A STALE_VERSION reject here would make the hub re-queue a credit that the
    // copy it resends after our sync then lands, so the credit would be paid twice; the hub resends it after the sync.
    if (!ch.synced)
      return {
        channel: ch,
        effects: [{ type: 'refused', error: new TrickleError('STALE_VERSION', 'the device has not resynced yet') }],
      };
    // A copy of the credit we already countersigned (the hub resends it after a reconnect, or our ack was lost):
    // acknowledge it again. Refusing it as a crossing would make the hub propose the same credit a second time.
    if (sameState(u.state, ch.latest.state)) {
      if (ch.latest.deviceSig)
        out.effects.push({ type: 'send', msg: ackFrame(ch, u.id, ch.latest.state.version, ch.latest.deviceSig) });
      return out.finish(ch);
    }
    // Crossing: we signed our own state at this version (or later) and it is in flight. Refuse; the hub proposes
    // again on top of ours. Hold our next proposals briefly so it can.
    if (ch.proposals.length > 0 && u.state.version <= ch.signedVersion) {
      const r = reply(new TrickleError('STALE_VERSION', 'crossed with an update of the device'));
      return { channel: { ...ch, yieldUntil: env.now + ch.config.yieldMs }, effects: r.effects };
    }
    if (u.state.isFinal) throw new TrickleError('MALFORMED', 'the hub never proposes a final state');
    if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
    // A lock transition of ours in flight changes the lock list the hub's state must build on: a crossing.
    if (ch.proposals.some((p) => p.op))
      throw new TrickleError('STALE_VERSION', 'crossed with a lock transition of the device');
    if (u.lock || u.unlock) return acceptHubLockOp(ch, u, env, out);
    checkTransition(ch.latest.state, u.state, ch.ctx.funding, 'hub'); // a duplicate of the latest was answered above
    const digest = env.crypto.digest(u.state);
    if (env.crypto.recover(digest, u.sig) !== ch.ctx.params.hub)
      throw new TrickleError('BAD_SIGNATURE', 'not signed by the hub');
    if (u.state.version <= ch.signedVersion)
      throw new TrickleError('STALE_VERSION', 'the device already signed this version');
    const sig = env.crypto.sign(digest);
    const amount = u.state.paidByHub - ch.latest.state.paidByHub;
    const latest: SignedState = { state: u.state, deviceSig: signatureToHex(sig), hubSig: signatureToHex(u.sig) };
    let next: EngineChannel = {
      ...ch,
      latest,
      signedVersion: u.state.version,
      signedDigest: sigHexOf(digest),
      peerVersion: u.state.version,
      yieldUntil: 0,
    };
    // Durable before the device countersigns or reports money it receives.
    out.persist(true);
    out.effects.push({ type: 'send', msg: ackFrame(ch, u.id, u.state.version, latest.deviceSig!) });
    out.effects.push({
      type: 'incoming',
      amount,
      paymentId: u.paymentId,
      round: u.state.round > ch.latest.state.round ? u.state.round : undefined,
      state: latest,
    });
    if (ch.proposals.length > 0) {
      // Our proposals in flight are all below this version (a crossing is refused above), so the hub, which signed
      // this one, refuses them. The payments its state already holds (their ack is still on its way) are done with
      // it; the others are proposed again on top of it, as after a version conflict.
      const pays = ch.proposals.flatMap((p) => p.pays);
      const done = pays.filter((w) => w.target <= u.state.paidByDevice);
      next = settlePays({ ...next, proposals: [] }, done, latest, env, out);
      const again = pays.filter((w) => !done.includes(w)).map((w) => ({ ...w, target: 0n }));
      next = {
        ...next,
        queue: [...again, ...next.queue],
        closeRefs: [...ch.proposals.flatMap((p) => p.closeRefs ?? []), ...next.closeRefs],
      };
    }
    return finishWithProposals(next, out, env);
  } catch (e) {
    if (isTrickleError(e, 'EQUIVOCATION')) evidenceIfDifferent(ch, u, env, out);
    return reply(e);
  }
}

function onPeerClose(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'peer-close' }>, env: EngineEnv): StepResult {
  const reply = { id: ev.id };
  try {
    if (ch.role !== 'hub') throw new TrickleError('MALFORMED', 'the hub does not propose close');
    if (ch.status !== 'open') throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
    if (!ev.state.isFinal) throw new TrickleError('MALFORMED', 'close needs a final state');
    const kind = checkTransition(ch.latest.state, ev.state, ch.ctx.funding, 'device');
    if (kind === 'duplicate') {
      if (ch.latest.hubSig)
        return {
          channel: ch,
          effects: [{ type: 'send', msg: ackFrame(ch, ev.id, ev.state.version, ch.latest.hubSig) }],
        };
      throw new TrickleError('STALE_VERSION', 'nothing to re-acknowledge');
    }
    // A final state would strand what the hub still owes the device (a refund, a round's credit).
    if (ch.queue.length > 0 || ch.proposals.length > 0 || ev.owes)
      throw new TrickleError('PENDING_CREDITS', 'the hub still owes this channel a credit; close after it lands');
    if (ev.state.version <= ch.signedVersion)
      throw new TrickleError('STALE_VERSION', 'the hub already signed this version');
    const digest = env.crypto.digest(ev.state);
    if (env.crypto.recover(digest, ev.sig) !== ch.ctx.params.device)
      throw new TrickleError('BAD_SIGNATURE', 'close not signed by the device');
    const hubSig = signatureToHex(env.crypto.sign(digest));
    const latest: SignedState = { state: ev.state, deviceSig: signatureToHex(ev.sig), hubSig };
    const out = new Out();
    out.persist(true);
    out.effects.push({ type: 'send', msg: ackFrame(ch, ev.id, ev.state.version, hubSig) });
    return out.finish({
      ...ch,
      latest,
      signedVersion: ev.state.version,
      signedDigest: sigHexOf(digest),
      peerVersion: ev.state.version,
    });
  } catch (e) {
    return refuse(ch, e, reply);
  }
}

/** The result of checking one peer proposal on top of `prev` (holding `prevLocks`). */
interface PeerStep {
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
function peerTransition(
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
  if (u.lock)
    op = { kind: 'add', lock: { amount: u.lock.amount, hash: u.lock.hash, expiry: u.lock.expiry, payer: mover } };
  else if (u.unlock!.preimage !== undefined) {
    if (hashPreimage(u.unlock!.preimage) !== u.unlock!.hash)
      throw new TrickleError('BAD_PREIMAGE', 'the preimage does not hash to the lock’s hash');
    op = { kind: 'claim', hash: u.unlock!.hash };
  } else op = { kind: 'expire', hash: u.unlock!.hash };
  const r = checkLockTransition(prev, prevLocks, u.state, op, ch.ctx.funding, mover, {
    maxLocks: ch.config.maxLocks,
    nowSec: now,
  });
  return { kind: 'new', locks: r.locks, op, lock: r.lock };
}

/**
 * Payee: refuse the return of a lock whose preimage this party showed before the expiry (`LOCK_CLAIMED`): the claim
 * stands, off-chain or, once revealed, on-chain.
 */
function checkNotClaimed(ch: EngineChannel, st: PeerStep): void {
  if (st.op?.kind === 'expire' && ch.claims.some((c) => c.hash === st.lock!.hash)) {
    throw new TrickleError('LOCK_CLAIMED', 'the payee showed this lock’s preimage before its expiry', {
      details: { hash: st.lock!.hash },
    });
  }
}

/** Effects of a peer's lock transition that became the latest state (this party is the lock's payee). */
function afterPeerLockOp(ch: EngineChannel, st: PeerStep, u: PeerUpdate, latest: SignedState, out: Out): EngineChannel {
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
  const preimage = st.op.kind === 'claim' ? u.unlock?.preimage : undefined;
  out.effects.push({
    type: 'lock-settled',
    lock: st.lock,
    outcome: st.op.kind === 'claim' ? 'claimed' : 'refunded',
    preimage,
    state: latest,
  });
  const mine = ch.claims.find((c) => c.hash === st.lock!.hash);
  if (!mine) return ch;
  if (mine.ref >= 0) {
    if (st.op.kind === 'claim')
      out.effects.push({ type: 'resolve', ref: mine.ref, state: latest, amount: st.lock.amount });
    else
      out.effects.push({
        type: 'reject',
        ref: mine.ref,
        error: new TrickleError('LOCK_EXPIRED', 'the payer took the lock back after its expiry'),
      });
  }
  return { ...ch, claims: ch.claims.filter((c) => c !== mine) };
}

/** Device: countersign the hub's lock transition (add, claim or expiry of a lock the hub pays). */
function acceptHubLockOp(ch: EngineChannel, u: PeerUpdate, env: EngineEnv, out: Out): StepResult {
  // The hub builds on the latest state both signed; a lock transition of ours in flight is a crossing.
  if (ch.proposals.length > 0) throw new TrickleError('STALE_VERSION', 'crossed with an update of the device');
  const st = peerTransition(ch, ch.latest.state, ch.locks, u, 'hub', nowSec(env));
  checkNotClaimed(ch, st);
  const digest = env.crypto.digest(u.state);
  if (env.crypto.recover(digest, u.sig) !== ch.ctx.params.hub)
    throw new TrickleError('BAD_SIGNATURE', 'not signed by the hub');
  if (u.state.version <= ch.signedVersion)
    throw new TrickleError('STALE_VERSION', 'the device already signed this version');
  const sig = env.crypto.sign(digest);
  const latest: SignedState = { state: u.state, deviceSig: signatureToHex(sig), hubSig: signatureToHex(u.sig) };
  let next: EngineChannel = {
    ...ch,
    latest,
    locks: st.locks,
    signedVersion: u.state.version,
    signedDigest: sigHexOf(digest),
    peerVersion: u.state.version,
    yieldUntil: 0,
  };
  // Durable before the device countersigns: it holds a lock toward it, or receives money.
  out.persist(true);
  out.effects.push({ type: 'send', msg: ackFrame(ch, u.id, u.state.version, latest.deviceSig!) });
  const amount = u.state.paidByHub - ch.latest.state.paidByHub;
  if (amount > 0n) out.effects.push({ type: 'incoming', amount, paymentId: u.paymentId, state: latest });
  next = afterPeerLockOp(next, st, u, latest, out);
  return finishWithProposals(next, out, env);
}

// ---------- answers to our proposals ----------

function onPeerAck(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'peer-ack' }>, env: EngineEnv): StepResult {
  const p = ch.proposals.find((x) => x.state.version === ev.version);
  // A late or duplicate ack changes nothing.
  if (!p || ev.version <= ch.latest.state.version) return { channel: ch, effects: [] };
  const peer = counterparty(ch.role);
  if (env.crypto.recover(env.crypto.digest(p.state), ev.sig) !== ch.ctx.params[peer]) {
    throw new TrickleError('BAD_SIGNATURE', `ack not signed by the ${peer}`);
  }
  const latest: SignedState =
    ch.role === 'device'
      ? { state: p.state, deviceSig: p.sig, hubSig: signatureToHex(ev.sig) }
      : { state: p.state, deviceSig: signatureToHex(ev.sig), hubSig: p.sig };
  const out = new Out();
  // Acks are cumulative: every proposal at or below this version is settled by it.
  const settled = ch.proposals.filter((x) => x.state.version <= ev.version);
  const proposals = ch.proposals.filter((x) => x.state.version > ev.version);
  let next: EngineChannel = {
    ...ch,
    latest,
    locks: p.locks,
    proposals,
    peerVersion: ev.version > ch.peerVersion ? ev.version : ch.peerVersion,
  };
  for (const x of settled) if (x.op) settledLock(x.op, lockOfOp(x, ch), x.preimage, latest, out);
  if (settled.some((x) => x.op?.kind === 'add')) expiryTimer(next, env, out);
  if (ch.role === 'hub') {
    const credit = p.credit;
    // A lock the hub added is not a delivery: its paymentId is marked credited when the lock is claimed.
    const delivered = credit?.paymentId && (!p.op || p.op.kind === 'claim');
    out.persist(
      true,
      ...(delivered ? [{ kind: 'credited', paymentId: credit!.paymentId!, version: p.state.version } as const] : []),
    );
    if (credit && credit.ref >= 0)
      out.effects.push({
        type: 'resolve',
        ref: credit.ref,
        state: latest,
        amount: credit.amount,
        paymentId: credit.paymentId,
        locked: p.op?.kind === 'add' ? p.op.lock.hash : undefined,
      });
  } else if (p.state.isFinal) {
    out.persist(true); // the final state goes on-chain: durable first
    for (const ref of p.closeRefs ?? []) out.effects.push({ type: 'resolve', ref, state: latest, amount: 0n });
  } else {
    // The device's own payment: the hub committed it before acking, so it is written behind. A lock transition is
    // written at once: the device must know the lock list of its latest state after a restart.
    out.persist(settled.some((x) => x.op !== undefined));
    next = settlePays(
      next,
      settled.flatMap((x) => x.pays),
      latest,
      env,
      out,
    );
  }
  return finishWithProposals(next, out, env);
}

/** The lock a proposal's op adds or removes (removed ones are looked up in the list it was built on). */
function lockOfOp(p: OwnProposal, ch: EngineChannel): Lock | undefined {
  if (!p.op) return undefined;
  if (p.op.kind === 'add') return p.op.lock;
  const hash = p.op.hash;
  return ch.locks.find((l) => l.hash === hash) ?? ch.proposals.flatMap((x) => x.locks).find((l) => l.hash === hash);
}

/** Resolve acked payments; routed ones wait for their receipt; a lock resolves once in place (`locked`). */
function settlePays(
  ch: EngineChannel,
  pays: readonly PendingPay[],
  latest: SignedState,
  env: EngineEnv,
  out: Out,
): EngineChannel {
  const routed = [...ch.routed];
  let early = ch.early;
  for (const w of pays) {
    if (w.unlock) continue; // its outcome is a lock-settled effect
    if (w.lock) {
      out.effects.push({
        type: 'resolve',
        ref: w.ref,
        state: latest,
        amount: w.amount,
        paymentId: w.route?.paymentId,
        locked: w.lock.hash,
      });
      continue;
    }
    if (!w.route) {
      out.effects.push({ type: 'resolve', ref: w.ref, state: latest, amount: w.amount });
      continue;
    }
    const found = early.find((e) => e.paymentId === w.route!.paymentId);
    if (found) {
      early = early.filter((e) => e !== found);
      if (found.delivered)
        out.effects.push({
          type: 'resolve',
          ref: w.ref,
          state: latest,
          amount: w.amount,
          paymentId: w.route.paymentId,
        });
      else out.effects.push({ type: 'reject', ref: w.ref, error: noRoute() });
      continue;
    }
    routed.push({
      ref: w.ref,
      paymentId: w.route.paymentId,
      amount: w.amount,
      target: w.target,
      version: latest.state.version,
      since: env.now,
    });
    out.effects.push({ type: 'timer', at: env.now + ch.config.routeTimeoutMs });
  }
  return { ...ch, routed, early };
}

const noRoute = () => new TrickleError('NO_ROUTE', 'the payee did not take the payment; the hub refunded it');

function onReceipt(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'receipt' }>): StepResult {
  const w = ch.routed.find((r) => r.paymentId === ev.paymentId);
  if (!w) {
    // The receipt can overtake the ack: keep it for when the payment is acked (bounded by what is in flight).
    const pending =
      ch.proposals.some((p) => p.route?.paymentId === ev.paymentId) ||
      ch.queue.some((q) => (q as PendingPay).route?.paymentId === ev.paymentId);
    if (!pending || ch.early.some((e) => e.paymentId === ev.paymentId)) return { channel: ch, effects: [] };
    return {
      channel: { ...ch, early: [...ch.early, { paymentId: ev.paymentId, delivered: ev.delivered }] },
      effects: [],
    };
  }
  const routed = ch.routed.filter((r) => r !== w);
  const effect: EngineEffect = ev.delivered
    ? { type: 'resolve', ref: w.ref, state: ch.latest, amount: w.amount, paymentId: w.paymentId }
    : { type: 'reject', ref: w.ref, error: noRoute() };
  return { channel: { ...ch, routed }, effects: [effect] };
}

function onPeerReject(
  ch: EngineChannel,
  ev: Extract<EngineEvent, { type: 'peer-reject' }>,
  env: EngineEnv,
): StepResult {
  const claim = ch.claims.find((c) => c.id === ev.id);
  if (claim) {
    // The payer refused our claim: its caller is told. A claim made before the expiry that reached the payer only
    // after it (LOCK_EXPIRED) is kept: this party still refuses the lock's return (LOCK_CLAIMED) and settles it
    // on-chain with the preimage it revealed in time. Any other refusal (BAD_PREIMAGE, UNKNOWN_LOCK) drops it.
    const effects: EngineEffect[] =
      claim.ref >= 0
        ? [
            {
              type: 'reject',
              ref: claim.ref,
              error: new TrickleError(ev.code, ev.message ?? 'claim refused by the payer'),
            },
          ]
        : [];
    const claims =
      ev.code === 'LOCK_EXPIRED'
        ? ch.claims.map((c) => (c === claim ? { ...c, ref: -1 } : c))
        : ch.claims.filter((c) => c !== claim);
    return { channel: { ...ch, claims }, effects };
  }
  const i = ch.proposals.findIndex((x) => x.id === ev.id);
  if (i < 0) return { channel: ch, effects: [] };
  const p = ch.proposals[i]!;
  const out = new Out();
  if (p.op?.kind === 'expire') {
    // The payee holds the preimage, shown before the expiry: not proposed again (the lock is settled by its claim,
    // or on-chain where the payee's reveal decides it). Otherwise (the peer's clock is behind) retried on a tick.
    if (ev.code === 'LOCK_CLAIMED') ch = { ...ch, contested: [...ch.contested, p.op.hash] };
    else out.effects.push({ type: 'timer', at: env.now + 1000 });
  }
  const conflict = VERSION_CONFLICT.has(ev.code);
  if (ch.role === 'hub') {
    const credit = p.credit!;
    let next: EngineChannel = { ...ch, proposals: [] };
    out.persist(true); // the outstanding proposal is gone from the record
    if (conflict && credit.attempts + 1 <= ch.config.maxCreditRetries)
      next = { ...next, queue: [{ ...credit, attempts: credit.attempts + 1 }, ...next.queue] };
    else if (credit.ref >= 0)
      out.effects.push({
        type: 'reject',
        ref: credit.ref,
        error: new TrickleError(ev.code, `the device refused the credit: ${ev.message ?? ''}`),
      });
    return finishWithProposals(next, out, env);
  }
  // Device. A proposal pipelined on top of the refused one holds its payments too (counters are cumulative) and the
  // hub may still accept it (a STORE_FAILURE or a crossing refuses one version, not the ones above it). So the
  // refused proposal's payments ride on the next one and share its outcome; answering them now would tell a caller
  // "failed" for a payment the hub then accepts, or queue it again and pay it twice.
  const above = ch.proposals[i + 1];
  if (above) {
    const proposals = ch.proposals
      .filter((x) => x !== p)
      .map((x) => (x === above ? { ...x, pays: [...p.pays, ...x.pays] } : x));
    return finishWithProposals({ ...ch, proposals }, out, env);
  }
  // The newest proposal: its payments fail on the merits, or are queued again after a version conflict.
  const proposals = ch.proposals.slice(0, i);
  const closeRefs = p.closeRefs ?? [];
  let queue = ch.queue;
  if (conflict) {
    queue = [...p.pays.map((w) => ({ ...w, target: 0n })), ...queue];
  } else {
    const e = new TrickleError(ev.code, ev.message ?? 'refused by the hub');
    for (const w of p.pays) out.effects.push({ type: 'reject', ref: w.ref, error: e });
    for (const ref of closeRefs) out.effects.push({ type: 'reject', ref, error: e });
  }
  const reclose = conflict ? closeRefs : [];
  return finishWithProposals({ ...ch, proposals, queue, closeRefs: [...ch.closeRefs, ...reclose] }, out, env);
}

// ---------- sync ----------

function verifiedFully(ch: EngineChannel, s: SignedState, env: EngineEnv): boolean {
  if (s.state.channelId !== ch.ctx.channelId) return false;
  if (isZeroState(s.state) && !s.deviceSig && !s.hubSig) return true;
  if (!s.deviceSig || !s.hubSig) return false;
  try {
    const d = env.crypto.digest(s.state);
    return (
      env.crypto.recover(d, signatureFromHex(s.deviceSig)) === ch.ctx.params.device &&
      env.crypto.recover(d, signatureFromHex(s.hubSig)) === ch.ctx.params.hub
    );
  } catch {
    return false;
  }
}

function onPeerSync(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'peer-sync' }>, env: EngineEnv): StepResult {
  const out = new Out();
  const theirs = ev.latest;
  let next = ch;
  let theirLocks: readonly Lock[] | undefined;
  if (
    theirs &&
    theirs.state.version > ch.latest.state.version &&
    verifiedFully(ch, theirs, env) &&
    (theirLocks = locksFor(ch, theirs.state, ev.locks)) !== undefined
  ) {
    // The peer holds a state both signed that we have not recorded (our ack or theirs was lost): adopt it.
    const v = theirs.state.version;
    next = {
      ...next,
      latest: theirs,
      locks: theirLocks,
      signedVersion: v > next.signedVersion ? v : next.signedVersion,
      peerVersion: v,
    };
    out.persist(true);
    const settled = next.proposals.filter((p) => p.state.version <= v);
    next = lockChangesOnAdoption(next, ch, settled, theirLocks, theirs, out);
    next = { ...next, proposals: next.proposals.filter((p) => p.state.version > v) };
    if (ch.role === 'hub') {
      for (const p of settled) {
        const credit = p.credit!;
        if (sameState(p.state, theirs.state)) {
          if (credit.paymentId) out.writes.push({ kind: 'credited', paymentId: credit.paymentId, version: v });
          if (credit.ref >= 0)
            out.effects.push({
              type: 'resolve',
              ref: credit.ref,
              state: theirs,
              amount: credit.amount,
              paymentId: credit.paymentId,
            });
        } else next = { ...next, queue: [credit, ...next.queue] };
      }
    } else {
      // Our payments the adopted state covers are done; the rest of what it superseded is queued again.
      // paidByDevice rises only through states the device signed, all from its own chain of proposals: a payment
      // whose cumulative target the adopted state reaches is in it.
      const pays = settled.flatMap((p) => p.pays);
      const done = pays.filter((w) => payDone(w, theirs.state, theirLocks!));
      next = settlePays(next, done, theirs, env, out);
      const again = pays.filter((w) => !done.includes(w)).map((w) => ({ ...w, target: 0n }));
      if (again.length > 0) next = { ...next, queue: [...again, ...next.queue] };
      // close() callers whose final state the hub acked (the ack was lost) get it now; if the adopted state is not
      // final, their close is proposed again on top of it.
      const closeRefs = [...settled.flatMap((p) => p.closeRefs ?? []), ...next.closeRefs];
      if (theirs.state.isFinal) {
        for (const ref of closeRefs) out.effects.push({ type: 'resolve', ref, state: theirs, amount: 0n });
        next = { ...next, closeRefs: [] };
      } else next = { ...next, closeRefs };
      if (theirs.state.paidByHub > ch.latest.state.paidByHub) {
        out.effects.push({
          type: 'incoming',
          amount: theirs.state.paidByHub - ch.latest.state.paidByHub,
          state: theirs,
        });
      }
    }
  } else if (theirs && theirs.state.version === ch.latest.state.version && !sameState(theirs.state, ch.latest.state)) {
    const peerSig = ch.role === 'hub' ? theirs.deviceSig : theirs.hubSig;
    if (peerSig) evidenceIfDifferent(ch, { state: theirs.state, sig: signatureFromHex(peerSig) }, env, out);
  }
  if (ch.role === 'hub') {
    out.effects.push({ type: 'send', msg: syncFrame(next, ev.id) });
    resendProposals({ ...next, connected: true }, out);
    resendClaims({ ...next, connected: true }, out);
    expiryTimer(next, env, out);
    return finishWithProposals({ ...next, connected: true }, out, env);
  }
  // Device: the hub's answer. From here on the device may sign again; what is in flight is sent again, same bytes.
  next = { ...next, synced: true, connected: true };
  resendProposals(next, out);
  resendClaims(next, out);
  expiryTimer(next, env, out);
  return finishWithProposals(next, out, env);
}

/** A `sync` frame carrying this party's latest state and its lock list. */
export function syncFrame(ch: EngineChannel, id: number): Message {
  return {
    t: 'sync',
    id,
    channelId: ch.ctx.channelId,
    latest: ch.latest,
    ...(ch.locks.length > 0 ? { locks: encodeLocks(ch.locks) } : {}),
  };
}

/** The lock list a state commits to, from what this party knows or what the peer offered; undefined if none fits. */
function locksFor(ch: EngineChannel, state: State, offered: readonly Lock[] | undefined): readonly Lock[] | undefined {
  if (commitsTo(state, ch.locks)) return ch.locks;
  for (const p of ch.proposals) if (commitsTo(state, p.locks)) return p.locks;
  if (offered && commitsTo(state, offered)) return offered.length > 0 ? offered : NONE;
  return undefined;
}

/** Whether an adopted state holds a device payment of ours (a lock transition: by the lock list it commits to). */
function payDone(w: PendingPay, state: State, locks: readonly Lock[]): boolean {
  if (w.lock) return locks.some((l) => l.hash === w.lock!.hash);
  if (w.unlock) return !locks.some((l) => l.hash === w.unlock!.hash);
  return w.target <= state.paidByDevice;
}

/** Lock effects of adopting a state from a sync: locks that appeared toward us, and locks that left. */
function lockChangesOnAdoption(
  next: EngineChannel,
  before: EngineChannel,
  settled: readonly OwnProposal[],
  locks: readonly Lock[],
  latest: SignedState,
  out: Out,
): EngineChannel {
  const had = new Map(before.locks.map((l) => [l.hash, l] as const));
  const has = new Set(locks.map((l) => l.hash));
  for (const l of locks)
    if (!had.has(l.hash) && l.payer !== next.role) out.effects.push({ type: 'lock-incoming', lock: l, state: latest });
  let claims = next.claims;
  for (const [hash, l] of had) {
    if (has.has(hash)) continue;
    const own = settled.find((p) => p.op && p.op.kind !== 'add' && p.op.hash === hash);
    const mine = claims.find((c) => c.hash === hash);
    // Without our own op, a lock that left was claimed if its payer's counter rose by at least its amount — also when
    // a claim of ours waits on it: a lock returned to its payer (the counter did not rise) paid us nothing.
    const rose =
      l.payer === 'device'
        ? latest.state.paidByDevice - before.latest.state.paidByDevice
        : latest.state.paidByHub - before.latest.state.paidByHub;
    const claimed = own ? own.op!.kind === 'claim' : rose >= l.amount;
    out.effects.push({
      type: 'lock-settled',
      lock: l,
      outcome: claimed ? 'claimed' : 'refunded',
      preimage: claimed ? (own?.preimage ?? mine?.preimage) : undefined,
      state: latest,
    });
    if (mine) {
      if (mine.ref >= 0)
        out.effects.push(
          claimed
            ? { type: 'resolve', ref: mine.ref, state: latest, amount: l.amount }
            : {
                type: 'reject',
                ref: mine.ref,
                error: new TrickleError('LOCK_EXPIRED', 'the payer took the lock back after its expiry'),
              },
        );
      claims = claims.filter((c) => c !== mine);
    }
  }
  return claims === next.claims ? next : { ...next, claims };
}

// ---------- time ----------

function onTick(ch: EngineChannel, env: EngineEnv): StepResult {
  const out = new Out();
  let next = ch;
  if (ch.locks.length > 0) expiryTimer(ch, env, out);
  if (ch.routed.length > 0) {
    const expired = ch.routed.filter((r) => env.now - r.since >= ch.config.routeTimeoutMs);
    if (expired.length > 0) {
      for (const r of expired) {
        out.effects.push({
          type: 'reject',
          ref: r.ref,
          error: new TrickleError(
            'TIMEOUT',
            'no receipt for the routed payment yet; the hub delivers it or refunds it later',
            { details: { paymentId: r.paymentId } },
          ),
        });
      }
      next = { ...next, routed: ch.routed.filter((r) => !expired.includes(r)) };
    }
  }
  return finishWithProposals(next, out, env);
}

/**
 * The dispute rule, shared by the engine and the watchtower: a force close that registered `registeredVersion` is
 * stale when we hold a newer state both parties signed; that state is the challenge.
 * @returns whether `held` must be submitted as a challenge
 */
export function challengeWith(held: SignedState, registeredVersion: bigint): boolean {
  return held.state.version > registeredVersion && held.deviceSig !== undefined && held.hubSig !== undefined;
}

/** Everything a caller is still waiting for on this channel (to fail them when the channel freezes or closes). */
export function waitingRefs(ch: EngineChannel): number[] {
  const refs: number[] = [];
  for (const q of ch.queue) refs.push(q.ref);
  for (const p of ch.proposals) {
    for (const w of p.pays) refs.push(w.ref);
    if (p.credit && p.credit.ref >= 0) refs.push(p.credit.ref);
    for (const r of p.closeRefs ?? []) refs.push(r);
  }
  for (const r of ch.routed) refs.push(r.ref);
  for (const r of ch.closeRefs) refs.push(r);
  for (const c of ch.claims) if (c.ref >= 0) refs.push(c.ref);
  return refs;
}

/** Device: what it would be paid if the channel settled on the latest fully signed state. */
export function settledBalance(ch: EngineChannel): bigint {
  return payouts(ch.latest.state, ch.ctx.funding)[ch.role];
}
