import { checkTransition, channelContext, payouts, sameState } from '@trickle/protocol/channel';
import { encodeFrame, type Message, type RouteInstruction, type StreamTick } from '@trickle/protocol/codec';
import type { ReceiptRequest } from '@trickle/protocol/receipt';
import { stateDigest } from '@trickle/protocol/eip712';
import {
  availableToPay,
  checkedLatest,
  claimRefusal,
  createEngineChannel,
  step,
  storeFailure,
  syncFrame,
  type EngineChannel,
  type EngineCrypto,
  type EngineEffect,
  type EngineEvent,
  type PayIntent,
} from '@trickle/protocol/engine';
import { deviceRules } from '@trickle/protocol/engine-device';
import { decodeLocks, type Lock } from '@trickle/protocol/locks';
import { TrickleError, isTrickleError, peerError } from '@trickle/protocol/errors';
import { toHex, type Keccak256 } from '@trickle/protocol/hex';
import { toAddressInput, type AddressInput } from '@trickle/protocol/input';
import type { Signer, Verifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId, Funding, SignedState, State } from '@trickle/protocol/types';
import type { Connection } from './connection.js';
import type { ChannelStore, DeviceChannelRecord } from './store.js';
import { notify } from './notify.js';
import { PaymentStream, type StreamOptions } from './stream.js';
import { afterPendingIo } from './timers.js';

/** An incoming payment: the hub raised what it paid this device, and both signed it. */
export interface IncomingPayment {
  readonly channelId: ChannelId;
  readonly amount: bigint;
  /** The routed payment this delivers, or the refund of one of ours. */
  readonly paymentId?: Bytes32 | undefined;
  /** Set when the credit nets a market round. */
  readonly round?: bigint | undefined;
  readonly state: SignedState;
}

/**
 * What `pay` resolves to. A plain payment's receipt is frozen: those of one state with one amount may share it, and
 * plain payments of one amount made in one turn may share one promise of it.
 */
export interface PaymentReceipt {
  readonly amount: bigint;
  /** Version of the fully signed state that includes this payment. */
  readonly version: bigint;
  /** Cumulative paid by the device in that state. */
  readonly paidByDevice: bigint;
  readonly paymentId?: Bytes32 | undefined;
}

/** Balances from this device's point of view, in token base units. */
export interface ChannelBalance {
  readonly deposit: bigint;
  readonly paid: bigint;
  readonly received: bigint;
  /** What the device would get if the channel settled on the latest fully signed state. */
  readonly settled: bigint;
  /** `settled` less payments queued or in flight. */
  readonly available: bigint;
}

/**
 * How a conditional payment ended: claimed by the payee (with the preimage it showed), or refunded (taken back after
 * its expiry, or given back earlier: the payee gave it back, or the hub's route behind it died).
 */
export type ConditionalOutcome =
  { readonly status: 'claimed'; readonly preimage: Bytes32 } | { readonly status: 'refunded' };

/**
 * A conditional payment of this device that ended (see {@link ClientChannel.onConditionalOutcome}): its lock left the
 * channel in `state`, claimed by the payee (with the preimage the hub showed) or refunded.
 */
export type ConditionalSettlement = ConditionalOutcome & {
  readonly channelId: ChannelId;
  readonly hash: Bytes32;
  readonly amount: bigint;
  readonly state: SignedState;
};

/**
 * What `pay(amount, { lock })` returns: the lock is in the channel once `locked` resolves; `result` settles when
 * the payee claims it (`claimed`, with the preimage), or the lock comes back (`refunded`: the device takes it back
 * after expiry, or it is given back earlier). A client closed for good (`disconnect()`) answers `result` with
 * `DISCONNECTED`: the client connected next on the same store gives the outcome ({@link ClientChannel.preimageOf},
 * {@link ClientChannel.onConditionalOutcome}).
 * `then` makes the handle itself a promise of the outcome.
 */
export interface ConditionalPaymentHandle extends PromiseLike<ConditionalOutcome> {
  readonly hash: Bytes32;
  /** Chain timestamp (seconds) after which the device takes the lock back. */
  readonly expiresAt: bigint;
  readonly amount: bigint;
  /** Resolves once the hub countersigned the state holding the lock. */
  readonly locked: Promise<PaymentReceipt>;
  readonly result: Promise<ConditionalOutcome>;
}

/** A lock toward this device, countersigned and durable: claim it by showing the preimage before `expiresAt`. */
export interface ConditionalPayment {
  readonly channelId: ChannelId;
  readonly amount: bigint;
  readonly hash: Bytes32;
  /** Chain timestamp (seconds): a claim after it is refused with `LOCK_EXPIRED`. */
  readonly expiresAt: bigint;
  /** The routed payment this lock delivers, if any. */
  readonly paymentId?: Bytes32 | undefined;
  /**
   * Show the preimage (keccak256(preimage) = hash). Resolves with the state that pays this device, once durable.
   * @throws TrickleError BAD_PREIMAGE / UNKNOWN_LOCK / LOCK_EXPIRED
   */
  claim(preimage: Bytes32): Promise<SignedState>;
  /**
   * Give the lock back before its expiry: this device will not claim it (see {@link ClientChannel.giveBack}).
   * @throws TrickleError UNKNOWN_LOCK / LOCK_CLAIMED / INVALID_ARGUMENT / CHANNEL_NOT_OPEN / STORE_FAILURE
   */
  giveBack(): Promise<SignedState>;
}

/**
 * A check run before countersigning a hub credit (the market uses it to recompute a round). Throw to refuse: the hub
 * gets a `reject` with the thrown TrickleError's code (`INTERNAL` for anything else) and the channel stays as it was.
 *
 * For a conditional payment (the hub's proposal adds a lock toward this device: `lock` is set, `amount` is 0) the guard
 * sees the lock's terms before this device holds it, so a seller can refuse a lock below its price or on a hash it did
 * not offer: a refused lock is never held here, and the hub's route for it is dead — it no longer holds the hash
 * against other payers' routes to this device, and the hub never claims its payer's lock, which it gives back to that
 * payer at once. Once countersigned, a lock stays pending until it is claimed, expires, or is given back
 * ({@link ConditionalPayment.giveBack}). A refused credit or
 * lock is void once this device countersigns a later state: the hub proposes one at once that moves nothing (the
 * guard is not asked about it), and answers the credit's payer only then.
 * @example
 * ```ts
 * const creditGuard: CreditGuard = ({ lock }) => {
 *   if (lock && lock.amount < 1_000n) throw new TrickleError('INVALID_ARGUMENT', 'below the price of this offer');
 * };
 * ```
 */
export type CreditGuard = (credit: {
  channelId: ChannelId;
  previous: State;
  state: State;
  amount: bigint;
  /** The route's payment id, when the hub's proposal carries one (a routed payment, or the hub's lock of one). */
  paymentId?: Bytes32 | undefined;
  /** The lock the hub's proposal adds toward this device (a conditional payment): its amount, hash and expiry. */
  lock?: { readonly amount: bigint; readonly hash: Bytes32; readonly expiry: bigint } | undefined;
}) => void | Promise<void>;

export interface ChannelDeps {
  readonly signer: Signer;
  readonly verifier: Verifier;
  readonly store: ChannelStore;
  readonly connection: Connection;
  readonly maxInFlight: number;
  /** After a crossing with a hub credit, hold new proposals this long at most while the hub re-proposes. */
  readonly yieldMs: number;
  /** How long a routed payment waits for the hub's receipt before `pay` rejects with TIMEOUT. */
  readonly routeTimeoutMs: number;
  /**
   * Least seconds a lock toward this device must have left when the hub adds it and when its preimage is shown
   * (`EXPIRY_TOO_SHORT` otherwise); default 0 (no bound). The client passes its `minLockSeconds`.
   */
  readonly minLockSeconds?: number | undefined;
  readonly creditGuard?: CreditGuard | undefined;
  /** Reads deposits on-chain: a credit the hub's known deposit cannot cover triggers one refresh. */
  readonly readFunding?: ((channelId: ChannelId) => Promise<Funding>) | undefined;
  /** When a lock's preimage was first revealed on-chain (0n if never): decides the return of a lock claimed here. */
  readonly revealedAt?: ((hash: Bytes32) => Promise<bigint>) | undefined;
  /** keccak-256 for state digests (the compiled one when installed: `bestKeccak256()`); default pure JS. */
  readonly keccak?: Keccak256 | undefined;
  /** Random bytes (payment ids); default `globalThis.crypto.getRandomValues`. */
  readonly randomBytes?: ((n: number) => Uint8Array) | undefined;
}

