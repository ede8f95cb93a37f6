import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import type { Message, RouteInstruction } from '@trickle/protocol/codec';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import type { WireLock } from '@trickle/protocol/codec';
import { hashPreimage, type Lock } from '@trickle/protocol/locks';
import { preimageKey, revealedKey, type ChannelTable } from './channels.js';
import type { Committer } from './committer.js';
import { hubSpendable } from './liquidity.js';
import type { RouteRecord, StoreWrite } from './store/types.js';
import type { ClusterRoutes } from './cluster-routes.js';

/** Dependencies of the router. */
export interface RouterDeps {
  readonly channels: ChannelTable;
  readonly committer: Committer;
  readonly isConnected: (device: Address) => boolean;
  readonly send: (device: Address, msg: Message) => boolean;
  /** Before a route's outcome is sent: restore its receipt request and stream tick from its record if not known. */
  readonly restoreExtras?: (route: RouteRecord) => void;
  readonly maxRoutedInFlight: bigint;
  readonly onResult: (result: 'delivered' | 'refunded') => void;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
  readonly debug?: (msg: string, fields: Record<string, unknown>) => void;
  /** No channel to the payee can carry a payment: the hub's liquidity policy may top this one up. */
  readonly onShortfall?: ((channelId: ChannelId, amount: bigint) => void) | undefined;
  /** Conditional routes: Δ = the longer challenge duration of the two channels + this margin (seconds). */
  readonly lockMarginSeconds?: number | undefined;
  /** The chain clock the hub assumes, in seconds (default: the wall clock). */
  readonly nowSec?: (() => bigint) | undefined;
  /** The hub's clock (ms), stamped on a route as `finishedAt` when it finishes (default: `Date.now`). */
  readonly now?: (() => number) | undefined;
  /** Read a stored preimage (`preimage/<hash>`): a route on a hash whose preimage the hub knows is refused. */
  readonly getPreimage?: ((hash: Bytes32) => Promise<Bytes32 | undefined>) | undefined;
  /**
   * The preimage with which the hub claims the payer's lock of the conditional route on `hash` toward `payee`, for
   * routes resumed after a restart: stored when that payee claimed the hub's lock (`claimedKey`) or when the preimage
   * was revealed on-chain (`revealedKey`) — not merely known from another payee's claim on the same hash.
   */
  readonly getClaim?: ((hash: Bytes32, payee: Address) => Promise<Bytes32 | undefined>) | undefined;
  /** Reveal a preimage on-chain (when the payer has not taken the hub's claim `lockMarginSeconds` before its expiry). */
  readonly reveal?: ((preimage: Bytes32) => Promise<bigint>) | undefined;
  /** The chain's clock (latest block timestamp, seconds), to time a reveal by the clock the adjudicator uses. */
  readonly chainTime?: (() => Promise<bigint>) | undefined;
  /**
   * When the preimage of a hash was first revealed on-chain (0n if never): a preimage revealed already, by anyone, is
   * not revealed again.
   */
  readonly revealedAt?: ((hash: Bytes32) => Promise<bigint>) | undefined;
  /**
   * How many payment ids of finished routes are remembered, newest first, so that a payment sent again soon after
   * is refused (default {@link RECENT_PAYMENT_IDS}). Ids of routes still in flight are always remembered.
   */
  readonly recentPaymentIds?: number | undefined;
  /**
   * Whether the store holds a route with this payment id (the store's `loadRoute`): a new route with an id the hub's
   * memory no longer holds (a restart, or past `recentPaymentIds`) is refused when its record is still kept — the record
   * is keyed by the id, and another device's route under it would take over the payer's record, which its `outcome`
   * query is answered from (the payee and an x402 service see the id in every receipt). Without it, only the memory.
   */
  readonly routeRecorded?: ((paymentId: Bytes32) => Promise<boolean>) | undefined;
  /**
   * In a cluster: plain routed payments go through the database's outbox (`cluster-routes.ts`), so a payee served
   * by another process can be paid, and a route a dead process left pending is finished by whoever holds its
   * channels next. Conditional routes too: the row carries the hub's lock toward the payee, and the preimage comes
   * back through it (see `cluster-routes.ts`).
   */
  readonly cluster?: ClusterRoutes | undefined;
}

/**
 * Store key marking a conditional route dead: the hub's lock toward its payee was refused by the payee, or could not
 * be placed. Written before the route frees its (hash, payee) slot, so that after a restart it is neither claimed
 * upstream (with a preimage the same payee showed for another payer's route on the hash) nor forwarded again.
 */
export const refusedRouteKey = (paymentId: Bytes32): string => `route-refused/${paymentId}`;

/**
 * How long a conditional route holds a lock slot on its payee's channel at most (see `Router.#lockHolds`): a hold
 * goes when the lock is queued there or the payer's update is answered; this bounds one whose answer never came.
 */
const HOLD_MS = 30_000;

/**
 * A payee channel holding this many hub-signed credits its device refused but may still hold (`unsettled`) takes no
 * new route: each one it refuses keeps its payer's refund waiting and grows the channel's record.
 */
export const MAX_UNSETTLED_PER_CHANNEL = 8;

/** Default number of finished routes' payment ids a router remembers (about 8 MB at most). */
export const RECENT_PAYMENT_IDS = 65_536;

/** Tries of a route's refund, and of the record of a landed route's outcome, before it is left to a restart. */
const OUTCOME_TRIES = 30;
/** Backoff before try `attempt + 1`: 200 ms doubling, at most 5 s. */
const retryDelayMs = (attempt: number): number => Math.min(100 * 2 ** attempt, 5_000);

/**
 * Routed payments. Order of events, so that nobody can lose more than what is in flight:
 * 1. the payer's update (paying the hub `amount`) is made durable with the route marked pending;
 * 2. the hub credits the payee on the payee's channel (hub signs first);
 * 3. when the payee countersigns, the route is delivered and the payer gets a `receipt` (delivered);
 * 4. if the payee refuses or its channel closes, the hub refunds the payer with a credit on the payer's channel
 *    and sends a `receipt` (not delivered). A payee that is unknown or offline is refused up front (`NO_ROUTE`),
 *    before the payer's update is accepted; a payee whose channels hold too little of the hub's money to carry
 *    the amount is refused up front with `HUB_LIQUIDITY` (and the liquidity policy, if any, is asked to top up).
 * Of several channels to the payee in the token, the hub credits one that can carry the payment: its spendable
 * amount less what routes in flight have reserved on it.
 * The hub never forwards money it has not received; the payer's exposure is capped by `maxRoutedInFlight`.
 */
