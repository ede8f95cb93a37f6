/**
 * The channel engine: every transition rule of a channel, for both parties, as one pure reducer.
 *
 * `step(channel, event, env) → { channel, effects }`. No I/O, no clock, no randomness, no globals: time and keys
 * arrive in `env` (`now`, an {@link EngineCrypto} whose signatures are deterministic, RFC 6979), so replaying the
 * same events gives the same states and the same signatures. The hub, the device client and the watchtower are
 * shells around it: decode → step → persist → act.
 *
 * The rules live here once, laid out by role so that a party's bundle carries its own: what both parties do (locks,
 * claims, acks, rejects, syncs, time, chain facts) is in this module and `engine-shared`; what only the hub does
 * (credits, countersigning device updates, the device's close) in `engine-hub` ({@link EngineRules} `hubRules`); what
 * only the device does (pay, close, countersigning hub credits, routed receipts) in `engine-device` (`deviceRules`).
 * A shell hands its role's rules to {@link createEngineChannel}; a browser bundle of the device then holds no hub rule.
 *
 * The shell contract:
 * - A `persist` effect with `gate: true` must succeed before the shell adopts the returned channel or performs any
 *   other effect of the step. If it fails, the shell discards the step (keeps the channel it had), and reports
 *   `STORE_FAILURE` (see {@link storeFailure}) to every caller and peer message of the discarded step.
 * - A `persist` with `gate: false` is written behind: the state it records is already durable at the peer and
 *   forgetting it costs this party nothing (a device's own payment, which the hub committed before acking). A device
 *   shell steps a `tick` before it writes behind, and writes the channel that step returns: the hub's signature on
 *   the newest state acked is checked first (see `EngineChannel.unchecked`).
 * - Refused events leave the channel unchanged (the same object is returned) and carry a `refused` effect with a
 *   typed error; a refused peer message also gets a `reject` frame to send, and a refused intent (`credit`, `close`)
 *   a `reject` effect for its `ref`. Two exceptions: an equivocation whose evidence is written returns the channel
 *   with `evidenceCount` raised (and a gated persist), and a device that has not resynced answers a hub proposal
 *   with no frame at all (the hub resends it after the sync).
 *
 * @module
 */
import { isZeroState, payouts, sameState, DEFAULT_MAX_LOCKS, type ChannelContext, type LockOp } from './channel.js';
import { encodeLocks, hashPreimage, lockCommitment, lockOutcome, MAX_LOCKS_ON_CHAIN, type Lock } from './locks.js';
import { TrickleError, peerError, type ErrorCode } from './errors.js';
import type { Message, RouteInstruction, WireLock, WireUnlock } from './codec.js';
import { signatureFromHex, signatureToHex } from './signer.js';
import {
  NONE,
  Out,
  ackFrame,
  answerCallers,
  err,
  evidenceIfDifferent,
  finishWithProposals,
  lockLeft,
  nextIdAfter,
  nowSec,
  peerTransition,
  refuse,
  sigHexOf,
  updateFrame,
  type RoleRules,
} from './engine-shared.js';
import {
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
  /**
   * Latest lock expiry accepted, in seconds from now, for a lock either side adds (`LIMIT_EXCEEDED` beyond). On-chain
   * settlement waits for every pending lock's expiry, so a lock that expires in a century freezes the whole channel
   * (the counterparty's deposit too) for as long.
   */
  readonly maxLockSeconds: number;
}

export { lockSlotsLeft } from './engine-shared.js';

/** Default {@link EngineConfig.maxLockSeconds}: 14 days. */
export const DEFAULT_MAX_LOCK_SECONDS = 14 * 24 * 3600;

/** Defaults of {@link EngineConfig}. */
export const DEFAULT_ENGINE_CONFIG: EngineConfig = {
  maxInFlight: 8,
  maxCreditRetries: 30,
  maxEvidence: 16,
  yieldMs: 50,
  routeTimeoutMs: 30_000,
  maxLocks: DEFAULT_MAX_LOCKS,
  reserveVersions: 1024,
  maxLockSeconds: DEFAULT_MAX_LOCK_SECONDS,
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
  /** The peer's lock given back by this party, its payee (a `cancel`), not one of ours taken back after its expiry. */
  readonly cancel?: true | undefined;
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
  /** Its caller (negative: none, a credit restored after a restart or one the engine made itself). */
  readonly ref: number;
  /** Callers that asked for the same credit again while it waited: answered with `ref`, with the same outcome. */
  readonly joined?: readonly number[] | undefined;
  readonly amount: bigint;
  readonly paymentId?: Bytes32 | undefined;
  readonly round?: bigint | undefined;
  readonly lock?: LockTerms | undefined;
  readonly unlock?: Unlock | undefined;
  readonly attempts: number;
  /** Hub: versions of earlier proposals of this credit the device refused or left unanswered (see `unsettled`). */
  readonly dangling?: readonly bigint[] | undefined;
}