type Frame = Extract<Message, { t: 'ack' | 'reject' | 'update' | 'sync' | 'claim' }>;

/** Queued behind the events stepped before it: the hub refused our sync, so what waits for the sync is answered. */
interface SyncRefused {
  readonly type: 'sync-refused';
  readonly error: TrickleError;
}

/** A caller waiting for the fully signed state that holds its intent (a payment, a claim, a close). */
interface Waiter {
  readonly resolve: (s: SignedState) => void;
  readonly reject: (e: TrickleError) => void;
}

/**
 * The plain `pay(amount)` calls of one turn (no route, escrow or lock): one intent for the engine (one ref, their
 * sum), so a step, a queue entry and a resolve effect are made per turn, not per payment. A turn's payments always
 * land in one state together (the engine puts everything queued up to a barrier into the next proposal), so the
 * group settles as one: every caller gets its receipt, or every caller the same error. The payments of the group's
 * first amount share one promise of one frozen receipt (`paid`): a payment costs no promise, executor, closure, map
 * entry or receipt of its own, so a payer with many payments in flight gives the garbage collector nothing per
 * payment to copy; a payment of another amount gets `done.then` with its own receipt.
 */
interface PayGroup {
  readonly ref: number;
  /** Settles with the fully signed state that holds the group, or with the error every caller gets. */
  readonly done: Promise<SignedState>;
  readonly resolve: (s: SignedState) => void;
  readonly reject: (e: TrickleError) => void;
  /** The amount of the group's first payment, and how many of its payments have it. */
  readonly amount: bigint;
  count: number;
  /** The sum of the payments with another amount, and how many there are. */
  other: bigint;
  others: number;
  /** What every payment of `amount` in the group gets: one promise of one receipt. */
  readonly paid: Promise<PaymentReceipt>;
}

const receiptOf = (amount: bigint, s: SignedState, paymentId?: Bytes32): PaymentReceipt =>
  Object.freeze({ amount, version: s.state.version, paidByDevice: s.state.paidByDevice, paymentId });
const groupTotal = (g: PayGroup): bigint => g.amount * BigInt(g.count) + g.other;

/**
 * A sync the hub refused or did not answer is asked again this much later, while connected (by attempt); a frozen
 * channel's probe write is tried again as often.
 */
const RETRY_MS = [100, 250, 500, 1000, 2000];
/** Answers to a sync request: the hub's sync, or its refusal of it (a frozen channel refuses with STORE_FAILURE). */
const SYNC_ANSWERS: ReadonlySet<Message['t']> = new Set(['sync', 'reject', 'error']);
/**
 * A device's own payments' states are written behind at most this often: one write holds every state acked
 * meanwhile. Each write costs the device CPU and two wake-ups (its timer, the write's completion) whatever it holds,
 * and losing the newest of these states costs nothing (see the class doc), so they are written rarely; a state in
 * which the device receives money is written before it is countersigned, whatever this says.
 */
const BEHIND_MS = 1000;

const defaultRandom = (n: number): Uint8Array => globalThis.crypto.getRandomValues(new Uint8Array(n));

/**
 * One channel as a device sees it: a thin shell around the protocol's channel engine (decode → step → persist →
 * act). `pay` calls made in one turn, or while updates are in flight, coalesce into the next state. A payment
 * resolves when the hub's countersigned ack arrives (the hub made it durable first); the device writes its own
 * payments' states behind, in groups. A state in which the device receives money is durable on the device before
 * it countersigns. A failed write freezes the channel with `STORE_FAILURE` until a probe write succeeds.
 */
/** A signature's shape, for checking that a route can be encoded before anything is signed. */
const NO_SIG = new Uint8Array(65);

/** Payment ids a channel remembers having reported, so that none is reported twice. */
const REPORTED_IDS = 4096;

/** How many `DeviceChannelRecord.paidPreimages` a record keeps: the newest. */
export const PAID_PREIMAGES_KEPT = 32;

export class ClientChannel {
  readonly channelId: ChannelId;
  #ch: EngineChannel;
  #closing: DeviceChannelRecord['closing'];
  #record: DeviceChannelRecord | undefined;
  readonly #deps: ChannelDeps;
  readonly #crypto: EngineCrypto;
  readonly #callers = new Map<number, Waiter>();
  /** Plain payments grouped by turn (see {@link PayGroup}), by the group's ref; `#grouped` counts their callers. */
  readonly #groups = new Map<number, PayGroup>();
  #grouped = 0;
  /** The group this turn's plain payments join (the last entry of `#buffer`), until a routed one or the flush. */
  #open: PayGroup | undefined;
  /**
   * How many more payments of `#fitAmount` the channel can afford, exact as of the engine channel `#fitFor` and
   * counted down per payment: a run of equal payments needs no bigint arithmetic each. Recomputed when the channel
   * value changed, for another amount, after a routed payment, and when it runs out.
   */
  #fit = 0;
  #fitAmount: bigint | undefined;
  #fitFor: EngineChannel | undefined;
  /** The total of `pay` events handed to the engine's queue of events and not stepped yet. */
  #unstepped = 0n;
  readonly #closeCallers = new Map<number, Waiter>();
  #ref = 0;
  /** `pay` calls of this turn, stepped together (plain ones as groups). */
  #buffer: (PayIntent | PayGroup)[] = [];
  #events: (EngineEvent | SyncRefused)[] = [];
  /** The hub refused our last sync (its channel is frozen): payments waiting for the sync are answered with this. */
  #hubRefusal: TrickleError | undefined;
  #syncing = false;
  #resyncAttempt = 0;
  #resyncTimer: ReturnType<typeof setTimeout> | undefined;
  /** Hub proposals that arrived before the sync reply. */
  readonly #deferred: EngineEvent[] = [];
  #busy = false;
  #frozen: unknown = undefined;
  /** Wire ids of our proposals → the engine's ids (the connection numbers its own requests). */
  readonly #wireIds = new Map<number, number>();
  /** Saves run one at a time, in order; a write-behind save is coalesced into the next. */
  #saving: Promise<void> = Promise.resolve();
  /** The timer of the write-behind waiting for its turn, if one is. */
  #behindTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #listeners = new Set<(p: IncomingPayment) => void>();
  /** Payment ids reported to the listeners lately (oldest first, at most {@link REPORTED_IDS}): each is told once. */
  readonly #reported = new Set<Bytes32>();
  readonly #lockListeners = new Set<(p: ConditionalPayment) => void>();
  /** Outcomes awaited by conditional payments of ours, by lock hash. */
  readonly #outcomes = new Map<
    Bytes32,
    { resolve: (o: ConditionalOutcome) => void; reject: (e: TrickleError) => void }
  >();
  readonly #claimCallers = new Map<number, Waiter>();
  /** Preimages of locks the hub pays this device that it claimed: in the record before the claim leaves (see `claim`). */
  readonly #preimages = new Map<Bytes32, Bytes32>();
  /** Preimages the hub showed to claim locks of ours: in the record with the state that pays the claim (oldest first). */
  #paidPreimages: NonNullable<DeviceChannelRecord['paidPreimages']> = [];
  readonly #outcomeListeners = new Set<(s: ConditionalSettlement) => void>();
  /** The state the engine's `refused` names (the engine keeps its version): in the record while it is not void. */
  #refusedState: State | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Equivocation evidence kept in the record (the engine's evidence writes). */
  #evidence: NonNullable<DeviceChannelRecord['evidence']> = [];
  /** When {@link #timer} fires (ms). */
  #timerAt = 0;
  /** The last check {@link latest} made: of which unchecked state, over which latest, and what it gave. */
  #read: { of: SignedState; base: SignedState; checked: SignedState } | undefined;