export class Router {
  readonly #deps: RouterDeps;
  /** Undelivered routed amount per paying device. */
  readonly #inFlight = new Map<Address, bigint>();
  /**
   * Payment ids of the routes in flight (from the payer's durable update until the outcome is written, or for good
   * when a refund cannot be delivered): a second route with one of these ids would overwrite the first one's record
   * in the store and could leave it neither delivered nor refunded after a restart, so it is always refused. After a
   * restart these are exactly the store's pending routes, which `resume` adds back.
   */
  readonly #inFlightIds = new Set<Bytes32>();
  /**
   * Ids of routes that passed {@link check} and whose payer's update is not answered yet (its commit under way): held
   * until {@link routeChecked}, by when a committed one is in flight. Until then nothing else refuses the id: the
   * store holds no route of it yet, and two payers' routes with one id checked together would both be taken, the
   * second record overwriting the first.
   */
  readonly #checking = new Set<Bytes32>();
  /**
   * Payment ids of the latest finished routes, oldest first, at most `recentPaymentIds`: a payment sent again by
   * mistake soon after is refused. Past that an id may be routed again: only its own payer can lose by reusing it
   * (after a crash, a credit marker left by the first route could make the second one look landed), as after a
   * restart, which forgets every finished route.
   */
  readonly #recentIds = new Set<Bytes32>();
  readonly #recentMax: number;
  /** Amounts of routes being delivered, per payee channel: not yet visible in its record. */
  readonly #reserved = new Map<ChannelId, bigint>();
  /**
   * Conditional routes not yet settled, by lock hash, then by payee: several payers may lock on one hash (a data
   * offer's, known to anyone who saw the offer) toward different payees, so that a lock toward a payee of one's own
   * cannot hold a hash against every buyer. Two toward one payee are refused: its channel holds one lock per hash.
   */
  readonly #byHash = new Map<Bytes32, Map<Address, RouteRecord>>();
  /**
   * Dead conditional routes: the payee refused the hub's lock (a seller refusing a lock below its
   * price), or it could not be placed. A dead route holds no (hash, payee) slot, so a new route to that payee on the
   * hash is accepted, and it is never claimed upstream — the hub paid nothing for it, and claiming it when the payee
   * claims another payer's route on the hash would sell its payer the preimage for the price of its own lock. Its
   * payer's lock is given back to the payer at once (the hub proposes the state without it: `#bury`), or goes back at
   * its expiry should the payer not countersign that; the route is recorded then ({@link onLockSettled}). Keyed by
   * the payer's channel and the hash: that channel holds one lock per hash.
   */
  readonly #dead = new Map<string, RouteRecord>();
  /**
   * Lock slots held on payee channels for conditional routes between their check and their forward: the payer's
   * update is stepped and committed in between, and only then is the hub's lock queued on the payee's channel (where
   * `lockRoom` counts it). Without them two payers checked in that window both passed for one last slot, and the
   * second was locked until its expiry toward a lock that could not be placed. By payment id: the payee channel, and
   * when the hold lapses (a safety net: the hold goes when the lock is queued, or with {@link Router.routeChecked}).
   */
  readonly #lockHolds = new Map<Bytes32, { channel: ChannelId; until: number }>();
  /** Payment ids of conditional routes whose upstream claim was started here (shown again on every reconnect). */
  readonly #claiming = new Set<Bytes32>();
  /** Payment ids of conditional routes whose on-chain guard runs here (`#guardOnChain`): one guard per route. */
  readonly #guarding = new Set<Bytes32>();
  /** Payment ids of conditional routes whose outcome is being written here. */
  readonly #finishing = new Set<Bytes32>();
  /** Payment ids of routes whose payer was told the outcome and whose record is not written yet (told once). */
  readonly #told = new Set<Bytes32>();
  /** Largest lead of the chain's clock over ours seen so far (seconds). */
  #chainLead = 0n;

  constructor(deps: RouterDeps) {
    const recent = deps.recentPaymentIds ?? RECENT_PAYMENT_IDS;
    if (!Number.isSafeInteger(recent) || recent < 0)
      throw new TrickleError('INVALID_ARGUMENT', 'recentPaymentIds must be a non-negative integer');
    this.#deps = deps;
    this.#recentMax = recent;
  }