/**
 * Hub: a state it signed first above the latest both signed that the device never countersigned and that holds more
 * for it (a credit or a lock it refused, or a proposal a crossing superseded). The adjudicator takes a force close
 * with a state only the other party signed, so the device may still be paid by it: its credit is settled only when
 * a state both signed above it exists (it is void), when a sync brings it back both signed, or when the channel
 * closes on-chain at some version (delivered if at its own).
 */
export interface UnsettledState {
  readonly state: State;
  readonly hubSig: SignatureHex;
  readonly paymentId?: Bytes32 | undefined;
  readonly round?: bigint | undefined;
}

/** Hub: a credit refused while a state of it is unsettled: answered once those states settle. */
export interface DeferredCredit {
  readonly ref: number;
  /** Callers that asked for the same credit again (see `PendingCredit.joined`). */
  readonly joined?: readonly number[] | undefined;
  readonly amount: bigint;
  readonly paymentId?: Bytes32 | undefined;
  readonly round?: bigint | undefined;
  readonly lock?: LockTerms | undefined;
  /** The refusal it is answered with if its states settle void. */
  readonly code: ErrorCode;
  readonly message: string;
  /** Versions of its unsettled states. */
  readonly versions: readonly bigint[];
  /** One of them settled as delivered (a sync brought it back both signed, or the channel closed with it). */
  readonly delivered?: SignedState | undefined;
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
  /**
   * The proposer's signature. Absent only on a device's final state: the hub signs that first, and the device signs
   * it once the hub's signature is in (so no final state it signed is ever held by a hub that did not close with it).
   */
  readonly sig?: SignatureHex | undefined;
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

/** Device: a give-back it signed (see `EngineChannel.givenBack`): the lock on `hash` left out at `version`. */
export interface GivenBack {
  readonly hash: Bytes32;
  readonly version: bigint;
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
  /** The transition rules of `role`, given to {@link createEngineChannel}. */
  readonly rules: EngineRules;
  readonly ctx: ChannelContext;
  readonly config: EngineConfig;
  readonly status: EngineStatus;
  /** Latest state both parties signed (the unsigned zero state before any update). */
  readonly latest: SignedState;
  /**
   * Device: the newest state the hub acked whose countersignature is not checked yet (`latest` is the newest checked
   * one). An ack of a state that only pays the hub protects the device nothing — an older state pays it more — so its
   * signature is checked once, lazily: before any event but `pay` and `peer-ack` is stepped — a credit, a close, a
   * sync, a chain fact, and the `tick` a device shell steps before it writes behind — and the state checked becomes
   * `latest` (written behind). A state whose check fails is dropped (see {@link EngineEffect} `resync`): no state with
   * an unchecked hub signature is stored or presented.
   */
  readonly unchecked?: SignedState | undefined;
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
  /**
   * Device: the version of a state it signed that the hub refused (a payment it cannot route, funds it does not see,
   * a give-back of a lock the hub pays it) and that pays the hub more than the latest state both signed. The hub still
   * holds the device's signature on it, and the adjudicator takes a state only the other party signed — a force
   * close, or the challenge of one with an older state — so it is the device's exposure until a state both signed
   * goes above it (a give-back also holds back the claim of its lock: `givenBack`). Once the channel is idle
   * and nothing was signed since, the device proposes one that moves nothing (the latest counters one version up);
   * the hub countersigns it like any payment. Durable (the step that sets it asks for a gated persist, and a shell
   * restores it, `EngineRestore.refused`): after a restart the device still knows it is exposed, and the first sync
   * voids it the same way (`resynced`).
   */
  readonly refused?: bigint | undefined;
  /**
   * Device: the give-backs it signed (a `cancel` of a lock the hub pays it) that no state both signed has reached, by
   * hash and the version it signed there. Countersigned, refused or never answered, the hub may hold the device's
   * signature on each, and registered (a force close, or the challenge of the device's with an older state) a
   * give-back returns the lock to the hub whatever is revealed on-chain. So the device shows no preimage of `hash` (a
   * `claim` is `INVALID_ARGUMENT`) while the state both signed is below `version`; at or above it the give-back was
   * countersigned (the lock is gone) or is void (the device signs one state per version). Only that lock: the device
   * claims its others. Added by the gated persist that signs the give-back, so it is durable before the give-back
   * leaves, and restored from `EngineRestore.givenBack`: after a restart (which forgets what was in flight) the device
   * still knows what the hub may hold. Entries a state both signed reached are dropped as it becomes `latest`; absent
   * when none.
   */
  readonly givenBack?: readonly GivenBack[] | undefined;
  /** Hub: its states the device may hold and register without having countersigned them (durable). */
  readonly unsettled?: readonly UnsettledState[] | undefined;
  /** Hub: credits refused while states of theirs are unsettled, answered when those settle (in memory). */
  readonly deferred?: readonly DeferredCredit[] | undefined;
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
  /**
   * The state removes the lock with this hash: the proposer's (claimed with the preimage, or expired), or, without a
   * preimage, the receiver's, given back by the proposer, its payee (a cancel).
   */
  readonly unlock?: WireUnlock | undefined;
  /**
   * With an `unlock` taking back the proposer's lock after its expiry: when the shell read its preimage as revealed
   * on-chain (seconds; 0n never). By the expiry, the lock is the payee's on-chain: the return is refused `LOCK_CLAIMED`.
   */
  readonly revealedAt?: bigint | undefined;
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
  /**
   * Payee intent: claim a lock the peer pays by showing its preimage. Resolves when the claim state is durable.
   * `revealedAt`: when the shell read the preimage as revealed on-chain (seconds; 0n never): past the lock's expiry, a
   * claim whose preimage was on-chain by then still stands (the adjudicator gives the lock to this party).
   */
  | {
      readonly type: 'claim';
      readonly ref: number;
      readonly hash: Bytes32;
      readonly preimage: Bytes32;
      readonly revealedAt?: bigint | undefined;
    }
  /**
   * Payee intent: give back a lock the peer pays, at any time (this party will not claim it: the hub's route behind
   * it died, a seller will not sell). Proposes the state without it, no counter moved (a `cancel`, ahead of anything
   * queued); resolves once the peer countersigned it. Refused `UNKNOWN_LOCK` (no such lock toward this party),
   * `LOCK_CLAIMED` (this party showed its preimage), `INVALID_ARGUMENT` (already being given back).
   */
  | { readonly type: 'give-back'; readonly ref: number; readonly hash: Bytes32 }
  /**
   * The peer (a lock's payee) showed the preimage of one of our locks: claim it. `revealedAt`: when the shell read
   * the adjudicator's preimage registry for a lock past its expiry (0n: never revealed) — a claim after the expiry is
   * taken if the preimage was revealed on-chain by the expiry, since settlement gives the payee the lock anyway.
   */
  | {
      readonly type: 'peer-claim';
      readonly id: number;
      readonly hash: Bytes32;
      readonly preimage: Bytes32;
      readonly revealedAt?: bigint | undefined;
    }
  /** Device intent: close cooperatively (a final state once nothing is in flight). */
  | { readonly type: 'close'; readonly ref: number }
  /** Proposals from the peer, in arrival order (a hub with a backlog checks all, verifies the newest). */
  | { readonly type: 'peer-updates'; readonly updates: readonly PeerUpdate[] }
  /** The device proposes the final state (hub side). `owes`: something outside the channel still owes it a credit. */
  | {
      readonly type: 'peer-close';
      readonly id: number;
      readonly state: State;
      /** The device's signature; absent when it asks the hub to sign first (it countersigns on the ack). */
      readonly sig?: Uint8Array | undefined;
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
      /** With `code` `UNKNOWN_CODE`: the code as the peer sent it (one a newer peer added). */
      readonly wireCode?: string | undefined;
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
  /** `version`: with `closed`, the version the channel closed with, when known. */
  | { readonly type: 'chain-status'; readonly status: EngineStatus; readonly version?: bigint | undefined }
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
  | ({ readonly kind: 'evidence' } & EquivocationEvidence);

/** Two different states at one version: the state held, and the other one offered with its signature (refused). */
export interface EquivocationEvidence {
  readonly version: bigint;
  readonly held: SignedState;
  readonly offered: { readonly state: State; readonly sig: SignatureHex };
}

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
  /**
   * Device: the hub's countersignature on a state it acked did not check (`BAD_SIGNATURE`: the hub is faulty; the state
   * was dropped, `latest` stays the last one that did): ask the hub for its latest state again, a sync, whose
   * signatures are checked before it is adopted.
   */
  | { readonly type: 'resync'; readonly error: TrickleError }
  /** Submit the held state on-chain as a challenge to a stale force close. */
  | { readonly type: 'submit'; readonly action: 'challenge'; readonly state: SignedState }
  /**
   * Call back with a `tick` at `at` (ms). A shell may keep only the earliest time asked for: every tick asks again for
   * what is still due later (a routed payment's deadline, a yield's end, a lock's expiry).
   */
  | { readonly type: 'timer'; readonly at: number };

/** The result of a step. */
export interface StepResult {
  readonly channel: EngineChannel;
  readonly effects: readonly EngineEffect[];
}

/**
 * The transition rules only one role uses: `hubRules` (`@trickle/protocol/engine-hub`) or `deviceRules`
 * (`@trickle/protocol/engine-device`). Opaque: a shell passes its role's rules to {@link createEngineChannel}.
 */
export interface EngineRules {
  readonly role: Role;
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
  /** Hub: its unsettled states (see {@link UnsettledState}). */
  readonly unsettled?: readonly UnsettledState[] | undefined;
  /**
   * Device: the version of a state it signed that the hub refused and may hold (see `EngineChannel.refused`), as its
   * record kept it. Ignored below `latest`'s version: a state both signed above it voids it.
   */
  readonly refused?: bigint | undefined;
  /**
   * Device: its give-backs no state both signed has reached (see `EngineChannel.givenBack`), as its record kept them.
   * Ignored at or below `latest`'s version (reached), and above `signedVersion` (no state the device signed).
   */
  readonly givenBack?: readonly GivenBack[] | undefined;
}

/**
 * Build an engine channel from what a party holds (a new channel, or a record read back after a restart).
 * @param rules - the rules of `r.role`: `hubRules` or `deviceRules`
 * @throws TrickleError('INVALID_ARGUMENT') for funding outside the on-chain widths, or rules of another role
 */
export function createEngineChannel(r: EngineRestore, rules: EngineRules): EngineChannel {
  if (rules.role !== r.role)
    throw new TrickleError('INVALID_ARGUMENT', `a ${r.role} channel needs the ${r.role} rules`);
  checkFunding(r.ctx.funding);
  const config = resolveConfig(r.config);
  if (!Number.isInteger(config.maxLocks) || config.maxLocks < 0 || config.maxLocks > MAX_LOCKS_ON_CHAIN) {
    throw new TrickleError('INVALID_ARGUMENT', `maxLocks must be an integer from 0 to ${MAX_LOCKS_ON_CHAIN}`);
  }
  if (!Number.isSafeInteger(config.maxLockSeconds) || config.maxLockSeconds <= 0)
    throw new TrickleError('INVALID_ARGUMENT', 'maxLockSeconds must be a positive whole number of seconds');
  const latest = r.latest;
  const locks = r.locks && r.locks.length > 0 ? r.locks : NONE;
  checkLocksMatch(latest.state, locks);
  const signedVersion = r.signedVersion > latest.state.version ? r.signedVersion : latest.state.version;
  const givenBack =
    r.role === 'device' && r.givenBack
      ? r.givenBack.filter((g) => g.version > latest.state.version && g.version <= signedVersion)
      : NONE;
  return {
    role: r.role,
    rules,
    ctx: r.ctx,
    config,
    status: r.status ?? 'open',
    latest,
    signedVersion,
    reservedVersion: signedVersion,
    peerVersion: latest.state.version,
    queue: NONE,
    proposals: NONE,
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
    ...(r.role === 'device' && r.refused !== undefined && r.refused >= latest.state.version
      ? { refused: r.refused }
      : {}),
    ...(givenBack.length > 0 ? { givenBack } : {}),
    // The hub's proposal it had stored and its unsettled states.
    ...(rules as RoleRules).restore?.(r, locks),
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
  const s = (ch.unchecked ?? ch.latest).state;
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

const VERSION_CONFLICT: ReadonlySet<ErrorCode> = new Set(['STALE_VERSION', 'EQUIVOCATION']);

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
  const r = stepOf(channel, event, env);
  const after = (channel.rules as RoleRules).after;
  return after && r.channel !== channel ? after(channel, r, event, env) : r;
}

function stepOf(channel: EngineChannel, event: EngineEvent, env: EngineEnv): StepResult {
  if (channel.unchecked && event.type !== 'pay' && event.type !== 'peer-ack') return checkFirst(channel, event, env);
  const rules = channel.rules as RoleRules;
  try {
    switch (event.type) {
      case 'pay':
        if (!rules.pay)
          throw new TrickleError('INVALID_ARGUMENT', 'only the device pays through pay(); the hub credits');
        return rules.pay(channel, event, env);
      case 'credit':
        if (!rules.credit) throw new TrickleError('INVALID_ARGUMENT', 'only the hub credits');
        return rules.credit(channel, event, env);
      case 'close':
        if (!rules.close) throw new TrickleError('INVALID_ARGUMENT', 'the device proposes the final state');
        return rules.close(channel, event, env);
      case 'peer-updates':
        return rules.peerUpdates(channel, event.updates, env);
      case 'peer-close':
        if (!rules.peerClose)
          return refuse(channel, new TrickleError('MALFORMED', 'the hub does not propose close'), { id: event.id });
        return rules.peerClose(channel, event, env);
      case 'peer-ack':
        return onPeerAck(channel, event, env);
      case 'peer-reject':
        return onPeerReject(channel, event, env);
      case 'peer-sync':
        return onPeerSync(channel, event, env);
      case 'receipt':
        return rules.receipt ? rules.receipt(channel, event) : { channel, effects: [] };
      case 'claim':
        return onClaim(channel, event, env);
      case 'give-back':
        return onGiveBack(channel, event, env);
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
        for (const q of ch.queue) answerCallers(out.effects, q, { type: 'reject', ref: q.ref, error: e });
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
    if (event.type === 'credit' || event.type === 'close' || event.type === 'claim' || event.type === 'give-back')
      return { channel, effects: [...r.effects, { type: 'reject', ref: event.ref, error: err(e) }] };
    return r;
  }
}

/**
 * Device: check the hub's signature on the newest state it acked, then step `event`. If it holds, that state becomes
 * `latest` (written behind). If not, the hub is faulty: the state is dropped — `latest` stays the last checked one,
 * which only pays the device more — and the device signs nothing new before a sync, whose state is checked in full.
 */
function checkFirst(channel: EngineChannel, event: EngineEvent, env: EngineEnv): StepResult {
  const u = channel.unchecked!;
  const ok = verifiedFully(channel, u, env.crypto);
  const r = stepOf(
    { ...channel, latest: ok ? u : channel.latest, unchecked: undefined, synced: ok && channel.synced },
    event,
    env,
  );
  const effects = [...r.effects];
  if (!ok) effects.push({ type: 'resync', error: new TrickleError('BAD_SIGNATURE', 'not signed by the hub') });
  else if (effects[0]?.type !== 'persist') effects.unshift({ type: 'persist', gate: false, writes: [] }); // behind
  return { channel: r.channel, effects };
}

/**
 * Device: the newest state both signed whose hub signature checks — `unchecked` checked now, without stepping (the
 * channel is unchanged; the engine checks it again when it steps). What a device may show or present on-chain.
 */
export function checkedLatest(ch: EngineChannel, crypto: EngineCrypto): SignedState {
  return ch.unchecked && verifiedFully(ch, ch.unchecked, crypto) ? ch.unchecked : ch.latest;
}

/**
 * Why a payee's claim of the lock on `hash` with `preimage` would be refused now, or `undefined` when the engine takes
 * it: the rules of the `claim` intent, for a shell that must decide before it stores the preimage (a device writes it
 * durably before the claim is shown). The channel is open; the lock is pending toward this party (`UNKNOWN_LOCK`); the
 * preimage hashes to it (`BAD_PREIMAGE`); it has not expired, unless revealed on-chain by its expiry (`LOCK_EXPIRED`);
 * this party is not giving it back, and no give-back of it that it signed is above the state both signed (a device,
 * `EngineChannel.givenBack`: the peer may hold it, countersigned, refused or unanswered, and registered it returns the
 * lock to the payer whatever is revealed on-chain) — `INVALID_ARGUMENT`: the preimage stays here until a state both
 * signed reaches that version. A claim of another lock is not held back by it.
 * @param ch - the channel
 * @param hash - the lock's hash
 * @param preimage - its preimage
 * @param now - the clock in chain seconds
 * @param revealedAt - when the preimage was revealed on-chain, if it was
 * @returns the typed refusal, or `undefined`
 */
export function claimRefusal(
  ch: EngineChannel,
  hash: Bytes32,
  preimage: Bytes32,
  now: bigint,
  revealedAt?: bigint,
): TrickleError | undefined {
  if (ch.status !== 'open') return new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
  const lock = ch.locks.find((l) => l.hash === hash && l.payer === counterparty(ch.role));
  if (!lock)
    return new TrickleError('UNKNOWN_LOCK', 'no pending lock toward this party has this hash', { details: { hash } });
  let hashed: Bytes32;
  try {
    hashed = hashPreimage(preimage);
  } catch (e) {
    return err(e); // not 32 bytes of hex: MALFORMED
  }
  if (hashed !== hash) return new TrickleError('BAD_PREIMAGE', 'the preimage does not hash to the lock’s hash');
  // Past the expiry the lock is still the payee's if its preimage was on-chain by then (settlement pays it so).
  if (lockOutcome(lock, revealedAt, now) === 'payer')
    return new TrickleError('LOCK_EXPIRED', 'the lock has expired', { details: { expiry: lock.expiry } });
  if (givingBack(ch, hash)) return new TrickleError('INVALID_ARGUMENT', 'the lock is being given back');
  if (ch.givenBack) {
    const held = (ch.unchecked ?? ch.latest).state.version;
    const g = ch.givenBack.find((x) => x.hash === hash && x.version > held);
    if (g)
      return new TrickleError(
        'INVALID_ARGUMENT',
        'this party signed a give-back of the lock that the peer may register: claim once a state both signed reaches it',
        { details: { version: g.version, held } },
      );
  }
  return undefined;
}

/** Payee: show the preimage of a lock the peer pays. The claim is sent now and again after every reconnect. */
function onClaim(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'claim' }>, env: EngineEnv): StepResult {
  const refusal = claimRefusal(ch, ev.hash, ev.preimage, nowSec(env), ev.revealedAt);
  if (refusal) throw refusal;
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

/** Whether this party, the payee, is giving back the lock on `hash` (queued or proposed). */
const givingBack = (ch: EngineChannel, hash: Bytes32): boolean =>
  ch.proposals.some((p) => p.op?.kind === 'cancel' && p.op.hash === hash) ||
  ch.queue.some((q) => q.unlock?.cancel === true && q.unlock.hash === hash);

/** Payee: give back a lock the peer pays (see the `give-back` event). */
function onGiveBack(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'give-back' }>, env: EngineEnv): StepResult {
  if (ch.status !== 'open' || ch.latest.state.isFinal)
    throw new TrickleError('CHANNEL_NOT_OPEN', 'channel is not open');
  const lock = ch.locks.find((l) => l.hash === ev.hash && l.payer === counterparty(ch.role));
  if (!lock)
    throw new TrickleError('UNKNOWN_LOCK', 'no pending lock toward this party has this hash', {
      details: { hash: ev.hash },
    });
  if (ch.claims.some((c) => c.hash === ev.hash))
    throw new TrickleError('LOCK_CLAIMED', 'this party showed the lock’s preimage: it claims the lock');
  if (givingBack(ch, ev.hash)) throw new TrickleError('INVALID_ARGUMENT', 'the lock is already being given back');
  const unlock: Unlock = { hash: ev.hash, cancel: true };
  const entry: PendingPay | PendingCredit =
    ch.role === 'device'
      ? { ref: ev.ref, amount: 0n, unlock, target: 0n }
      : { ref: ev.ref, amount: 0n, unlock, attempts: 0 };
  return finishWithProposals({ ...ch, queue: [entry, ...ch.queue] }, new Out(), env);
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
    // In the order of protocol-spec §2 (claim): the preimage first, then whether the lock is pending.
    if (hashPreimage(ev.preimage) !== ev.hash)
      throw new TrickleError('BAD_PREIMAGE', 'the preimage does not hash to the lock’s hash');
    const lock = ch.locks.find((l) => l.hash === ev.hash && l.payer === ch.role);
    if (!lock)
      throw new TrickleError('UNKNOWN_LOCK', 'no pending lock of ours has this hash', { details: { hash: ev.hash } });
    const inFlight = [
      ...ch.proposals.map((p) => (p.op && p.op.kind !== 'add' && p.op.hash === ev.hash ? p.op.kind : undefined)),
      ...ch.queue.map((q) => (q.unlock?.hash === ev.hash ? (q.unlock.preimage ? 'claim' : 'expire') : undefined)),
    ].find((k) => k);
    if (inFlight === 'claim') return { channel: ch, effects: [] }; // a copy of a claim already being answered
    // Past the expiry the lock is still the payee's if its preimage was on-chain by then (settlement pays it so):
    // taking the claim then ends off-chain what would otherwise stay pending until a force close.
    if (inFlight === 'expire' || lockOutcome(lock, ev.revealedAt, nowSec(env)) === 'payer')
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

function resendProposals(ch: EngineChannel, out: Out): void {
  if (!ch.connected) return;
  for (const p of ch.proposals) {
    out.effects.push({
      type: 'send',
      msg:
        p.state.isFinal && ch.role === 'device'
          ? { t: 'close', id: p.id, state: p.state } // the device's final state is unsigned: the hub signs first
          : updateFrame(p),
    });
  }
}

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

function onPeerAck(ch: EngineChannel, ev: Extract<EngineEvent, { type: 'peer-ack' }>, env: EngineEnv): StepResult {
  const p = ch.proposals.find((x) => x.state.version === ev.version);
  const rules = ch.rules as RoleRules;
  if (!p && rules.closingAck && ch.status === 'closing') return rules.closingAck(ch, ev, env);
  // A late or duplicate ack changes nothing.
  if (!p || ev.version <= ch.latest.state.version) return { channel: ch, effects: [] };
  const peer = counterparty(ch.role);
  // Device: the hub's signature on a state that only pays it is checked lazily (see `unchecked`): it protects the
  // device nothing until the state is stored or relied on. Not so a final state (the device signs it on this ack: it
  // has no signature of the device's yet) or one after a lock transition (every one makes a new lock list).
  const lazy = ch.role === 'device' && p.sig !== undefined && p.locks === ch.locks;
  const digest = env.crypto.digest(p.state);
  if (!lazy && env.crypto.recover(digest, ev.sig) !== ch.ctx.params[peer]) {
    throw new TrickleError('BAD_SIGNATURE', `ack not signed by the ${peer}`);
  }
  let own = p.sig;
  if (own === undefined) {
    // A final state the hub signed first: the device signs it now (its version and digest are already the ones it
    // reserved when it asked) — unless it signed another state since (a credit of the hub's), then the close is
    // proposed again above it.
    if (ch.signedDigest !== sigHexOf(digest)) {
      const closeRefs = [...ch.closeRefs, ...(p.closeRefs ?? [])];
      return finishWithProposals({ ...ch, proposals: ch.proposals.filter((x) => x !== p), closeRefs }, new Out(), env);
    }
    own = signatureToHex(env.crypto.sign(digest));
  }
  const out = new Out();
  // The device's countersignature of the final state goes to the hub too, which signed it and takes nothing more on
  // this channel: either side can then submit the close.
  if (p.sig === undefined) out.effects.push({ type: 'send', msg: ackFrame(ch, ev.id, p.state.version, own) });
  const latest: SignedState =
    ch.role === 'device'
      ? { state: p.state, deviceSig: own, hubSig: signatureToHex(ev.sig) }
      : { state: p.state, deviceSig: signatureToHex(ev.sig), hubSig: own };
  // Acks are cumulative: every proposal at or below this version is settled by it.
  const settled = ch.proposals.filter((x) => x.state.version <= ev.version);
  const proposals = ch.proposals.filter((x) => x.state.version > ev.version);
  let next: EngineChannel = {
    ...ch,
    latest: lazy ? ch.latest : latest,
    unchecked: lazy ? latest : undefined,
    locks: p.locks,
    proposals,
    peerVersion: ev.version > ch.peerVersion ? ev.version : ch.peerVersion,
  };
  for (const x of settled) if (x.op) settledLock(x.op, lockOfOp(x, ch), x.preimage, latest, out);
  if (settled.some((x) => x.op?.kind === 'add')) expiryTimer(next, env, out);
  next = (ch.rules as RoleRules).acked(next, p, settled, latest, env, out);
  return finishWithProposals(next, out, env);
}

/** The lock a proposal's op adds or removes (removed ones are looked up in the list it was built on). */
function lockOfOp(p: OwnProposal, ch: EngineChannel): Lock | undefined {
  if (!p.op) return undefined;
  if (p.op.kind === 'add') return p.op.lock;
  const hash = p.op.hash;
  return ch.locks.find((l) => l.hash === hash) ?? ch.proposals.flatMap((x) => x.locks).find((l) => l.hash === hash);
}

/** Refusals of a claim after which it is kept (without its caller) and sent again after the next sync. */
const CLAIM_KEPT: ReadonlySet<string> = new Set([
  'LOCK_EXPIRED',
  'RATE_LIMITED',
  'STORE_FAILURE',
  'INTERNAL',
  'TIMEOUT',
]);

function onPeerReject(
  ch: EngineChannel,
  ev: Extract<EngineEvent, { type: 'peer-reject' }>,
  env: EngineEnv,
): StepResult {
  const claim = ch.claims.find((c) => c.id === ev.id);
  if (claim) {
    // The payer refused our claim: its caller is told. A claim made before the expiry that reached the payer only
    // after it (LOCK_EXPIRED) is kept: this party still refuses the lock's return (LOCK_CLAIMED) and settles it
    // on-chain with the preimage it revealed in time. So is one refused for a passing reason (CLAIM_KEPT: a rate
    // limit, a store or hub failure): sent again after the next sync. So is one whose lock is still in the latest state
    // both signed, whatever the payer says (UNKNOWN_LOCK, BAD_PREIMAGE: the preimage was checked here): dropped, it
    // would let the payer take the lock back after its expiry although it was shown the preimage in time. Otherwise
    // (the lock gone) it is dropped.
    const effects: EngineEffect[] =
      claim.ref >= 0
        ? [
            {
              type: 'reject',
              ref: claim.ref,
              error: peerError(ev, 'claim refused by the payer'),
            },
          ]
        : [];
    const claims =
      CLAIM_KEPT.has(ev.code) || ch.locks.some((l) => l.hash === claim.hash)
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
  return (ch.rules as RoleRules).rejected(ch, i, VERSION_CONFLICT.has(ev.code), ev, out, env);
}

/** Whether both parties signed `s` (or it is the zero state of `ch`). */
function verifiedFully(ch: EngineChannel, s: SignedState, crypto: EngineCrypto): boolean {
  if (s.state.channelId !== ch.ctx.channelId) return false;
  if (isZeroState(s.state) && !s.deviceSig && !s.hubSig) return true;
  if (!s.deviceSig || !s.hubSig) return false;
  try {
    const d = crypto.digest(s.state);
    return (
      crypto.recover(d, signatureFromHex(s.deviceSig)) === ch.ctx.params.device &&
      crypto.recover(d, signatureFromHex(s.hubSig)) === ch.ctx.params.hub
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
    verifiedFully(ch, theirs, env.crypto) &&
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
    next = (ch.rules as RoleRules).adopted(next, ch, settled, theirs, theirLocks!, env, out);
  } else if (theirs && theirs.state.version === ch.latest.state.version && !sameState(theirs.state, ch.latest.state)) {
    const peerSig = ch.role === 'hub' ? theirs.deviceSig : theirs.hubSig;
    if (peerSig) evidenceIfDifferent(ch, { state: theirs.state, sig: signatureFromHex(peerSig) }, env, out);
  }
  // The hub answers with its latest. A device has the hub's answer: from here on it may sign again (a hub is always
  // synced). What is in flight is sent again, same bytes.
  if (ch.role === 'hub') out.effects.push({ type: 'send', msg: syncFrame(next, ev.id) });
  next = { ...next, synced: true, connected: true };
  resendProposals(next, out);
  resendClaims(next, out);
  expiryTimer(next, env, out);
  const rules = ch.rules as RoleRules;
  if (rules.resynced) next = rules.resynced(next, env, out);
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

/**
 * The lock list a state commits to, from what this party knows or what the peer offered (a sync frame leaves out an
 * empty list: none offered is none); undefined if none fits.
 */
function locksFor(ch: EngineChannel, state: State, offered: readonly Lock[] | undefined): readonly Lock[] | undefined {
  if (commitsTo(state, ch.locks)) return ch.locks;
  for (const p of ch.proposals) if (commitsTo(state, p.locks)) return p.locks;
  const list = offered ?? NONE;
  if (commitsTo(state, list)) return list.length > 0 ? list : NONE;
  return undefined;
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
    // Without our own op, a lock that left was claimed if its payer's counter rose by at least its amount — also when
    // a claim of ours waits on it: a lock returned to its payer (the counter did not rise) paid us nothing.
    const rose =
      l.payer === 'device'
        ? latest.state.paidByDevice - before.latest.state.paidByDevice
        : latest.state.paidByHub - before.latest.state.paidByHub;
    claims = lockLeft(claims, l, own ? own.op!.kind === 'claim' : rose >= l.amount, own?.preimage, latest, out);
  }
  return claims === next.claims ? next : { ...next, claims };
}

function onTick(ch: EngineChannel, env: EngineEnv): StepResult {
  const out = new Out();
  let next = ch;
  if (ch.locks.length > 0) expiryTimer(ch, env, out);
  const rules = ch.rules as RoleRules;
  if (rules.tick) next = rules.tick(next, env, out);
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
  for (const q of ch.queue) refs.push(q.ref, ...((q as PendingCredit).joined ?? NONE));
  for (const p of ch.proposals) {
    for (const w of p.pays) refs.push(w.ref);
    if (p.credit && p.credit.ref >= 0) refs.push(p.credit.ref, ...(p.credit.joined ?? NONE));
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