  constructor(record: DeviceChannelRecord, deps: ChannelDeps) {
    this.channelId = record.channelId;
    this.#deps = deps;
    const ctx = channelContext(record.params, record.funding);
    const digests = new WeakMap<State, Uint8Array>();
    // A marker this device cannot have signed (above its signing ceiling, or of another channel: a corrupted or edited
    // record) is no state to void: none both signed could ever pass it.
    const refused =
      record.refused !== undefined &&
      record.refused.channelId === record.channelId &&
      record.refused.version <= record.signedVersion
        ? record.refused
        : undefined;
    this.#crypto = {
      digest: (s) => {
        let d = digests.get(s);
        if (!d) digests.set(s, (d = stateDigest(ctx.separator, s, deps.keccak)));
        return d;
      },
      sign: (d) => deps.signer.signDigest(d),
      recover: (d, sig) => deps.verifier.recoverAddress(d, sig),
    };
    this.#ch = createEngineChannel(
      {
        role: 'device',
        ctx,
        latest: record.latest,
        locks: record.locks,
        signedVersion: record.signedVersion,
        refused: refused?.version,
        givenBack: record.givenBack,
        evidenceCount: record.evidence?.length,
        needsSync: true,
        config: { maxInFlight: deps.maxInFlight, yieldMs: deps.yieldMs, routeTimeoutMs: deps.routeTimeoutMs },
      },
      deviceRules,
    );
    this.#closing = record.closing;
    this.#refusedState = refused;
    this.#evidence = record.evidence ?? [];
    this.#paidPreimages = record.paidPreimages ?? [];
    this.#record = record;
    for (const p of record.preimages ?? []) this.#preimages.set(p.hash, p.preimage);
    // Claims made before a restart are shown again (the engine keeps them only in memory); one whose lock expired
    // meanwhile is refused here, and the stored preimage still refuses the lock's return (see #beforeCredit).
    if (record.closing === undefined)
      for (const [hash, preimage] of this.#preimages) {
        const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
        this.#push({ type: 'claim', ref, hash, preimage });
      }
  }

  /** The durable record (latest fully signed state and parameters). */
  get record(): DeviceChannelRecord {
    return (this.#record ??= this.#recordOf(this.#ch));
  }

  #recordOf(ch: EngineChannel): DeviceChannelRecord {
    return {
      params: ch.ctx.params,
      channelId: ch.ctx.channelId,
      funding: ch.ctx.funding,
      latest: ch.latest,
      signedVersion: ch.reservedVersion > ch.signedVersion ? ch.reservedVersion : ch.signedVersion, // the durable ceiling: after a restart it signs only above it
      ...(this.#closing ? { closing: this.#closing } : {}),
      ...(ch.locks.length > 0 ? { locks: ch.locks } : {}),
      ...this.#preimagesOf(ch.locks),
      ...(this.#evidence.length > 0 ? { evidence: this.#evidence } : {}),
      ...(this.#paidPreimages.length > 0 ? { paidPreimages: this.#paidPreimages } : {}),
      ...(ch.givenBack ? { givenBack: ch.givenBack } : {}),
      ...(ch.refused !== undefined &&
      ch.refused >= ch.latest.state.version &&
      this.#refusedState !== undefined &&
      this.#refusedState.version >= ch.latest.state.version &&
      this.#refusedState.version <= ch.refused
        ? { refused: this.#refusedState }
        : {}),
    };
  }

  /** The stored preimages of locks still pending toward this device (a claimed or returned lock's is dropped). */
  #preimagesOf(locks: readonly Lock[]): Pick<DeviceChannelRecord, 'preimages'> {
    if (this.#preimages.size === 0) return {};
    const preimages: { hash: Bytes32; preimage: Bytes32 }[] = [];
    for (const l of locks) {
      const preimage = l.payer === 'hub' ? this.#preimages.get(l.hash) : undefined;
      if (preimage !== undefined) preimages.push({ hash: l.hash, preimage });
    }
    return preimages.length > 0 ? { preimages } : {};
  }

  /**
   * Latest state both parties signed, the hub's signature checked: an ack of the device's own payment is checked lazily
   * (see the engine's `EngineChannel.unchecked`), so reading this checks the newest one now (two signature recoveries)
   * unless the channel did already; a state is checked once however often it is read. A payment's own figures are in its receipt.
   */
  get latest(): SignedState {
    const { unchecked, latest } = this.#ch;
    if (!unchecked) return latest;
    // Each state is checked once, however often this is read (a display reading it per payment).
    const r = this.#read;
    if (r?.of !== unchecked || r.base !== latest)
      this.#read = { of: unchecked, base: latest, checked: checkedLatest(this.#ch, this.#crypto) };
    return this.#read!.checked;
  }

  /** Whether the channel is frozen by a failed store write. */
  get frozen(): boolean {
    return this.#frozen !== undefined;
  }

  /**
   * Pay the hub (or, with `to`, another device through the hub).
   * @param amount - base units, > 0
   * @param options.to - route the payment to this device; resolves once the payee has countersigned it
   * @param options.paymentId - with `to`: the routed payment's id (32 bytes, unique; random when omitted), for a caller
   *   that records the payment before it is sent (`payForReceipt`)
   * @param options.receipt - with `to`: ask the hub for a signed payment receipt (see `TrickleClient.payForReceipt`)
   * @param options.stream - with `to`: stream metadata the payee is told about (see `openStream`)
   * @param options.lock - a conditional payment: locked on `hash` (keccak256 of a 32-byte preimage) for `expiresIn`
   *   seconds; returns a {@link ConditionalPaymentHandle} (`locked`, then `claimed` with the preimage or `refunded`).
   *   With `to`, the hub forwards it as a lock expiring earlier (refused with `EXPIRY_TOO_SHORT` when too short).
   *   At most 14 days (`LIMIT_EXCEEDED` beyond: on-chain settlement waits for a pending lock's expiry)
   * @returns a receipt once the hub has countersigned (and so made durable) a state including it (plain payments of one
   *   amount made in one turn may get the same promise)
   * @throws TrickleError INSUFFICIENT_FUNDS / NO_ROUTE / LIMIT_EXCEEDED / CHANNEL_FINAL / STORE_FAILURE / TOO_MANY_LOCKS /
   *   DISCONNECTED (after `TrickleClient.disconnect()` or when reconnects are given up: a payment still waiting then gets
   *   it too, `details.inFlight` saying whether it had left the device — the next connect's sync shows if it was paid) …
   * @example
   * ```ts
   * await channel.pay(1_000n); // 0.001 USDT
   * ```
   */
  pay(
    amount: bigint,
    options: { to?: AddressInput; lock: { hash: Bytes32; expiresIn: number } },
  ): ConditionalPaymentHandle;
  pay(
    amount: bigint,
    options?: {
      to?: AddressInput;
      paymentId?: Bytes32;
      escrowFor?: Bytes32;
      receipt?: ReceiptRequest;
      stream?: StreamTick;
    },
  ): Promise<PaymentReceipt>;
  pay(
    amount: bigint,
    options?: {
      to?: AddressInput;
      paymentId?: Bytes32;
      escrowFor?: Bytes32;
      receipt?: ReceiptRequest;
      stream?: StreamTick;
      lock?: { hash: Bytes32; expiresIn: number };
    },
  ): Promise<PaymentReceipt> | ConditionalPaymentHandle {
    if (options?.lock) return this.#payConditional(amount, options.lock, options.to);
    return this.#pay(amount, options);
  }

  /**
   * A conditional payment: a lock of `amount` on `lock.hash` for `lock.expiresIn` seconds (with `to`, routed: the
   * hub locks toward the payee with an earlier expiry and claims ours with the payee's preimage).
   */
  #payConditional(
    amount: bigint,
    lock: { hash: Bytes32; expiresIn: number },
    to: AddressInput | undefined,
  ): ConditionalPaymentHandle {
    let expiresAt = 0n;
    let locked: Promise<PaymentReceipt>;
    let result: Promise<ConditionalOutcome>;
    if (!Number.isSafeInteger(lock.expiresIn) || lock.expiresIn <= 0) {
      locked = Promise.reject(
        new TrickleError('INVALID_ARGUMENT', 'lock.expiresIn must be a positive whole number of seconds'),
      );
      result = locked as unknown as Promise<ConditionalOutcome>;
    } else if (this.#outcomes.has(lock.hash)) {
      locked = Promise.reject(new TrickleError('INVALID_ARGUMENT', 'a conditional payment with this hash is pending'));
      result = locked as unknown as Promise<ConditionalOutcome>;
    } else {
      expiresAt = BigInt(Math.floor(Date.now() / 1000) + lock.expiresIn);
      result = new Promise<ConditionalOutcome>((resolve, reject) => this.#outcomes.set(lock.hash, { resolve, reject }));
      locked = this.#pay(amount, { to }, { hash: lock.hash, expiry: expiresAt });
      locked.catch((e: unknown) => {
        const o = this.#outcomes.get(lock.hash);
        this.#outcomes.delete(lock.hash);
        o?.reject(isTrickleError(e) ? e : new TrickleError('INTERNAL', 'conditional payment failed'));
      });
    }
    result.catch(() => undefined); // a caller watching only `locked` sees the same error there
    return { hash: lock.hash, expiresAt, amount, locked, result, then: (a, b) => result.then(a, b) };
  }

  #pay(
    amount: bigint,
    options?: {
      to?: AddressInput;
      paymentId?: Bytes32;
      escrowFor?: Bytes32;
      receipt?: ReceiptRequest;
      stream?: StreamTick;
    },
    lock?: { hash: Bytes32; expiry: bigint },
  ): Promise<PaymentReceipt> {
    if (typeof amount !== 'bigint' || amount <= 0n)
      return Promise.reject(new TrickleError('INVALID_ARGUMENT', 'amount must be a positive bigint'));
    if (this.#frozen !== undefined) return Promise.reject(storeFailure(this.#frozen));
    if (this.#closing || this.#ch.latest.state.isFinal)
      return Promise.reject(
        new TrickleError('CHANNEL_FINAL', 'the channel is closing or closed: it takes no more payments'),
      );
    // A client closed for good (disconnect()) never reconnects: a payment would wait forever.
    if (this.#deps.connection.closed)
      return Promise.reject(new TrickleError('DISCONNECTED', 'the client was disconnected: connect again to pay'));
    // The hub refused our last sync: ask again now; the payment goes with it, or fails with the hub's refusal.
    if (this.#hubRefusal !== undefined) this.#syncNow();
    const plain = lock === undefined && options?.to === undefined && options?.escrowFor === undefined;
    if (!(plain && this.#fit > 0 && amount === this.#fitAmount && this.#fitFor === this.#ch)) {
      const available = this.#room();
      if (amount > available)
        return Promise.reject(
          new TrickleError('INSUFFICIENT_FUNDS', 'not enough balance in the channel', { details: { available } }),
        );
      const fit = available / amount;
      this.#fit = fit > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(fit);
      this.#fitAmount = amount;
      this.#fitFor = plain ? this.#ch : undefined; // a routed payment's amount leaves with it: count again after it
    }
    this.#fit--;
    if (plain) return this.#payPlain(amount);
    let to: Address | undefined;
    try {
      to = options?.to === undefined ? undefined : toAddressInput(options.to, 'to');
    } catch (e) {
      return Promise.reject(e);
    }
    const route: RouteInstruction | undefined = to
      ? {
          to,
          amount,
          paymentId: options?.paymentId ?? (toHex((this.#deps.randomBytes ?? defaultRandom)(32)) as string as Bytes32),
          receipt: options?.receipt,
          stream: options?.stream,
        }
      : undefined;
    // A receipt request or stream tick the wire cannot carry, or the hub's decoder would refuse (a stream's total
    // below this payment), is refused here: once queued, its state would be signed and then fail to encode, and the
    // payment could neither leave nor be answered. The encoder refuses all of it (it applies the decoder's rules).
    if (route?.receipt !== undefined || route?.stream !== undefined || options?.paymentId !== undefined)
      try {
        encodeFrame({ t: 'update', id: 1, state: this.#ch.latest.state, sig: NO_SIG, route });
      } catch (e) {
        const why = isTrickleError(e) ? e.shortMessage : String(e);
        return Promise.reject(new TrickleError('INVALID_ARGUMENT', `route: ${why}`, { cause: e }));
      }
    // So is an escrow id that is no 32 bytes of hex (the update carries it as its paymentId): signed and queued, it
    // could not be sent, and every payment after it would wait behind it.
    const escrowFor = route ? undefined : options?.escrowFor;
    if (escrowFor !== undefined)
      try {
        encodeFrame({ t: 'update', id: 1, state: this.#ch.latest.state, sig: NO_SIG, paymentId: escrowFor });
      } catch (e) {
        const why = isTrickleError(e) ? e.shortMessage : String(e);
        return Promise.reject(new TrickleError('INVALID_ARGUMENT', `escrowFor: ${why}`, { cause: e }));
      }
    const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
    const promise = new Promise<PaymentReceipt>((resolve, reject) =>
      this.#callers.set(ref, { resolve: (s) => resolve(receiptOf(amount, s, route?.paymentId)), reject }),
    );
    if (this.#buffer.length === 0) queueMicrotask(this.#flush);
    this.#buffer.push({ ref, amount, route, escrowFor, lock });
    this.#open = undefined; // plain payments after this one form a new group: the order of the turn is kept
    return promise;
  }

  /** A plain payment (checked and counted by `#pay`): joins this turn's group. */
  #payPlain(amount: bigint): Promise<PaymentReceipt> {
    const g = this.#open ?? this.#openGroup(amount);
    this.#grouped++;
    if (amount === g.amount) {
      g.count++;
      return g.paid;
    }
    g.other += amount;
    g.others++;
    return g.done.then((s) => receiptOf(amount, s));
  }

  #openGroup(amount: bigint): PayGroup {
    const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
    let resolve!: (s: SignedState) => void;
    let reject!: (e: TrickleError) => void;
    const done = new Promise<SignedState>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const paid = done.then((s) => receiptOf(amount, s));
    const g: PayGroup = { ref, done, resolve, reject, amount, count: 0, other: 0n, others: 0, paid };
    this.#groups.set(ref, g);
    if (this.#buffer.length === 0) queueMicrotask(this.#flush);
    this.#buffer.push(g);
    this.#open = g;
    return g;
  }

  /** What the device can still pay: the engine's figure less this turn's payments and those not stepped yet. */
  #room(): bigint {
    let room = availableToPay(this.#ch) - this.#unstepped;
    for (const p of this.#buffer) room -= 'done' in p ? groupTotal(p) : p.amount;
    return room;
  }

  /**
   * Pay by the second: a {@link PaymentStream} on top of `pay()` with `pause`, `resume`, `adjust`, `stop`, `paid`
   * and `depletesAt`; with `to`, the payee follows it with `onStream`.
   * @throws TrickleError INVALID_RATE / STREAM_DEPLETES / INSUFFICIENT_FUNDS (maxTotal above the balance) /
   *   INVALID_ARGUMENT (`to` not an address, `tickMs`, `stallMs`, `maxTotal`)
   * @example
   * ```ts
   * const s = channel.stream({ to: charger, ratePerSecond: 50n, maxTotal: 100_000n });
   * ```
   */
  stream(options: StreamOptions): PaymentStream {
    return new PaymentStream(this, options);
  }

  readonly #flush = (): void => {
    const buffered = this.#buffer;
    if (buffered.length === 0) return;
    this.#buffer = [];
    this.#open = undefined;
    const pays: PayIntent[] = [];
    for (const p of buffered) {
      const intent = 'done' in p ? { ref: p.ref, amount: groupTotal(p) } : p;
      this.#unstepped += intent.amount;
      pays.push(intent);
    }
    this.#push({ type: 'pay', pays });
  };

  /**
   * Subscribe to conditional payments toward this device (locks the hub added, durable here): claim one with
   * `p.claim(preimage)` before `p.expiresAt`. @returns an unsubscribe function
   * @example
   * ```ts
   * channel.onConditionalPayment((p) => void p.claim(key));
   * ```
   */
  onConditionalPayment(listener: (p: ConditionalPayment) => void): () => void {
    this.#lockListeners.add(listener);
    return () => this.#lockListeners.delete(listener);
  }

  /**
   * Subscribe to the outcomes of this device's conditional payments: each of its locks that leaves the channel, claimed
   * (with the preimage) or refunded — also one no handle waits for (paid before a restart, or by a client since
   * disconnected, whose handle was answered `DISCONNECTED`). One that ended before this call: see {@link preimageOf}.
   * @returns an unsubscribe function
   * @example
   * ```ts
   * channel.onConditionalOutcome((o) => {
   *   if (o.status === 'claimed') keys.set(o.hash, o.preimage);
   * });
   * ```
   */
  onConditionalOutcome(listener: (s: ConditionalSettlement) => void): () => void {
    this.#outcomeListeners.add(listener);
    return () => this.#outcomeListeners.delete(listener);
  }

  /**
   * The preimage the hub showed to claim a lock this device paid (`pay(amount, { lock })`): the key a buyer paid for.
   * It is in the channel's record before the state that pays the claim leaves the device, so a client started later on
   * the same store (after a crash, a restart or `disconnect()`) gives it too. The newest 32 are kept.
   * @returns the preimage, or undefined when the hub has not claimed that lock here (pending, refunded, unknown, or
   *   older than the newest 32)
   * @example
   * ```ts
   * const key = channel.preimageOf(offer.hash);
   * ```
   */
  preimageOf(hash: Bytes32): Bytes32 | undefined {
    return this.#paidPreimages.find((p) => p.hash === hash)?.preimage;
  }

  /** The pending locks of the latest fully signed state (both directions). */
  get locks(): readonly Lock[] {
    return this.#ch.locks;
  }

  /**
   * Show the preimage of a lock the hub pays this device. The preimage is written to the channel's record first, so
   * the claim survives a restart, and the device (with a chain) or a watchtower reading its store can reveal it
   * on-chain if the hub does not countersign the claim in time.
   * @returns the state that pays it, once durable
   * @throws TrickleError BAD_PREIMAGE / UNKNOWN_LOCK / LOCK_EXPIRED / STORE_FAILURE / INVALID_ARGUMENT (this device gave
   *   the lock back in a state the hub may still register: claim once a state both signed reaches it)
   */
  claim(hash: Bytes32, preimage: Bytes32): Promise<SignedState> {
    if (this.#frozen !== undefined) return Promise.reject(storeFailure(this.#frozen));
    if (!this.#preimages.has(hash)) {
      const short = this.#tooShort(
        this.#ch.locks.find((l) => l.hash === hash && l.payer === 'hub'),
        true,
      );
      if (short) return Promise.reject(short);
    }
    if (!this.#preimages.has(hash) && this.#claimable(hash, preimage)) {
      // Durable before it is shown: the hub may take the money and vanish before countersigning the claim.
      this.#preimages.set(hash, preimage);
      this.#record = undefined;
      return this.#save(() => this.record).then(
        () => this.#claimNow(hash, preimage),
        (e: unknown) => {
          this.#preimages.delete(hash);
          this.#record = undefined;
          throw storeFailure(e);
        },
      );
    }
    return this.#claimNow(hash, preimage);
  }

  /**
   * Give back a lock the hub pays this device, before its expiry: this device will not claim it (a seller that cannot
   * deliver after all). The lock leaves the channel and nothing moves; the hub, paying nothing for its route, gives the
   * payer's lock behind it back to the payer at once instead of at its expiry. Resolves once the hub countersigned.
   * @throws TrickleError UNKNOWN_LOCK (no such lock toward this device) / LOCK_CLAIMED (this device showed its
   *   preimage: it is claimed) / INVALID_ARGUMENT (already being given back) / CHANNEL_NOT_OPEN / STORE_FAILURE
   */
  giveBack(hash: Bytes32): Promise<SignedState> {
    if (this.#frozen !== undefined) return Promise.reject(storeFailure(this.#frozen));
    if (this.#preimages.has(hash))
      return Promise.reject(new TrickleError('LOCK_CLAIMED', 'this device showed the lock’s preimage: it claims it'));
    const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
    const p = new Promise<SignedState>((resolve, reject) => this.#claimCallers.set(ref, { resolve, reject }));
    this.#push({ type: 'give-back', ref, hash });
    return p;
  }

  /**
   * The refusal of a lock toward this device with less than `minLockSeconds` left, by this device's clock (a claim of
   * one already past its expiry is left to the engine's `LOCK_EXPIRED`): showing its preimage now would give the goods
   * away with too little time to reveal it on-chain should the hub not countersign the claim.
   */
  #tooShort(lock: { readonly expiry: bigint } | undefined, claim: boolean): TrickleError | undefined {
    const min = BigInt(this.#deps.minLockSeconds ?? 0);
    if (lock === undefined || min <= 0n) return undefined;
    const now = BigInt(Math.floor(Date.now() / 1000));
    if ((claim && now > lock.expiry) || lock.expiry - now >= min) return undefined;
    return new TrickleError('EXPIRY_TOO_SHORT', `the lock expires in ${lock.expiry - now} s, under ${min} s`, {
      details: { expiry: lock.expiry, now, minLockSeconds: min },
    });
  }

  /**
   * Whether the engine would take this claim now (otherwise it answers with the typed refusal, and nothing is stored):
   * its own rule (`claimRefusal`), so a preimage the engine would not show — a lock being given back, or given back in
   * a state the hub may still register (the engine's `givenBack`, kept in the record) — is not written where the lock
   * guard would reveal it.
   */
  #claimable(hash: Bytes32, preimage: Bytes32): boolean {
    // As the engine will judge it: the hub's signature on an ack not checked yet is checked first (one that fails is
    // dropped, and with it the state that would have passed a give-back of this lock).
    const ch =
      this.#ch.unchecked && this.latest !== this.#ch.unchecked ? { ...this.#ch, unchecked: undefined } : this.#ch;
    return claimRefusal(ch, hash, preimage, BigInt(Math.floor(Date.now() / 1000))) === undefined;
  }

  #claimNow(hash: Bytes32, preimage: Bytes32): Promise<SignedState> {
    const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
    const p = new Promise<SignedState>((resolve, reject) => this.#claimCallers.set(ref, { resolve, reject }));
    this.#push({ type: 'claim', ref, hash, preimage });
    return p;
  }

  /** Subscribe to incoming payments. @returns an unsubscribe function */
  onPayment(listener: (p: IncomingPayment) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Balances from the latest fully signed state and what is pending. */
  balance(): ChannelBalance {
    const s = this.latest.state;
    const deposit = this.#ch.ctx.funding.device;
    return {
      deposit,
      paid: s.paidByDevice,
      received: s.paidByHub,
      settled: deposit - s.paidByDevice + s.paidByHub,
      available: this.#room(),
    };
  }

  /** Payments queued or in flight. */
  get pendingPayments(): number {
    return this.#callers.size + this.#grouped;
  }

  /** New on-chain funding (a top-up) was seen; resolves once durable. */
  setFunding(funding: Funding): Promise<void> {
    return this.#await({ type: 'funding', funding });
  }

  /** Frames for this channel from the connection. */
  receive(frame: Frame): void {
    switch (frame.t) {
      case 'claim': {
        const ev = {
          type: 'peer-claim',
          id: frame.id,
          hash: frame.unlock.hash,
          preimage: frame.unlock.preimage,
        } as const;
        // A claim of our lock past its expiry stands if the preimage was on-chain by then: read the registry first.
        const lock = this.#ch.locks.find((l) => l.hash === ev.hash && l.payer === 'device');
        const revealedAt = this.#deps.revealedAt;
        if (lock && revealedAt && BigInt(Math.floor(Date.now() / 1000)) > lock.expiry) {
          revealedAt(ev.hash).then(
            (at) => this.#push({ ...ev, revealedAt: at }),
            () => this.#push(ev), // unread: refused as expired; the hub shows the claim again later
          );
          return;
        }
        this.#push(ev);
        return;
      }
      case 'ack':
        this.#wireIds.delete(frame.id);
        this.#push({ type: 'peer-ack', id: frame.id, version: frame.version, sig: frame.sig });
        return;
      case 'reject': {
        const id = this.#wireIds.get(frame.id);
        if (id === undefined) return;
        this.#wireIds.delete(frame.id);
        this.#push({ type: 'peer-reject', id, code: frame.code, message: frame.message, wireCode: frame.wireCode });
        return;
      }
      case 'update':
        this.#push({
          type: 'peer-updates',
          updates: [
            {
              id: frame.id,
              state: frame.state,
              sig: frame.sig,
              paymentId: frame.paymentId,
              lock: frame.lock,
              unlock: frame.unlock,
            },
          ],
        });
        return;
      case 'sync': {
        let locks: Lock[] | undefined;
        try {
          locks = frame.locks ? decodeLocks(frame.locks) : undefined;
        } catch {
          locks = undefined; // a malformed list cannot match the state's commitment: the state is not adopted
        }
        this.#push({ type: 'peer-sync', id: frame.id, latest: frame.latest, locks });
        return;
      }
    }
  }

  /** A routed payment's outcome. */
  receipt(paymentId: Bytes32, delivered: boolean): void {
    this.#push({ type: 'receipt', paymentId, delivered });
  }

  /** The connection dropped: nothing is proposed until the next sync. */
  disconnected(): void {
    clearTimeout(this.#resyncTimer);
    this.#resyncTimer = undefined;
    this.#push({ type: 'disconnected' });
  }

  /**
   * After (re)connecting: exchange latest states with the hub, then resend what is in flight. A sync the hub refuses
   * (its channel is frozen by a store failure) answers every payment and close waiting for it with the hub's code;
   * a refused or unanswered sync is asked again while connected, so the channel resumes once the hub thaws.
   * @throws TrickleError DISCONNECTED (the next reconnect syncs) / TIMEOUT / the hub's refusal code
   */
  async resync(): Promise<void> {
    clearTimeout(this.#resyncTimer);
    this.#resyncTimer = undefined;
    this.#syncing = true;
    try {
      this.#push({ type: 'connected' });
      const c = this.#deps.connection;
      let reply: Message;
      try {
        const frame = { ...(syncFrame(this.#ch, 0) as Extract<Message, { t: 'sync' }>), id: c.id() };
        reply = await c.request(frame, undefined, SYNC_ANSWERS);
      } catch (e) {
        const error = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'sync failed', { cause: e });
        if (error.code === 'DISCONNECTED') throw error;
        if (error.code !== 'TIMEOUT') this.#refused(error); // the hub's error frame
        this.#resyncLater();
        throw error;
      }
      if (reply.t === 'reject') {
        const error = peerError(reply, 'the hub refused the sync');
        this.#refused(error);
        this.#resyncLater();
        throw error;
      }
      if (reply.t === 'sync') {
        this.#hubRefusal = undefined;
        this.#resyncAttempt = 0;
        this.receive(reply);
      }
    } finally {
      this.#syncing = false;
    }
  }

  #refused(error: TrickleError): void {
    this.#hubRefusal = error;
    this.#push({ type: 'sync-refused', error });
  }

  /** Ask again for a sync the hub refused or did not answer (a reconnect asks by itself). */
  #resyncLater(): void {
    if (this.#resyncTimer !== undefined) return;
    const delay = RETRY_MS[Math.min(this.#resyncAttempt++, RETRY_MS.length - 1)]!;
    this.#resyncTimer = setTimeout(() => {
      this.#resyncTimer = undefined;
      this.#syncNow();
    }, delay);
    this.#resyncTimer.unref?.();
  }

  #syncNow(): void {
    if (this.#syncing || this.#ch.synced || this.#closing || !this.#deps.connection.ready) return;
    // Its failures are answered inside: callers waiting for the sync are told, and the next attempt is armed.
    this.resync().catch(() => undefined);
  }

  /** Stop accepting payments (a force close is starting); queued ones fail. Resolves once durable. */
  async markClosing(mode: 'cooperative' | 'force'): Promise<void> {
    this.#closing = mode;
    this.#record = undefined;
    this.#flush();
    if (mode === 'force') await this.#await({ type: 'chain-status', status: 'closing' });
    else await this.#save(() => this.record);
  }

  /**
   * The version of a state this device signed that the hub refused and still holds, paying the hub more than
   * {@link latest}, while no state both signed above it voids it (see the engine's `EngineChannel.refused`): the hub
   * could register it on-chain, so its payment over `latest` is the device's exposure. Undefined when there is none.
   */
  get unvoided(): bigint | undefined {
    const v = this.#ch.refused;
    return v !== undefined && v >= this.latest.state.version ? v : undefined;
  }

  /**
   * Wait, at most `timeoutMs`, until no refused state is left to void ({@link unvoided}). The engine proposes the state
   * that voids it (nothing moves) once the channel is idle; with nothing in flight, a sync asks for it again (the hub
   * may have refused or lost the first). @returns whether none is left
   */
  async voidRefused(timeoutMs: number): Promise<boolean> {
    const until = Date.now() + timeoutMs;
    // A failed sync is answered inside (and tried again); what counts is whether the state is void, read below.
    if (this.unvoided !== undefined && this.#ch.proposals.length === 0 && this.#deps.connection.ready)
      this.resync().catch(() => undefined);
    // Waiting, the newest state the hub acked is read as it is; its signature is checked once, at the end.
    const open = (v = this.#ch.refused): boolean =>
      v !== undefined && v >= (this.#ch.unchecked ?? this.#ch.latest).state.version;
    while (open() && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    return this.unvoided === undefined;
  }

  /** Wait until no payment is queued or in flight (for close). */
  async idle(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.#buffer.length + this.#ch.queue.length + this.#ch.proposals.length > 0 || this.#busy) {
      if (Date.now() > until) throw new TrickleError('TIMEOUT', 'payments still in flight');
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /**
   * Propose the final state (cooperative close) once nothing is in flight. Two calls make one close.
   * @returns the final state both signed, durable
   * @throws TrickleError with the hub's refusal code (e.g. PENDING_CREDITS), or STORE_FAILURE
   */
  closeCooperative(): Promise<SignedState> {
    if (this.#frozen !== undefined) return Promise.reject(storeFailure(this.#frozen));
    if (this.#hubRefusal !== undefined) this.#syncNow();
    this.#flush();
    const ref = (this.#ref = (this.#ref % 0x7fffffff) + 1);
    const p = new Promise<SignedState>((resolve, reject) => this.#closeCallers.set(ref, { resolve, reject }));
    this.#push({ type: 'close', ref });
    return p;
  }

  /** Step an event that must end durable; resolves when it is (or rejects with STORE_FAILURE). */
  #await(ev: EngineEvent): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#push(ev, { resolve, reject });
    });
  }

  #push(ev: EngineEvent | SyncRefused, done?: { resolve: () => void; reject: (e: TrickleError) => void }): void {
    this.#events.push(done ? ({ ...ev, done } as unknown as EngineEvent) : ev);
    if (!this.#busy) void this.#drain();
  }

  async #drain(): Promise<void> {
    this.#busy = true;
    try {
      while (this.#events.length > 0) {
        const next = this.#events.shift()!;
        if (next.type === 'sync-refused') {
          if (!this.#ch.synced) this.#failUnsynced(next.error);
          continue;
        }
        const ev = next as EngineEvent & {
          done?: { resolve: () => void; reject: (e: TrickleError) => void };
        };
        if (ev.type === 'peer-updates' && !this.#ch.synced) {
          // Nothing is countersigned before the hub answered our sync (a state signed just before a crash may not
          // be in our store): hold the proposal until then (bounded; the hub proposes it again otherwise).
          if (this.#deferred.length < 64) this.#deferred.push(ev);
          continue;
        }
        if (ev.type === 'peer-updates') {
          const verdict = await this.#beforeCredit(ev.updates[0]!);
          if (verdict === 'refused') continue;
          if (verdict !== 'ok') {
            this.#events.unshift(verdict, ev); // the fresher deposits first, then the credit
            continue;
          }
        }
        const r = step(this.#ch, ev, { crypto: this.#crypto, now: Date.now() });
        // The hub refused a state of ours it may hold: the engine names its version, the record keeps the state (the
        // step's gated write), so a restarted device and `trickle force-close` can tell what it pays the hub.
        // The hub holds every refused state not yet void and may register any of them: it takes the one that pays it
        // the most, not the newest, so the record keeps that one (a state both signed above the newest voids them all).
        if (r.channel.refused !== undefined && r.channel.refused !== this.#ch.refused) {
          const s = this.#ch.proposals.find((p) => p.state.version === r.channel.refused)?.state;
          const kept = this.#refusedState;
          const open =
            kept !== undefined && this.#ch.refused !== undefined && kept.version >= r.channel.latest.state.version;
          if (s && !(open && hubTake(kept) > hubTake(s))) this.#refusedState = s;
        }
        // A pay event's amounts count as unstepped until the channel holding them is adopted (or they are answered).
        let stepped = 0n;
        if (ev.type === 'pay') for (const p of ev.pays) stepped += p.amount;
        const persist = r.effects[0]?.type === 'persist' ? r.effects[0] : undefined;
        if (persist?.gate || (ev.done && r.channel !== this.#ch)) {
          // Evidence of an equivocation (the engine's evidence writes) goes into the record with the step's write, and
          // so does the preimage the hub showed to claim a lock of ours, with the state this step signs to pay it: the
          // key a buyer paid for is on disk before the payment can leave.
          const evidenceBefore = this.#evidence;
          const paidBefore = this.#paidPreimages;
          for (const w of persist?.writes ?? [])
            if (w.kind === 'evidence')
              this.#evidence = [...this.#evidence, { version: w.version, held: w.held, offered: w.offered }];
            else if (w.kind === 'preimage')
              this.#paidPreimages = [
                ...this.#paidPreimages.filter((p) => p.hash !== w.hash),
                { hash: w.hash, preimage: w.preimage },
              ].slice(-PAID_PREIMAGES_KEPT);
          try {
            // The step takes effect as its write lands, before any write queued behind it reads the record.
            await this.#save(this.#recordOf(r.channel), () => {
              this.#ch = r.channel;
              this.#record = undefined;
            });
          } catch (e) {
            // Nothing of this step takes effect: the channel stays as it was, and everyone waiting is told.
            this.#evidence = evidenceBefore;
            this.#paidPreimages = paidBefore;
            this.#unstepped -= stepped;
            this.#freeze(e, ev);
            ev.done?.reject(storeFailure(e));
            continue;
          }
        } else {
          this.#ch = r.channel;
          if (persist) {
            this.#record = undefined;
            this.#saveBehind();
          }
        }
        this.#unstepped -= stepped;
        ev.done?.resolve();
        this.#act(r.effects);
        if (this.#ch.synced && this.#deferred.length > 0) this.#events.unshift(...this.#deferred.splice(0));
      }
    } finally {
      this.#busy = false;
    }
  }

  /**
   * Checks a hub credit needs that the engine cannot make: the market's recomputation of a round, and a fresh read of
   * the hub's deposit when the one we know cannot cover it.
   * @returns 'ok' to step the credit; 'refused' when it was refused here; or a funding event to step before it
   */
  async #beforeCredit(u: {
    id: number;
    state: State;
    paymentId?: Bytes32 | undefined;
    lock?: { readonly amount: bigint; readonly hash: Bytes32; readonly expiry: bigint } | undefined;
    unlock?: unknown;
  }): Promise<'ok' | 'refused' | EngineEvent> {
    const ch = this.#ch;
    const latest = this.latest.state; // what the hub acked, checked (the step checks it again first)
    if (sameState(latest, u.state) || u.state.version <= ch.signedVersion || u.state.channelId !== this.channelId)
      return 'ok';
    try {
      const unlock = u.unlock as { hash: Bytes32; preimage?: Bytes32 } | undefined;
      if (unlock && unlock.preimage === undefined && this.#preimages.has(unlock.hash))
        await this.#checkReturn(unlock.hash);
      try {
        // A lock transition's rules are the engine's; only its affordability needs the hub's deposit read here.
        if (u.lock || u.unlock) {
          if (payouts(u.state, ch.ctx.funding).hub < 0n)
            throw new TrickleError('INSUFFICIENT_FUNDS', 'the hub deposit known cannot cover this lock');
        } else checkTransition(latest, u.state, ch.ctx.funding, 'hub');
      } catch (e) {
        // The hub may have topped up since we last looked: re-read the deposits once, then let the engine decide.
        if (!isTrickleError(e, 'INSUFFICIENT_FUNDS') || !this.#deps.readFunding) return 'ok';
        const f = await this.#deps.readFunding(this.channelId);
        if (f.hub <= ch.ctx.funding.hub && f.device <= ch.ctx.funding.device) return 'ok';
        return {
          type: 'funding',
          funding: { device: maxOf(f.device, ch.ctx.funding.device), hub: maxOf(f.hub, ch.ctx.funding.hub) },
        };
      }
      // A lock this device could not safely claim is refused before it is held (its route then fails at once).
      const short = this.#tooShort(u.lock, false);
      if (short) throw short;
      // Not for the hub's state that moves nothing (a version up over a credit refused here, which voids it).
      const moves = u.lock || u.unlock || u.state.paidByHub !== latest.paidByHub || u.state.round !== latest.round;
      if (this.#deps.creditGuard && moves)
        await this.#deps.creditGuard({
          channelId: this.channelId,
          previous: latest,
          state: u.state,
          amount: u.state.paidByHub - latest.paidByHub,
          paymentId: u.paymentId,
          lock: u.lock ? { amount: u.lock.amount, hash: u.lock.hash, expiry: u.lock.expiry } : undefined,
        });
      return 'ok';
    } catch (e) {
      const error = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'credit check failed');
      this.#deps.connection.send({
        t: 'reject',
        id: u.id,
        channelId: this.channelId,
        code: error.code,
        message: error.shortMessage,
        latest: ch.latest,
      });
      // The hub takes its lock back while this device's claim stands on-chain: show the claim again, so a hub that
      // finds the preimage revealed by the expiry takes it now rather than at the next reconnect.
      const hash = (u.unlock as { hash?: Bytes32 } | undefined)?.hash;
      const preimage = hash && isTrickleError(e, 'LOCK_CLAIMED') ? this.#preimages.get(hash) : undefined;
      if (hash && preimage)
        this.#deps.connection.send({
          t: 'claim',
          id: this.#deps.connection.id(),
          channelId: this.channelId,
          unlock: { hash, preimage },
        });
      return 'refused';
    }
  }

  /**
   * The hub proposes the return of a lock this device claimed (a claim the engine may have lost in a restart, or one
   * that reached the hub after the expiry). With a chain: refused (`LOCK_CLAIMED`) if the preimage was revealed by the
   * lock's expiry — the lock is the device's on-chain, settled there — and taken otherwise (nothing can pay it any
   * more). Without a chain the device cannot tell, and refuses: a watchtower may have revealed it.
   * @throws TrickleError LOCK_CLAIMED; TIMEOUT when the chain cannot be read now (the hub proposes it again later)
   */
  async #checkReturn(hash: Bytes32): Promise<void> {
    const lock = this.#ch.locks.find((l) => l.hash === hash && l.payer === 'hub');
    if (!lock) return;
    let at: bigint | undefined;
    if (this.#deps.revealedAt) {
      try {
        at = await this.#deps.revealedAt(hash);
      } catch (cause) {
        throw new TrickleError('TIMEOUT', 'cannot read the preimage registry now', { cause });
      }
      if (at === 0n || at > lock.expiry) return;
    }
    throw new TrickleError('LOCK_CLAIMED', 'claimed here, its preimage on-chain in time', {
      details: { hash, revealedAt: at },
    });
  }

  #act(effects: readonly EngineEffect[]): void {
    const conn = this.#deps.connection;
    for (const e of effects) {
      switch (e.type) {
        case 'send': {
          const m = e.msg;
          if (((m.t === 'update' || m.t === 'close') && m.state.channelId === this.channelId) || m.t === 'claim') {
            // Our own proposals travel under connection-unique ids, so a reply never matches another request.
            const wire = conn.id();
            if (this.#wireIds.size > 4096) this.#wireIds.clear();
            this.#wireIds.set(wire, m.id);
            conn.send({ ...m, id: wire });
          } else conn.send(m);
          break;
        }
        case 'resolve':
          this.#take(e.ref)?.resolve(e.state);
          break;
        case 'reject':
          this.#rejectRef(e.ref, e.error);
          break;
        case 'incoming': {
          // A payment is reported once, whatever brings its state again (a hub that re-proposed it after losing the
          // device's countersignature with its store, a resync): the application may act on each report.
          if (e.paymentId !== undefined) {
            if (this.#reported.has(e.paymentId)) break;
            this.#reported.add(e.paymentId);
            if (this.#reported.size > REPORTED_IDS) this.#reported.delete(this.#reported.values().next().value!);
          }
          const payment: IncomingPayment = {
            channelId: this.channelId,
            amount: e.amount,
            paymentId: e.paymentId,
            round: e.round,
            state: e.state,
          };
          notify(this.#listeners, payment);
          break;
        }
        case 'timer': {
          // One timer, at the earliest time asked for: each tick re-arms what is still due later (see the engine), so
          // a later request never replaces an earlier one (a routed payment's deadline, a yield's end).
          if (this.#timer && this.#timerAt <= e.at) break;
          if (this.#timer) clearTimeout(this.#timer);
          this.#timerAt = e.at;
          this.#timer = setTimeout(
            () => {
              this.#timer = undefined; // now, not in the tick (not `deadline`): a timer asked for meanwhile is armed
              // After the I/O already waiting (see afterPendingIo): a receipt that came before the deadline, while
              // this process did not run, is read before the tick judges its payment late.
              afterPendingIo(() => this.#push({ type: 'tick' }));
            },
            Math.max(0, e.at - Date.now()),
          );
          this.#timer.unref?.();
          break;
        }
        case 'lock-incoming': {
          const l = e.lock;
          const p: ConditionalPayment = {
            channelId: this.channelId,
            amount: l.amount,
            hash: l.hash,
            expiresAt: l.expiry,
            paymentId: e.paymentId,
            claim: (preimage) => this.claim(l.hash, preimage),
            giveBack: () => this.giveBack(l.hash),
          };
          notify(this.#lockListeners, p);
          break;
        }
        case 'lock-settled': {
          if (e.lock.payer !== 'device') break;
          const hash = e.lock.hash;
          const o = this.#outcomes.get(hash);
          this.#outcomes.delete(hash);
          // A claim adopted from the hub's sync (its update answered before a restart) carries no preimage: the
          // record has it, written when this device signed the claim.
          const preimage = e.outcome === 'claimed' ? (e.preimage ?? this.preimageOf(hash)) : undefined;
          const outcome: ConditionalOutcome = preimage ? { status: 'claimed', preimage } : { status: 'refunded' };
          o?.resolve(outcome);
          notify(this.#outcomeListeners, {
            ...outcome,
            channelId: this.channelId,
            hash,
            amount: e.lock.amount,
            state: e.state,
          });
          break;
        }
        case 'resync':
          this.#syncNow();
          break;
        case 'refused':
        case 'routed':
        case 'escrow':
        case 'submit':
        case 'persist':
        case 'preimage':
          break;
      }
    }
  }

  /**
   * Save `record` after any save in flight; the caller handles a failure. A function is read when the save's turn
   * comes, so a write queued behind a gated step's write (a write behind, a probe, a claim's preimage) holds that step
   * too and never lands an older record over it (a credit countersigned would be gone from the disk). `landed` runs
   * once the write is durable, before the next save reads its record.
   */
  #save(record: DeviceChannelRecord | (() => DeviceChannelRecord), landed?: () => void): Promise<void> {
    const run = this.#saving.then(async () => {
      await this.#deps.store.save(typeof record === 'function' ? record() : record);
      landed?.();
    });
    this.#saving = run.then(
      () => undefined,
      () => undefined, // the order of saves goes on; this failure is the caller's to report
    );
    return run;
  }

  /** Write the current record behind: grouped with any other behind write waiting for its turn. */
  #saveBehind(): void {
    if (this.#behindTimer !== undefined) return;
    // In groups: the states acked within BEHIND_MS share one write. Nothing waits for it (see the class doc), and a
    // gated save meanwhile is not held up: it writes the newest record, this one comes after it.
    this.#behindTimer = setTimeout(() => {
      this.#behindTimer = undefined;
      // After the I/O already waiting: this tick also judges routed payments' deadlines (see the timer effect).
      afterPendingIo(() => {
        this.#push({ type: 'tick' }); // which checks the hub's signature on the newest state first (see the engine)
        this.#write();
      });
    }, BEHIND_MS);
    this.#behindTimer.unref?.();
  }

  #write(): void {
    // The payments of this state already resolved (the hub holds it); a failed write stops new work until writes
    // succeed (the freeze reports it).
    this.#save(() => this.record).then(undefined, (e: unknown) => this.#freeze(e));
  }

  /**
   * Write the state waiting to be written behind now, and wait for every write of this channel in flight (a client
   * that disconnects leaves its newest state on disk). A failed write freezes the channel, as it would later.
   */
  async flushWrites(): Promise<void> {
    if (this.#behindTimer !== undefined) {
      clearTimeout(this.#behindTimer);
      this.#behindTimer = undefined;
      // A tick stepped in turn checks the newest state; then it is written (a failed write freezes the channel).
      await new Promise<void>((resolve) => this.#push({ type: 'tick' }, { resolve, reject: resolve as () => void }));
      this.#write();
    }
    await this.#saving;
  }

  #freeze(cause: unknown, ev?: EngineEvent): void {
    const error = storeFailure(cause);
    const first = this.#frozen === undefined;
    this.#frozen = cause;
    // The discarded step's own callers, then everyone still waiting on the channel.
    if (ev?.type === 'pay') for (const p of ev.pays) this.#rejectRef(p.ref, error);
    if (ev?.type === 'close') this.#rejectRef(ev.ref, error);
    if (ev?.type === 'peer-updates') {
      for (const u of ev.updates)
        this.#deps.connection.send({
          t: 'reject',
          id: u.id,
          channelId: this.channelId,
          code: 'STORE_FAILURE',
          message: error.shortMessage,
          latest: this.#ch.latest,
        });
    }
    // Payments not yet proposed are answered now and never sent; those already on the wire resolve with the hub's
    // ack (it commits before acking, so they are paid exactly once whatever this store does).
    this.#failUnsynced(error);
    for (const p of this.#buffer) this.#rejectRef(p.ref, error);
    this.#buffer = [];
    this.#open = undefined;
    if (first) this.#probe(0);
  }

  /**
   * The hub refused our sync: payments and closes not yet proposed are answered with its refusal and never sent.
   * Proposals already on the wire before the reconnect wait for the sync that follows: the hub may hold them.
   */
  #failUnsynced(error: TrickleError): void {
    for (const q of this.#ch.queue) this.#rejectRef(q.ref, error);
    for (const ref of this.#ch.closeRefs) this.#rejectRef(ref, error);
    if (this.#ch.queue.length > 0 || this.#ch.closeRefs.length > 0)
      this.#ch = { ...this.#ch, queue: [], closeRefs: [] };
  }

  #rejectRef(ref: number, error: TrickleError): void {
    this.#take(ref)?.reject(error);
  }

  /** The caller waiting on `ref` (a group of payments, a claim, a payment, a close), no longer waiting. */
  #take(ref: number): Waiter | undefined {
    const g = this.#groups.get(ref);
    if (g) {
      this.#groups.delete(ref);
      this.#grouped -= g.count + g.others;
      return g;
    }
    for (const m of [this.#claimCallers, this.#callers, this.#closeCallers]) {
      const c = m.get(ref);
      if (c && m.delete(ref)) return c;
    }
    return undefined;
  }

  /**
   * The client is closed for good (`disconnect()`, or its reconnect attempts used up): every payment, claim and close
   * still waiting is answered `DISCONNECTED` instead of waiting for a sync that will never come. `details.inFlight`
   * is true when it left this device (the hub may hold it: the sync of the next connect shows whether it was paid),
   * false when it never did (not paid).
   */
  abandon(reason: string): void {
    const ch = this.#ch;
    const unsent = new Set<number>(ch.closeRefs);
    for (const q of ch.queue) unsent.add(q.ref);
    for (const p of this.#buffer) unsent.add(p.ref);
    for (const ev of this.#events) if (ev.type === 'pay') for (const p of ev.pays) unsent.add(p.ref);
    for (const ref of [
      ...this.#groups.keys(),
      ...this.#callers.keys(),
      ...this.#claimCallers.keys(),
      ...this.#closeCallers.keys(),
    ])
      this.#rejectRef(
        ref,
        new TrickleError('DISCONNECTED', reason, {
          details: { channelId: this.channelId, inFlight: !unsent.has(ref) },
        }),
      );
    // A lock of ours already in the channel ends without this client: the next one on the store tells its outcome
    // (`preimageOf`, `onConditionalOutcome`). One not locked yet is answered with its `locked` (above).
    for (const [hash, o] of this.#outcomes) {
      if (!ch.locks.some((l) => l.hash === hash && l.payer === 'device')) continue;
      this.#outcomes.delete(hash);
      o.reject(
        new TrickleError('DISCONNECTED', reason, { details: { channelId: this.channelId, hash, inFlight: true } }),
      );
    }
    this.#buffer = [];
    this.#open = undefined;
  }

  /** Write the record again until the store takes it; then thaw. */
  #probe(attempt: number): void {
    setTimeout(
      () => {
        this.#record = undefined;
        this.#save(() => this.record).then(
          () => {
            this.#frozen = undefined;
          },
          (e: unknown) => {
            this.#frozen = e;
            this.#probe(attempt + 1);
          },
        );
      },
      RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]!,
    ).unref?.();
  }
}

const maxOf = (a: bigint, b: bigint): bigint => (a > b ? a : b);

/** What a state pays the hub, net (its counters: what the device paid less what the hub paid). */
const hubTake = (s: State): bigint => s.paidByDevice - s.paidByHub;