  /** The pending conditional route on `hash` toward `payee`, if any. */
  #routeOf(hash: Bytes32, payee: Address | undefined): RouteRecord | undefined {
    return payee === undefined ? undefined : this.#byHash.get(hash)?.get(payee);
  }

  /** Track a pending conditional route (by its lock's hash and its payee). */
  #track(route: RouteRecord, hash: Bytes32): void {
    let routes = this.#byHash.get(hash);
    if (!routes) this.#byHash.set(hash, (routes = new Map()));
    routes.set(route.to, route);
  }

  /** Stop tracking a conditional route (not another one that took its place). */
  #untrack(route: RouteRecord, hash: Bytes32): void {
    const routes = this.#byHash.get(hash);
    if (routes?.get(route.to)?.paymentId !== route.paymentId) return;
    routes.delete(route.to);
    if (routes.size === 0) this.#byHash.delete(hash);
  }

  /** The payer channel's lock settles a dead route: it holds one lock per hash. */
  #deadKey(fromChannel: ChannelId, hash: Bytes32): string {
    return `${fromChannel}/${hash}`;
  }

  /**
   * A conditional route is dead, recorded so (its payee refused the hub's lock, it could not be placed, or the payee
   * gave it back): it holds no slot, and its payer's lock is given back now rather than at its expiry — the hub pays
   * nothing downstream, so it has no claim on it. Refused only once that lock is gone (`UNKNOWN_LOCK`: taken back
   * meanwhile), or while another give-back of it is under way; anything else is logged, and the lock still goes back
   * to its payer at its expiry.
   */
  #bury(route: RouteRecord, lock: Lock): void {
    this.#dead.set(this.#deadKey(route.fromChannel, lock.hash), route);
    const locks = this.#deps.channels.locksOf(route.fromChannel);
    if (!locks.some((l) => l.hash === lock.hash && l.payer === 'device')) return;
    this.#deps.channels.giveBack(route.fromChannel, lock.hash).catch((e: unknown) => {
      const code = isTrickleError(e) ? e.code : 'INTERNAL';
      if (code === 'UNKNOWN_LOCK' || code === 'INVALID_ARGUMENT') return;
      this.#deps.log('could not give a dead route’s lock back to its payer; it goes back at its expiry', {
        paymentId: route.paymentId,
        code,
        error: String(e),
      });
    });
  }

  /**
   * Whether a route with this payment id is being checked or committed, in flight or finished recently (a new one with
   * it is refused).
   */
  #seen(paymentId: Bytes32): boolean {
    return this.#checking.has(paymentId) || this.#inFlightIds.has(paymentId) || this.#recentIds.has(paymentId);
  }

  /** A route's outcome is durable: its id moves to the bounded list of recent ones. */
  #forgetLater(paymentId: Bytes32): void {
    this.#inFlightIds.delete(paymentId);
    if (this.#recentMax === 0) return;
    this.#recentIds.delete(paymentId); // re-added as the newest
    this.#recentIds.add(paymentId);
    if (this.#recentIds.size > this.#recentMax) this.#recentIds.delete(this.#recentIds.values().next().value!);
  }

  /** Lock slots held on `channel` by other conditional routes than `self` (lapsed holds are dropped). */
  #slotsHeld(channel: ChannelId, self?: Bytes32): number {
    if (this.#lockHolds.size === 0) return 0;
    const now = Date.now();
    let n = 0;
    for (const [id, h] of this.#lockHolds) {
      if (h.until <= now) this.#lockHolds.delete(id);
      else if (h.channel === channel && id !== self) n++;
    }
    return n;
  }

  /**
   * The payer's updates of a step have been answered (committed and forwarded, refused or failed): the routes checked
   * for them let go of the lock slots held for them.
   */
  routeChecked(paymentIds: readonly Bytes32[]): void {
    for (const id of paymentIds) {
      this.#lockHolds.delete(id);
      this.#checking.delete(id);
    }
  }

  /** What the hub can still pay on a channel, less what routes in flight have reserved on it. */
  #capacity(id: ChannelId): bigint {
    const r = this.#deps.channels.get(id);
    return r ? hubSpendable(r) - (this.#reserved.get(id) ?? 0n) : 0n;
  }

  /**
   * The payee's open channels in the token, and the one that can carry `amount` (the one with the most room), if any.
   */
  #payeeChannel(
    to: Address,
    token: Address,
    amount: bigint,
    lock = false,
    self?: Bytes32,
  ): { open: ChannelId[]; carrier: ChannelId | undefined; full?: boolean } {
    const open: ChannelId[] = [];
    let carrier: ChannelId | undefined;
    let best = -1n;
    let full = false;
    for (const id of this.#deps.channels.channelsOf(to)) {
      const r = this.#deps.channels.get(id);
      if (!r || r.status !== 'open' || r.latest.state.isFinal || r.params.token !== token) continue;
      if ((r.unsettled?.length ?? 0) >= MAX_UNSETTLED_PER_CHANNEL) continue; // its device refuses what it is sent
      // A lock toward the payee needs a lock slot on its channel (TOO_MANY_LOCKS otherwise, once the payer is locked).
      if (lock && (this.#deps.channels.lockRoom?.(id) ?? 1) - this.#slotsHeld(id, self) < 1) {
        full = true;
        continue;
      }
      open.push(id);
      const room = this.#capacity(id);
      if (room >= amount && room > best) {
        best = room;
        carrier = id;
      }
    }
    return full && open.length === 0 ? { open, carrier, full } : { open, carrier };
  }

  #nowSec(): bigint {
    return this.#deps.nowSec?.() ?? BigInt(Math.floor(Date.now() / 1000));
  }

  /**
   * The expiry of the hub's lock toward the payee for a payer's lock expiring at `expiry`: `expiry − Δ`, Δ the longer
   * challenge duration of the payer's and the payee's channel plus the margin. The hub then has Δ after the payee's
   * last chance to claim to claim upstream (off-chain, or by revealing the preimage on-chain).
   */
  downstreamExpiry(expiry: bigint, channels: readonly (ChannelId | undefined)[]): bigint {
    let longest = 0n;
    for (const id of channels) {
      const d = id ? this.#deps.channels.get(id)?.params.challengeDuration : undefined;
      if (d !== undefined && d > longest) longest = d;
    }
    return expiry - longest - BigInt(this.#deps.lockMarginSeconds ?? 60);
  }

  /**
   * Called before a payer's update is accepted. @throws TrickleError NO_ROUTE / HUB_LIQUIDITY / LIMIT_EXCEEDED /
   * EXPIRY_TOO_SHORT (a conditional route whose lock leaves the hub too little time) / PREIMAGE_KNOWN (a conditional
   * route on a hash whose preimage the hub already stored: a key revealed before is no condition, whoever saw it could
   * claim the lock, so the payer would pay again for what it bought already)
   */
  check(from: Address, token: Address, route: RouteInstruction, extra: bigint, lock?: WireLock): void | Promise<void> {
    const routeRecorded = this.#deps.routeRecorded;
    // An id in memory is refused by #check without reading the store.
    if (!routeRecorded || this.#seen(route.paymentId)) return this.#checkHash(from, token, route, extra, lock);
    return routeRecorded(route.paymentId).then((recorded) => {
      if (recorded) throw new TrickleError('NO_ROUTE', 'payment id already used');
      return this.#checkHash(from, token, route, extra, lock);
    });
  }

  #checkHash(
    from: Address,
    token: Address,
    route: RouteInstruction,
    extra: bigint,
    lock?: WireLock,
  ): void | Promise<void> {
    const getPreimage = this.#deps.getPreimage;
    if (!lock || !getPreimage) return this.#check(from, token, route, extra, lock);
    return getPreimage(lock.hash).then((known) => {
      if (known !== undefined)
        throw new TrickleError('PREIMAGE_KNOWN', 'the preimage of this hash was revealed already: lock on a new one', {
          details: { hash: lock.hash },
        });
      return this.#check(from, token, route, extra, lock);
    });
  }

  #check(from: Address, token: Address, route: RouteInstruction, extra: bigint, lock?: WireLock): void | Promise<void> {
    if (route.to === from) throw new TrickleError('NO_ROUTE', 'cannot route a payment to oneself');
    if (this.#seen(route.paymentId)) throw new TrickleError('NO_ROUTE', 'payment id already used');
    // Held from here (synchronously after the test above) until the payer's update is answered; let go at once if the
    // route is refused.
    const id = route.paymentId;
    this.#checking.add(id);
    try {
      const checked = this.#checkRoute(from, token, route, extra, lock);
      return checked?.catch((e: unknown) => {
        this.#checking.delete(id);
        throw e;
      });
    } catch (e) {
      this.#checking.delete(id);
      throw e;
    }
  }

  #checkRoute(
    from: Address,
    token: Address,
    route: RouteInstruction,
    extra: bigint,
    lock?: WireLock,
  ): void | Promise<void> {
    // Per payee: the payee's channel holds one lock per hash; other payees' routes on the hash do not block this one.
    if (lock && this.#routeOf(lock.hash, route.to))
      throw new TrickleError('INVALID_ARGUMENT', 'a conditional route with this hash to this payee is already pending');
    const { open, carrier, full } = this.#payeeChannel(route.to, token, route.amount, lock !== undefined);
    if (full && this.#deps.isConnected(route.to))
      throw new TrickleError('TOO_MANY_LOCKS', 'the payee’s channels hold as many pending locks as they can', {
        details: { to: route.to },
      });
    const cluster = this.#deps.cluster;
    if (cluster && (open.length === 0 || !this.#deps.isConnected(route.to))) {
      // Not served here: perhaps by another process of the cluster (the outbox carries it there).
      this.#checkLimit(from, extra, route.amount);
      if (!lock) return cluster.checkRemote(token, route).then(() => undefined);
      return cluster.checkRemote(token, route, lock.hash).then((duration) => {
        const expiry = this.#lockExpiry(from, token, lock, [], duration);
        cluster.forwardLock(route.paymentId, { hash: lock.hash, expiry });
      });
    }
    if (open.length === 0 || !this.#deps.isConnected(route.to)) {
      throw new TrickleError('NO_ROUTE', 'payee has no open channel in this token or is offline', {
        details: { to: route.to },
      });
    }
    if (!carrier) {
      const available = open.reduce((m, id) => (this.#capacity(id) > m ? this.#capacity(id) : m), 0n);
      for (const id of open) this.#deps.onShortfall?.(id, route.amount);
      // The message carries the figures: a reject frame sends the code and message, not the details.
      throw new TrickleError(
        'HUB_LIQUIDITY',
        `the hub has too little of its own funds in the payee’s channel to carry this payment (${available} available, ${route.amount} needed)`,
        {
          details: { to: route.to, amount: route.amount, available },
        },
      );
    }
    this.#checkLimit(from, extra, route.amount);
    const down = lock ? this.#lockExpiry(from, token, lock, [carrier], 0n) : undefined;
    if (lock) this.#lockHolds.set(route.paymentId, { channel: carrier, until: Date.now() + HOLD_MS });
    if (cluster)
      cluster.chooseLocal(
        token,
        route,
        carrier,
        lock && down !== undefined ? { hash: lock.hash, expiry: down } : undefined,
      );
  }

  /**
   * The expiry of the hub's lock toward the payee (see {@link downstreamExpiry}), with the payer's channels in the
   * token, `payee` channels held here and a payee channel's challenge duration read elsewhere (`payeeDuration`).
   * @throws TrickleError EXPIRY_TOO_SHORT when it leaves the hub less than the margin from now
   */
  #lockExpiry(
    from: Address,
    token: Address,
    lock: WireLock,
    payee: readonly (ChannelId | undefined)[],
    payeeDuration: bigint,
  ): bigint {
    const payer = this.#deps.channels
      .channelsOf(from)
      .filter((id) => this.#deps.channels.get(id)?.params.token === token);
    let down = this.downstreamExpiry(lock.expiry, [...payer, ...payee]);
    const margin = BigInt(this.#deps.lockMarginSeconds ?? 60);
    if (lock.expiry - payeeDuration - margin < down) down = lock.expiry - payeeDuration - margin;
    const earliest = this.#nowSec() + margin;
    if (down <= earliest) {
      throw new TrickleError(
        'EXPIRY_TOO_SHORT',
        `the lock must expire at least ${lock.expiry - down + (earliest - this.#nowSec())} s from now (challenge duration + twice the margin)`,
        {
          details: { expiry: lock.expiry, downstreamExpiry: down, earliest },
        },
      );
    }
    return down;
  }

  #checkLimit(from: Address, extra: bigint, amount: bigint): void {
    const pending = (this.#inFlight.get(from) ?? 0n) + extra + amount;
    if (pending > this.#deps.maxRoutedInFlight) {
      throw new TrickleError('LIMIT_EXCEEDED', 'routed amount in flight exceeds the per-device limit', {
        details: { limit: this.#deps.maxRoutedInFlight },
      });
    }
  }

  /** Writes to commit with a routed payment's payer state besides its route record: in a cluster, its outbox row. */
  routeWrites(route: RouteRecord): readonly StoreWrite[] {
    return this.#deps.cluster?.writesFor(route) ?? [];
  }

  /**
   * A cluster route's outcome, read from the outbox by the process holding the payer's channel: record it on the
   * route and tell the payer (a refund has landed already).
   */
  settle(route: RouteRecord, status: 'delivered' | 'refunded', toChannel?: ChannelId): Promise<void> {
    return this.#finish(route, status, toChannel);
  }

  /**
   * A cluster route forwarded here whose payer channel moved to another process (which settles it): it no longer
   * counts toward its payer's in-flight limit here. A receipt sent here for it whose record failed to write is
   * forgotten too: the next process tells the payer again.
   */
  abandon(route: RouteRecord): void {
    this.#told.delete(route.paymentId);
    if (route.lock && this.#routeOf(route.lock.hash, route.to)?.paymentId === route.paymentId) {
      this.#untrack(route, route.lock.hash);
      this.#claiming.delete(route.paymentId);
    }
    const deadKey = route.lock ? this.#deadKey(route.fromChannel, route.lock.hash) : undefined;
    if (deadKey && this.#dead.get(deadKey)?.paymentId === route.paymentId) this.#dead.delete(deadKey);
    if (!this.#inFlightIds.has(route.paymentId)) return;
    this.#release(route);
    this.#forgetLater(route.paymentId);
  }

  /**
   * A cluster's conditional route whose payer channel this process holds (it forwarded it, or took the channel over),
   * read from the outbox: with the preimage its payee showed (durable in the database; the row of another route on the
   * same hash does not carry it), or one revealed on-chain, claim the payer's lock — the claim is shown again on every
   * reconnect of the payer until it lands; a payer's lock already gone from the channel settled (claimed with a known
   * preimage, else taken back): record the outcome. Otherwise wait (its claim or its return settles it through
   * {@link onLockSettled}). A route whose row was refused (its payee refused the hub's lock, or it could not be placed)
   * is dead (see `#dead`): it frees its hash and payee, and is never claimed.
   * @returns whether the route is still in flight here
   */
  async conditional(route: RouteRecord, preimage: Bytes32 | undefined, refused = false): Promise<boolean> {
    const lock = route.lock;
    const record = this.#deps.channels.get(route.fromChannel);
    if (!lock || !record || this.#recentIds.has(route.paymentId)) return false;
    if (this.#finishing.has(route.paymentId)) return false;
    if (!this.#inFlightIds.has(route.paymentId)) {
      this.#inFlightIds.add(route.paymentId);
      this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
    }
    const deadKey = this.#deadKey(route.fromChannel, lock.hash);
    if (refused) {
      this.#untrack(route, lock.hash);
      preimage = undefined; // a refused row carries none; never claimed
    } else if (!this.#routeOf(lock.hash, route.to)) this.#track(route, lock.hash);
    const upstream = (record.locks ?? []).some((l) => l.hash === lock.hash && l.payer === 'device');
    // Without a preimage the payer's lock can only have gone back after its expiry (the hub accepts nothing earlier),
    // or given back by the hub for a dead route (recorded by its lock-settled, {@link onLockSettled}): a lock missing
    // before then is a record not yet current here, so wait rather than record a refund.
    if (!upstream && (preimage !== undefined || this.#nowSec() > lock.expiry)) {
      this.#untrack(route, lock.hash);
      if (this.#dead.get(deadKey)?.paymentId === route.paymentId) this.#dead.delete(deadKey);
      await this.#finishConditional(route, preimage ? 'delivered' : 'refunded');
      return false;
    }
    if (refused) {
      if (this.#dead.get(deadKey)?.paymentId !== route.paymentId) this.#bury(route, lock);
      return true;
    }
    if (preimage && hashPreimage(preimage) === lock.hash && !this.#claiming.has(route.paymentId))
      this.#claimUpstream(route, lock, preimage, await this.#revealedAtLate(route, lock));
    return true;
  }

  /**
   * Past the payer's expiry (the hub down through it, or its channel taken over after it), when the preimage of its
   * lock was revealed on-chain, for the hub's claim: it stands, and the payer's return of the lock is refused
   * (LOCK_CLAIMED), if it was on-chain by the expiry — revealed by a guard of the hub's, or by the payee. Undefined
   * before the expiry (not needed) and when the registry cannot be read (said, not silent: the claim is then refused
   * as expired and the payer may take its lock back).
   */
  async #revealedAtLate(route: RouteRecord, lock: Lock): Promise<bigint | undefined> {
    if (this.#nowSec() <= lock.expiry) return undefined;
    return this.#deps.revealedAt?.(lock.hash).catch((e: unknown) => {
      this.#deps.log('could not read the preimage registry for a claim past its expiry', {
        paymentId: route.paymentId,
        error: String(e),
      });
      return undefined;
    });
  }

  /**
   * A cluster's conditional route whose payee claimed while no process holds its payer channel (the payer went away
   * after locking): nobody claims the payer's lock off-chain, so its preimage is revealed on-chain `lockMarginSeconds`
   * before the payer's expiry unless the payer takes the hub's claim by then, as for a payer away from a single hub —
   * by one process of the cluster (`ClusterRoutes.revealOnce`).
   */
  guard(route: RouteRecord, preimage: Bytes32): void {
    if (route.lock && hashPreimage(preimage) === route.lock.hash) this.#guardOnChain(route, route.lock, preimage);
  }

  async #finishConditional(route: RouteRecord, status: 'delivered' | 'refunded'): Promise<void> {
    if (this.#finishing.has(route.paymentId)) return;
    this.#finishing.add(route.paymentId);
    try {
      await this.#finish(route, status);
      this.#claiming.delete(route.paymentId);
    } finally {
      this.#finishing.delete(route.paymentId);
    }
  }

  /**
   * At startup: finish a route left pending by a crash. A credit that already landed (its marker was written with
   * the state) is not paid again. `refused`: a conditional route marked dead ({@link refusedRouteKey}).
   */
  async resume(route: RouteRecord, credited: readonly string[], refused = false): Promise<void> {
    // In a cluster, a conditional route is looked after by whoever holds its payer channel, from the outbox.
    if (route.lock && this.#deps.cluster) return;
    if (route.lock) return this.#resumeConditional(route, route.lock, refused);
    const landedOn = (id: ChannelId | undefined) => id !== undefined && credited.includes(id);
    const payeeChannels = this.#deps.channels.channelsOf(route.to);
    const delivered = payeeChannels.find((id) => landedOn(id));
    if (delivered) {
      this.#inFlightIds.add(route.paymentId);
      this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
      await this.#finish(route, 'delivered', delivered);
      return;
    }
    if (landedOn(route.fromChannel)) {
      this.#inFlightIds.add(route.paymentId);
      this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
      await this.#finish(route, 'refunded');
      return;
    }
    this.forward(route);
  }

  /**
   * At startup: a conditional route left pending. With its claim stored (its own payee claimed before the restart, or
   * the preimage was revealed on-chain), claim the payer's lock — a preimage stored from another payee's claim on the
   * same hash is not this route's; a payer's lock already gone settled while the hub was down; a lock toward the payee
   * still pending waits for its claim or expiry; otherwise the hub locks toward the payee again. A dead route (its
   * payee refused the hub's lock) is neither claimed nor forwarded: its payer's lock goes back to the payer.
   */
  async #resumeConditional(route: RouteRecord, lock: Lock, refused: boolean): Promise<void> {
    this.#inFlightIds.add(route.paymentId);
    this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
    if (refused) {
      if (this.#deps.channels.locksOf(route.fromChannel).some((l) => l.hash === lock.hash && l.payer === 'device'))
        this.#bury(route, lock);
      else await this.#finish(route, 'refunded');
      return;
    }
    this.#track(route, lock.hash);
    const preimage = await this.#deps.getClaim?.(lock.hash, route.to);
    // Revealed on-chain while the hub was down, or its payee's claim not yet landed: the payee's lock is paid out (a
    // claim already under way, or a lock gone, changes nothing).
    if (preimage) this.#payOut(route.to, lock.hash, preimage, undefined);
    const upstream = this.#deps.channels.locksOf(route.fromChannel).some((l) => l.hash === lock.hash);
    if (!upstream) {
      await this.#finish(route, preimage ? 'delivered' : 'refunded');
      return;
    }
    if (preimage) {
      // Read before the hub serves the payer (at startup).
      this.#claimUpstream(route, lock, preimage, await this.#revealedAtLate(route, lock));
      return;
    }
    const downstream = this.#deps.channels
      .channelsOf(route.to)
      .some((id) => this.#deps.channels.locksOf(id).some((l) => l.hash === lock.hash));
    if (!downstream) this.#forwardLock(route, lock);
  }

  /**
   * A payee showed the preimage of the hub's lock toward it (durable): claim the payer's lock of that payee's route
   * with it — only that one: another route on the hash was not paid out, and claiming its payer's lock would sell
   * that payer the preimage for the price of its own lock.
   */
  onPreimage(channelId: ChannelId, hash: Bytes32, preimage: Bytes32): void {
    const route = this.#routeOf(hash, this.#deps.channels.get(channelId)?.params.device);
    if (!route || !route.lock || channelId === route.fromChannel) return;
    this.#claimUpstream(route, route.lock, preimage);
  }

  /**
   * A preimage became known on-chain: a payee that could not reach the hub (it was down, or did not countersign)
   * revealed it, so settlement pays it the hub's lock. Anyone can read it there, so every payee with a lock on the
   * hash can claim it: the hub claims the payer's lock of every route on the hash — stored first (`revealedKey`), as a
   * preimage a payee showed is, so a restart still claims.
   */
  async onRevealed(hash: Bytes32, preimage: Bytes32, revealedAt?: bigint): Promise<void> {
    if (hashPreimage(preimage) !== hash) return;
    await this.#claimRevealed(hash, preimage, revealedAt);
    // Every payee whose lock on the hash is still pending is owed it now (settlement would pay it so): a payee that
    // never knew the key (another route on a data offer's hash) would otherwise let it expire back to the hub, which
    // claims its payer's lock all the same.
    const payees = new Set([...(this.#byHash.get(hash)?.values() ?? [])].map((r) => r.to));
    for (const to of payees) this.#payOut(to, hash, preimage, revealedAt);
  }

  /** Propose the claim of the hub's pending locks on `hash` toward `payee` (`ChannelTable.payOutRevealed`). */
  #payOut(payee: Address, hash: Bytes32, preimage: Bytes32, revealedAt: bigint | undefined): void {
    for (const id of this.#deps.channels.channelsOf(payee))
      if (this.#deps.channels.locksOf(id).some((l) => l.hash === hash && l.payer === 'hub'))
        this.#deps.channels.payOutRevealed(id, hash, preimage, revealedAt);
  }

  async #claimRevealed(hash: Bytes32, preimage: Bytes32, revealedAt: bigint | undefined): Promise<void> {
    const routes = [...(this.#byHash.get(hash)?.values() ?? [])].filter(
      (r) =>
        r.lock !== undefined &&
        !this.#claiming.has(r.paymentId) &&
        this.#deps.channels.locksOf(r.fromChannel).some((l) => l.hash === hash),
    );
    if (routes.length === 0) return;
    await this.#deps.committer.write([
      { kind: 'meta', key: preimageKey(hash), value: preimage },
      { kind: 'meta', key: revealedKey(hash), value: preimage },
    ]);
    for (const route of routes) {
      this.#deps.log('a lock’s preimage was revealed on-chain: claiming the payer’s lock with it', {
        paymentId: route.paymentId,
        hash,
      });
      // Read late (the hub's follower behind), past the payer's expiry: the claim stands if revealed by then.
      this.#claimUpstream(route, route.lock!, preimage, revealedAt);
    }
  }

  /**
   * A lock left a channel: on the payer's channel, the conditional route is settled one way or the other. The hub's
   * lock toward a payee gone back to the hub (its payee gave it back, or it expired) makes that route dead: the hub
   * will pay nothing for it, so the payer's lock is given back now (`#die`) instead of at its own, later, expiry. In a
   * cluster the payee's process answers the route through the outbox instead; there the payer's lock waits for its
   * expiry.
   */
  onLockSettled(channelId: ChannelId, lock: Lock, outcome: 'claimed' | 'refunded'): void {
    if (lock.payer === 'hub') {
      const downstream = this.#routeOf(lock.hash, this.#deps.channels.get(channelId)?.params.device);
      if (outcome === 'refunded' && downstream?.lock && !this.#deps.cluster && downstream.fromChannel !== channelId)
        void this.#die(downstream, downstream.lock, 'the payee’s lock went back to the hub');
      return;
    }
    // The payer's channel holds one lock per hash: at most one route on the hash is paid from it.
    const routes = this.#byHash.get(lock.hash)?.values() ?? [];
    const deadKey = this.#deadKey(channelId, lock.hash);
    const route = [...routes].find((r) => r.fromChannel === channelId) ?? this.#dead.get(deadKey);
    if (!route) return;
    this.#untrack(route, lock.hash);
    if (this.#dead.get(deadKey)?.paymentId === route.paymentId) this.#dead.delete(deadKey);
    // The lock's outcome is in the channel's state already: only the route's record is left (retried, never rejects).
    void this.#finishLanded(route, outcome === 'claimed' ? 'delivered' : 'refunded');
  }

  #claimUpstream(route: RouteRecord, lock: Lock, preimage: Bytes32, revealedAt?: bigint): void {
    if (this.#claiming.has(route.paymentId)) return; // started already: shown again on every reconnect of the payer
    this.#claiming.add(route.paymentId);
    this.#deps.debug?.('claim upstream', { paymentId: route.paymentId, hash: lock.hash });
    this.#guardOnChain(route, lock, preimage);
    // The claim is shown again after every reconnect of the payer, until its claim state lands or the lock expires.
    this.#deps.channels.claim(route.fromChannel, lock.hash, preimage, revealedAt).catch((e: unknown) => {
      this.#claiming.delete(route.paymentId); // a cluster's next scan may try again
      this.#deps.log('the payer refused the hub’s claim of a conditional route', {
        paymentId: route.paymentId,
        code: isTrickleError(e) ? e.code : 'INTERNAL',
      });
    });
  }

  /**
   * If the payer has not taken the claim `lockMarginSeconds` before its lock expires (it is away, or refuses), reveal
   * the preimage on-chain: the adjudicator then gives the lock to the hub at settlement, and the hub refuses the
   * lock's return off-chain (`LOCK_CLAIMED`). Retried until mined or the expiry passes. A preimage the adjudicator
   * records as revealed (by anyone: the payee, a watchtower, the hub before a restart) is not revealed again, and a
   * reveal that fails while someone else's lands counts as done: a second reveal changes nothing on-chain but costs gas.
   * In a cluster the payer channel may be held by another process or by none, and several processes may guard one
   * route: whether the payer took the claim is read from the database at the margin, and one process reveals
   * (`ClusterRoutes.revealOnce`); the others keep looking until it is on-chain, to reveal should that one fail.
   */
  #guardOnChain(route: RouteRecord, lock: Lock, preimage: Bytes32): void {
    const reveal = this.#deps.reveal;
    if (!reveal || this.#guarding.has(route.paymentId)) return;
    this.#guarding.add(route.paymentId);
    const done = () => void this.#guarding.delete(route.paymentId);
    const cluster = this.#deps.cluster;
    const margin = BigInt(this.#deps.lockMarginSeconds ?? 60);
    let told = false;
    const check = async () => {
      // Claimed (or gone). Not asked in a cluster: a channel held elsewhere is not current here, or not here at all.
      if (!cluster && !this.#deps.channels.locksOf(route.fromChannel).some((l) => l.hash === lock.hash)) return done();
      // The chain's clock: at least the wall clock plus the largest lead its latest block has shown (a development
      // chain keeps timestamps ahead of the wall clock after bursts of blocks; a live chain's lead is about zero).
      // Unread (the node unreachable), the largest lead seen so far stands in for it; the reveal below retries.
      const latest =
        (await this.#deps.chainTime?.().catch((e: unknown) => {
          this.#deps.log('could not read the chain’s time: using the wall clock and the largest lead seen', {
            hash: lock.hash,
            error: String(e),
          });
          return undefined;
        })) ?? 0n;
      const lead = latest - this.#nowSec();
      if (lead > this.#chainLead) this.#chainLead = lead;
      const chainNow = this.#nowSec() + this.#chainLead;
      if (chainNow > lock.expiry) return done(); // too late on-chain: nothing a reveal could change
      if (chainNow < lock.expiry - margin) {
        // The chain's clock may run ahead of (or behind) ours: wait by its clock.
        setTimeout(() => void check(), Number(lock.expiry - margin - chainNow) * 1000).unref?.();
        return;
      }
      if (await this.#revealedBefore(route, lock)) return done();
      if (!told)
        this.#deps.log('the payer has not taken the hub’s claim: revealing the preimage on-chain', {
          paymentId: route.paymentId,
          hash: lock.hash,
        });
      told = true;
      const sent: Promise<bigint | 'elsewhere' | 'settled'> = cluster
        ? cluster.revealOnce(route.paymentId, lock.hash, () => reveal(preimage))
        : reveal(preimage);
      sent.then(
        (revealedAt) => {
          // Another process reveals: looked at again until the preimage is on-chain, in case it fails.
          if (revealedAt === 'elsewhere') return void setTimeout(() => void check(), 1000).unref?.();
          done();
          if (revealedAt !== 'settled')
            this.#deps.log('preimage revealed on-chain', {
              paymentId: route.paymentId,
              revealedAt: String(revealedAt),
            });
        },
        async (e: unknown) => {
          if (await this.#revealedBefore(route, lock)) return done(); // another party's reveal landed meanwhile
          this.#deps.log('revealing a preimage on-chain failed; retrying', {
            paymentId: route.paymentId,
            error: String(e),
          });
          // Until it is mined or the expiry passes (`check` stops then): giving up earlier leaves the hub paying the
          // payee while the payer's lock goes back to the payer.
          setTimeout(() => void check(), 1000).unref?.();
        },
      );
    };
    void check();
  }

  /**
   * Whether the adjudicator records the lock's preimage as revealed already (logged when it does). A failed read
   * answers false: the reveal is then sent, which is safe (a second reveal changes nothing on-chain).
   */
  async #revealedBefore(route: RouteRecord, lock: Lock): Promise<boolean> {
    const at = await this.#deps.revealedAt?.(lock.hash).catch(() => undefined);
    if (at === undefined || at === 0n) return false;
    this.#deps.log('the preimage is revealed on-chain already: not revealing it again', {
      paymentId: route.paymentId,
      hash: lock.hash,
      revealedAt: String(at),
    });
    return true;
  }

  /** Lock toward the payee with the earlier expiry; if that fails, the route is dead and the payer's lock given back. */
  #forwardLock(route: RouteRecord, lock: Lock): void {
    const fromRecord = this.#deps.channels.get(route.fromChannel);
    // The payee channel the route's check held a lock slot on, else one with a slot free now (after a restart).
    const slot = this.#lockHolds.get(route.paymentId)?.channel;
    const payee =
      fromRecord && !slot
        ? this.#payeeChannel(route.to, fromRecord.params.token, route.amount, true, route.paymentId)
        : undefined;
    const toChannel = this.#heldOn(route) ?? slot ?? payee?.carrier;
    const expiry = this.downstreamExpiry(lock.expiry, [route.fromChannel, toChannel]);
    if (!toChannel || expiry <= this.#nowSec()) {
      this.#lockHolds.delete(route.paymentId);
      void this.#die(route, lock, toChannel ? 'EXPIRY_TOO_SHORT' : 'NO_ROUTE');
      return;
    }
    this.#reserved.set(toChannel, (this.#reserved.get(toChannel) ?? 0n) + route.amount);
    const placed = this.#deps.channels.credit(toChannel, route.amount, {
      paymentId: route.paymentId,
      lock: { hash: lock.hash, expiry },
    });
    // Queued on the payee's channel now, where its lock room counts it: the hold has done its work.
    this.#lockHolds.delete(route.paymentId);
    placed.then(
      () => {
        this.#unreserve(toChannel, route.amount);
        this.#deps.debug?.('locked toward the payee', { paymentId: route.paymentId, expiry: String(expiry) });
      },
      (e: unknown) => {
        this.#unreserve(toChannel, route.amount);
        return this.#die(route, lock, isTrickleError(e) ? e.code : 'INTERNAL', toChannel);
      },
    );
  }

  /**
   * The hub's lock toward the payee was refused by the payee (e.g. a seller's guard refusing a lock below its price),
   * could not be placed, or went back to the hub: the route is dead (see `#dead`) — recorded first, then its slot is
   * freed and its payer's lock given back (`#bury`). Not
   * while a proposal of it is still outstanding on the payee's channel: the payee may yet countersign that lock, and
   * the route then settles by its claim or its expiry, holding its slot.
   */
  async #die(route: RouteRecord, lock: Lock, reason: string, toChannel?: ChannelId): Promise<void> {
    if (toChannel && this.#deps.channels.get(toChannel)?.outgoing?.paymentId === route.paymentId) {
      this.#deps.log('the hub’s lock toward the payee is still proposed: the route waits for its claim or expiry', {
        paymentId: route.paymentId,
        reason,
      });
      return;
    }
    this.#deps.log('conditional route dead; the payer’s lock is given back to it', {
      paymentId: route.paymentId,
      reason,
    });
    try {
      await this.#deps.committer.write([{ kind: 'meta', key: refusedRouteKey(route.paymentId), value: reason }]);
    } catch (e) {
      // Unrecorded, a restart would take it for a live route: it keeps its slot until its payer's lock settles.
      this.#deps.log('could not record a refused conditional route; it holds its hash and payee until it settles', {
        paymentId: route.paymentId,
        error: String(e),
      });
      return;
    }
    if (this.#routeOf(lock.hash, route.to)?.paymentId !== route.paymentId) return; // settled meanwhile
    this.#untrack(route, lock.hash);
    this.#bury(route, lock);
  }

  /** Forward a route whose payer update is durable. */
  forward(route: RouteRecord): void {
    this.#deps.debug?.('forward', { paymentId: route.paymentId, from: route.from, to: route.to });
    if (this.#deps.cluster) {
      // Its outbox row was committed with the payer's debit: the payee's process credits it (or locks toward it),
      // and the outcome comes back through the outbox (settle; a conditional route's preimage: conditional).
      this.#inFlightIds.add(route.paymentId);
      this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
      if (route.lock) this.#track(route, route.lock.hash);
      this.#deps.cluster.forward(route);
      return;
    }
    if (route.lock) {
      this.#inFlightIds.add(route.paymentId);
      this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
      this.#track(route, route.lock.hash);
      this.#forwardLock(route, route.lock);
      return;
    }
    this.#inFlightIds.add(route.paymentId);
    this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
    const fromRecord = this.#deps.channels.get(route.fromChannel);
    const payee = fromRecord ? this.#payeeChannel(route.to, fromRecord.params.token, route.amount) : undefined;
    // A payee channel where the payee may still hold a hub-signed state of this payment (it refused it before a
    // restart) takes it again, open or not: its credit settles with that state, never as a second payment elsewhere.
    const toChannel = this.#heldOn(route) ?? payee?.carrier;
    if (toChannel) this.#reserved.set(toChannel, (this.#reserved.get(toChannel) ?? 0n) + route.amount);
    else for (const id of payee?.open ?? []) this.#deps.onShortfall?.(id, route.amount);
    const deliver = toChannel
      ? this.#deps.channels.credit(toChannel, route.amount, { paymentId: route.paymentId })
      : Promise.reject(
          new TrickleError(payee?.open.length ? 'HUB_LIQUIDITY' : 'NO_ROUTE', 'no payee channel can carry the payment'),
        );
    deliver.then(
      () => {
        this.#unreserve(toChannel, route.amount);
        return this.#finishLanded(route, 'delivered', toChannel);
      },
      (e: unknown) => {
        this.#unreserve(toChannel, route.amount);
        return this.#refund(route, isTrickleError(e) ? e.code : 'INTERNAL');
      },
    );
  }

  /**
   * The payee channel holding a hub-signed state of this route's payment, if any: the hub's proposal of it (restored
   * with the record after a restart, not yet countersigned) or an unsettled one (refused). The route goes there again,
   * and its credit joins that state: forwarded to the payee's other channel (the one with the most room now), it would
   * be a second payment, and a payee that countersigned both would be paid twice.
   */
  #heldOn(route: RouteRecord): ChannelId | undefined {
    return this.#deps.channels.channelsOf(route.to).find((id) => {
      const r = this.#deps.channels.get(id);
      return r?.outgoing?.paymentId === route.paymentId || r?.unsettled?.some((u) => u.paymentId === route.paymentId);
    });
  }

  #unreserve(id: ChannelId | undefined, amount: bigint): void {
    if (!id) return;
    const left = (this.#reserved.get(id) ?? 0n) - amount;
    if (left > 0n) this.#reserved.set(id, left);
    else this.#reserved.delete(id);
  }

  async #refund(route: RouteRecord, reason: string, attempt = 1): Promise<void> {
    if (attempt === 1)
      this.#deps.log('routed payment not delivered: refunding', { paymentId: route.paymentId, reason });
    try {
      await this.#deps.channels.credit(route.fromChannel, route.amount, { paymentId: route.paymentId });
    } catch (e) {
      const code = isTrickleError(e) ? e.code : 'INTERNAL';
      // The refund is owed: retry with backoff while the payer's channel is open (it may be offline or busy).
      // A closed channel cannot take it; the route then stays pending in the store for the operator.
      if (code !== 'CHANNEL_NOT_OPEN' && code !== 'CHANNEL_FINAL' && attempt < OUTCOME_TRIES) {
        setTimeout(() => void this.#refund(route, reason, attempt + 1), retryDelayMs(attempt));
        return;
      }
      this.#deps.log('refund of a routed payment could not be delivered; left pending', {
        paymentId: route.paymentId,
        code,
      });
      this.#release(route);
      return;
    }
    // The refund landed: only its record is left to write. Asking the credit again would refund the payer twice.
    await this.#finishLanded(route, 'refunded');
  }

  /**
   * Record the outcome of a route whose credit landed (to the payee, or the refund to the payer), or whose payer's lock
   * left its channel (claimed or taken back). A failed write is
   * retried with backoff (only the record: the credit is never asked again, it would pay twice) and never rejects (an
   * unhandled rejection ends the hub's process). Still failing after the retries, the route is left pending in the
   * store: a restart finishes it from the credit's marker, written with the credit's state.
   */
  async #finishLanded(route: RouteRecord, status: 'delivered' | 'refunded', toChannel?: ChannelId, attempt = 1) {
    try {
      if (route.lock) await this.#finishConditional(route, status);
      else await this.#finish(route, status, toChannel);
    } catch (e) {
      if (attempt === 1)
        this.#deps.log('could not record a routed payment’s outcome; retrying', {
          paymentId: route.paymentId,
          status,
          error: String(e),
        });
      if (attempt < OUTCOME_TRIES) {
        const retry = () => void this.#finishLanded(route, status, toChannel, attempt + 1);
        setTimeout(retry, retryDelayMs(attempt)).unref?.();
        return;
      }
      this.#deps.log('the outcome of a routed payment could not be recorded; left pending until a restart', {
        paymentId: route.paymentId,
        status,
        error: String(e),
      });
      this.#told.delete(route.paymentId);
      if (this.#inFlightIds.has(route.paymentId)) this.#release(route);
    }
  }

  /**
   * Record a route's outcome and tell its payer. Called once the outcome is durable where it counts: the credit's
   * state and its marker (to the payee, or the refund to the payer) committed together, an outbox row in a cluster, or
   * the payer's lock gone. The payer's `receipt` frame therefore goes out before the route's own record is written,
   * not after: that record is the hub's bookkeeping (a restart rebuilds it from the marker, `resume`), and waiting
   * for it cost every routed payment one more durable write in series. Told once, however often the write is retried.
   */
  async #finish(route: RouteRecord, status: 'delivered' | 'refunded', toChannel?: ChannelId): Promise<void> {
    this.#deps.debug?.('finish', { paymentId: route.paymentId, status });
    // A conditional route's payer learns its outcome from its own lock (claimed or taken back), not from a receipt.
    if (!route.lock && !this.#told.has(route.paymentId)) {
      this.#told.add(route.paymentId);
      this.#deps.restoreExtras?.(route);
      this.#deps.send(route.from, {
        t: 'receipt',
        id: 0,
        paymentId: route.paymentId,
        delivered: status === 'delivered',
      });
    }
    const finishedAt = this.#deps.now?.() ?? Date.now();
    await this.#deps.committer.write([{ kind: 'route', route: { ...route, status, toChannel, finishedAt } }]);
    this.#told.delete(route.paymentId);
    this.#deps.cluster?.finished(route.paymentId);
    // Counted here only if it was forwarded (or resumed) here: a cluster process may settle another one's route.
    if (this.#inFlightIds.has(route.paymentId)) this.#release(route);
    this.#forgetLater(route.paymentId);
    this.#deps.onResult(status);
  }

  #release(route: RouteRecord): void {
    const left = (this.#inFlight.get(route.from) ?? 0n) - route.amount;
    if (left > 0n) this.#inFlight.set(route.from, left);
    else this.#inFlight.delete(route.from);
  }
}
