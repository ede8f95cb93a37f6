import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import type { RouteInstruction } from '@trickle/protocol/codec';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import type { ChannelLeases } from './leases.js';
import { hubSpendable } from './liquidity.js';
import type { OutboxRow, RouteOutbox } from './store/postgres-outbox.js';
import type { ChannelRecord, OutboxEntry, RouteRecord, StoreWrite } from './store/types.js';

/** What cluster routing needs of the channel table. */
export interface ClusterRouteChannels {
  get(channelId: ChannelId): ChannelRecord | undefined;
  credit(
    channelId: ChannelId,
    amount: bigint,
    meta: { paymentId: Bytes32; lock?: { hash: Bytes32; expiry: bigint } | undefined },
  ): Promise<unknown>;
}

/** Dependencies of {@link ClusterRoutes}. */
export interface ClusterRoutesDeps {
  readonly outbox: RouteOutbox;
  readonly leases: ChannelLeases;
  readonly channels: ClusterRouteChannels;
  /** How often to look at the outbox without being woken (the fallback to LISTEN/NOTIFY). */
  readonly pollMs: number;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
  readonly debug?: ((msg: string, fields: Record<string, unknown>) => void) | undefined;
  /** The clock the hub's locks expire by, in seconds (default: the wall clock), as the router's. */
  readonly nowSec?: (() => bigint) | undefined;
}

/** The terms of the hub's lock toward the payee of a conditional route: the payer's hash, the earlier expiry. */
export interface ForwardLock {
  readonly hash: Bytes32;
  readonly expiry: bigint;
}

/** The payee channel chosen when a route was checked, until the payer's commit writes its outbox row. */
interface Chosen {
  readonly payee: Address;
  readonly toChannel: ChannelId;
  readonly token: Address;
  readonly lock?: ForwardLock | undefined;
}

/** A payment being worked on here, under the lease epoch of the channel it is credited on. */
interface Work {
  readonly epoch: bigint;
  readonly channelId: ChannelId;
}

/** Bound on routes checked whose payer update has not been committed yet (the rest were refused by the engine). */
const MAX_CHOSEN = 10_000;

/** Codes after which a credit may be tried again later (nothing was decided): anything else refuses the payment. */
const RETRY = new Set(['STORE_FAILURE', 'DISCONNECTED', 'TIMEOUT', 'WRONG_CHANNEL', 'INTERNAL']);

/**
 * Routed payments in a hub cluster, through the database's outbox (see `store/postgres-outbox.ts`).
 *
 * - **Payer's side.** A route is checked against the payee's channels: served here (connected to this process), or
 *   held by a live lease of another process (looked up in the database; a payee connected nowhere is refused up
 *   front with `NO_ROUTE`, as on one process). The chosen payee channel goes into an outbox row written in the same
 *   commit as the payer's debit, fenced by the payer channel's lease.
 * - **Payee's side.** The process holding the payee channel's lease credits it: at once when it is this very
 *   process, else when woken by NOTIFY (or by its poll). The row is answered in the commit that holds the payee's
 *   countersigned credit, or refused (a transaction fenced by the same lease) when the credit cannot be made.
 * - **Back to the payer.** The process holding the payer channel's lease reads the answer, refunds a refused payment
 *   (a credit on the payer's channel, which answers the row `refunded`), and records the outcome on the route with
 *   a receipt to the payer.
 *
 * - **Conditional routes.** The row carries the hub's lock toward the payee (the payer's hash, the expiry T − Δ the
 *   payer's process computed); the payee channel's holder forwards it as a lock credit, and the payee's commit that
 *   holds the lock marks the row `locked`. When the payee claims, the commit that makes its preimage durable marks
 *   the row `claimed` with the preimage; the payer channel's holder (woken by NOTIFY, or its poll, also after a
 *   takeover) claims the payer's lock with it. A lock that cannot be forwarded (or that the payee refused) is
 *   refused; the payer's lock then returns to the payer at its own expiry, as on one process, and a refused row is
 *   never claimed — not when the payee claims another route on the hash — nor holds the hash against a new route to
 *   that payee. Nothing is refunded by a credit. A row claimed while no process holds the payer channel (the payer
 *   went offline after locking) is guarded by every process's scan: one of them reveals the preimage on-chain before
 *   the payer's expiry unless the payer takes the hub's claim by then ({@link ClusterRoutes.revealOnce}), as a single
 *   hub does for a payer that stays away.
 *
 * Nothing is kept only in memory: whoever takes a channel's lease over also takes the outbox rows waiting on it
 * (its next scan finds them), so a route a dead process left halfway is finished by the next holders of its two
 * channels. A credit proposal already signed and stored by the dead process is restored with the channel and
 * joined (same payment id), not made again; the store refuses any proposal of a payment that may not be paid there.
 */
export class ClusterRoutes {
  readonly #deps: ClusterRoutesDeps;
  readonly #chosen = new Map<Bytes32, Chosen>();
  /** Payee side: payments being credited here, with the payee channel's lease epoch they are credited under. */
  readonly #working = new Map<Bytes32, Work>();
  /** Payer side: answers being settled here, with the payer channel's lease epoch. */
  readonly #settling = new Map<Bytes32, Work>();
  /** Payer side: routes forwarded here, counted in the router's in-flight limit while their payer channel is held. */
  readonly #forwarded = new Map<Bytes32, { readonly route: RouteRecord; readonly epoch: bigint }>();
  #settle: ((route: RouteRecord, status: 'delivered' | 'refunded', toChannel?: ChannelId) => Promise<void>) | undefined;
  #abandon: ((route: RouteRecord) => void) | undefined;
  #conditional: ((route: RouteRecord, preimage: Bytes32 | undefined, refused: boolean) => Promise<boolean>) | undefined;
  #guard: ((route: RouteRecord, preimage: Bytes32) => void) | undefined;
  /** When the routes no process guards were last looked for (at most once per poll: NOTIFY wakes scans far more often). */
  #unguardedAt = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #scanning: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(deps: ClusterRoutesDeps) {
    this.#deps = deps;
  }

  /**
   * Start serving the outbox: `settle` records a route's outcome on the payer's side, `abandon` stops counting a route
   * whose payer channel moved to another process, `conditional` looks after a conditional route whose payer channel is
   * held here (claims upstream with a preimage the payee showed, records a lock that left the payer's channel; a
   * refused row's route is dead: never claimed, its hash and payee free for another route), `guard` reveals on-chain
   * before the payer's expiry the preimage of a claimed route whose payer channel no process holds, unless the payer
   * takes the hub's claim by then (see {@link revealOnce}) — the router's.
   */
  start(
    settle: (route: RouteRecord, status: 'delivered' | 'refunded', toChannel?: ChannelId) => Promise<void>,
    abandon: (route: RouteRecord) => void,
    conditional?: (route: RouteRecord, preimage: Bytes32 | undefined, refused: boolean) => Promise<boolean>,
    guard?: (route: RouteRecord, preimage: Bytes32) => void,
  ): void {
    this.#settle = settle;
    this.#abandon = abandon;
    this.#conditional = conditional;
    this.#guard = guard;
    this.#deps.outbox.onWake(() => this.wake());
    this.#timer = setInterval(() => this.wake(), this.#deps.pollMs);
    this.#timer.unref?.();
  }

  /** Stop looking at the outbox (what is in flight finishes or is taken over by the next holders). */
  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
  }

  /**
   * Check a route whose payee is not served here: one of its channels in the token must be held by another live
   * process and have room for the amount (less what open outbox rows will still credit on it). With `lockHash` (a
   * conditional route), no other conditional route with that hash toward that payee may be in flight in the cluster
   * (its channel holds one lock per hash; routes on the hash toward other payees do not block it).
   * @returns the chosen payee channel's challenge duration (a conditional route's Δ depends on it)
   * @throws TrickleError NO_ROUTE (payee offline, no channel in the token, payment id used) / HUB_LIQUIDITY /
   * STORE_FAILURE (the database cannot be reached) / INVALID_ARGUMENT (the lock's hash is in flight already)
   */
  async checkRemote(token: Address, route: RouteInstruction, lockHash?: Bytes32): Promise<bigint> {
    let channels: { record: ChannelRecord; reserved: bigint }[];
    let used: boolean;
    let locked: boolean;
    try {
      [channels, used, locked] = await Promise.all([
        this.#deps.outbox.payeeChannels(route.to),
        this.#deps.outbox.used(route.paymentId),
        lockHash !== undefined ? this.#deps.outbox.lockInFlight(lockHash, route.to) : false,
      ]);
    } catch (e) {
      throw new TrickleError('STORE_FAILURE', 'cannot look the payee up in the cluster’s database', { cause: e });
    }
    if (locked)
      throw new TrickleError('INVALID_ARGUMENT', 'a conditional route with this hash to this payee is already pending');
    if (used) throw new TrickleError('NO_ROUTE', 'payment id already used');
    let carrier: ChannelId | undefined;
    let duration = 0n;
    let best = -1n;
    let open = 0;
    for (const { record: r, reserved } of channels) {
      if (r.status !== 'open' || r.latest.state.isFinal || r.params.token !== token) continue;
      open++;
      const room = hubSpendable(r) - reserved;
      if (room >= route.amount && room > best) {
        best = room;
        carrier = r.channelId;
        duration = r.params.challengeDuration;
      }
    }
    if (open === 0)
      throw new TrickleError('NO_ROUTE', 'payee has no open channel in this token or is offline', {
        details: { to: route.to },
      });
    if (!carrier)
      throw new TrickleError(
        'HUB_LIQUIDITY',
        `the hub has too little of its own funds in the payee’s channel to carry this payment (${best < 0n ? 0n : best} available, ${route.amount} needed)`,
        { details: { to: route.to, amount: route.amount } },
      );
    this.#choose(route.paymentId, { payee: route.to, toChannel: carrier, token });
    return duration;
  }

  /** The hub's lock toward the payee of a conditional route checked by {@link checkRemote}. */
  forwardLock(paymentId: Bytes32, lock: ForwardLock): void {
    const c = this.#chosen.get(paymentId);
    if (c) this.#chosen.set(paymentId, { ...c, lock });
  }

  /** A route whose payee is served here, on `toChannel` (undefined: none can carry it; the row is refused at once). */
  chooseLocal(
    token: Address,
    route: RouteInstruction,
    toChannel: ChannelId | undefined,
    lock?: ForwardLock | undefined,
  ): void {
    if (toChannel) this.#choose(route.paymentId, { payee: route.to, toChannel, token, lock });
  }

  #choose(paymentId: Bytes32, c: Chosen): void {
    if (this.#chosen.size >= MAX_CHOSEN) this.#chosen.delete(this.#chosen.keys().next().value!);
    this.#chosen.set(paymentId, c);
  }

  /** The outbox row to commit with the payer's debit. */
  writesFor(route: RouteRecord): StoreWrite[] {
    const c = this.#chosen.get(route.paymentId);
    // A conditional route is forwarded only with the terms of the hub's lock.
    if (!c || (route.lock !== undefined) !== (c.lock !== undefined)) return [];
    const entry: OutboxEntry = {
      paymentId: route.paymentId,
      fromChannel: route.fromChannel,
      payer: route.from,
      payee: c.payee,
      toChannel: c.toChannel,
      token: c.token,
      amount: route.amount,
      ...(c.lock ? { lock: c.lock } : {}),
    };
    return [{ kind: 'outbox', entry }];
  }

  /** The payer's debit and the outbox row are durable: credit the payee now when it is served here. */
  forward(route: RouteRecord): void {
    const c = this.#chosen.get(route.paymentId);
    this.#chosen.delete(route.paymentId);
    const epoch = this.#deps.leases.epochOf(route.fromChannel);
    if (epoch !== undefined) this.#forwarded.set(route.paymentId, { route, epoch });
    if (c && this.#deps.leases.epochOf(c.toChannel) !== undefined) {
      void this.#deliver(
        { ...route, toChannel: c.toChannel, payee: c.payee, token: c.token, payer: route.from, lock: c.lock },
        false,
      );
    }
  }

  /** A route's outcome is recorded here (its payer channel's route record): it no longer counts as forwarded here. */
  finished(paymentId: Bytes32): void {
    this.#forwarded.delete(paymentId);
  }

  /** Look at the outbox soon (NOTIFY, the poll, or a change made here). */
  wake(): void {
    if (this.#stopped || !this.#settle) return;
    if (this.#scanning) {
      this.#again = true;
      return;
    }
    this.#scanning = this.#scan()
      .catch((e: unknown) => {
        // The database is unreachable: the poll looks again.
        this.#deps.debug?.('outbox scan failed', { error: e instanceof Error ? e.message : String(e) });
      })
      .finally(() => {
        this.#scanning = undefined;
        if (this.#again) {
          this.#again = false;
          this.wake();
        }
      });
  }

  async #scan(): Promise<void> {
    const leases = this.#deps.leases;
    // Work started under a lease since lost (or lost and taken again: the channel may have been reloaded) is
    // abandoned; its rows are found again below when the channel is held.
    for (const [pid, w] of this.#working) if (leases.epochOf(w.channelId) !== w.epoch) this.#working.delete(pid);
    for (const [pid, w] of this.#settling) if (leases.epochOf(w.channelId) !== w.epoch) this.#settling.delete(pid);
    for (const [pid, f] of this.#forwarded) {
      if (leases.epochOf(f.route.fromChannel) === f.epoch) continue;
      this.#forwarded.delete(pid);
      this.#abandon?.(f.route); // its payer's next process settles it
    }
    const { deliver, answered, conditional } = await this.#deps.outbox.scan(leases.heldChannels());
    for (const row of deliver) void this.#deliver(row, true);
    for (const { row, route } of answered) void this.#answer(row, route);
    for (const { row, route } of conditional) void this.#upstream(row, route);
    // A payer that went offline after locking leaves its channel to no process (its lease released or lapsed): the
    // payee's claim is then claimed upstream by nobody, and without a reveal the payer's lock would go back to it at
    // its expiry although the payee was paid. Every process guards such routes; one reveals (`revealOnce`).
    if (this.#guard && Date.now() - this.#unguardedAt >= this.#deps.pollMs) {
      this.#unguardedAt = Date.now();
      for (const { row, route } of await this.#deps.outbox.unguarded())
        if (row.preimage !== undefined) this.#guard(route, row.preimage);
    }
  }

  /**
   * Reveal the preimage of a conditional route's lock on-chain, once in the cluster: every process guarding the route
   * (the holder of its payer channel, and each one that found it unguarded) asks, and only the one holding the
   * database's turn to reveal its hash reveals (`RouteOutbox.revealTurn`), renewing the turn while its transaction is
   * under way and giving it up once it is mined. The others ask again later: should that process die or its reveal
   * fail, the turn lapses after the lease time and the next one reveals. A turn that cannot be read (the database
   * unreachable) reveals anyway: a second reveal costs only gas, none lets the payer take the lock back although the
   * payee was paid.
   * @returns when the preimage became known on-chain; `elsewhere` while another process holds the turn; `settled` once
   * the route's row is settled (the payer took the hub's claim, or its lock back): nothing to reveal
   */
  async revealOnce(
    paymentId: Bytes32,
    hash: Bytes32,
    reveal: () => Promise<bigint>,
  ): Promise<bigint | 'elsewhere' | 'settled'> {
    const outbox = this.#deps.outbox;
    const ms = this.#deps.leases.leaseMs;
    let turn: 'mine' | 'elsewhere' | 'settled';
    try {
      turn = await outbox.revealTurn(paymentId, hash, ms);
    } catch (e) {
      this.#deps.log('cannot read the turn to reveal a preimage: revealing it anyway', {
        paymentId,
        hash,
        error: e instanceof Error ? e.message : String(e),
      });
      return reveal();
    }
    if (turn !== 'mine') return turn;
    const renew = setInterval(() => {
      outbox.revealTurn(paymentId, hash, ms).catch((e: unknown) => {
        // Once it lapses another process may reveal too: gas, nothing more.
        this.#deps.debug?.('cannot renew the turn to reveal a preimage', {
          hash,
          error: e instanceof Error ? e.message : String(e),
        });
      });
    }, ms / 4);
    renew.unref?.();
    try {
      const at = await reveal();
      await outbox.revealDone(hash).catch((e: unknown) => {
        // The turn lapses by itself; the others find the preimage on-chain and do not reveal it again.
        this.#deps.debug?.('cannot give up the turn to reveal a preimage', {
          hash,
          error: e instanceof Error ? e.message : String(e),
        });
      });
      return at;
    } finally {
      clearInterval(renew);
    }
  }

  /** Payer's side of a conditional route: the router claims upstream with a known preimage, or records the outcome. */
  async #upstream(row: OutboxRow, route: RouteRecord): Promise<void> {
    const epoch = this.#deps.leases.epochOf(row.fromChannel);
    if (epoch === undefined || !this.#conditional) return;
    // Counted as forwarded here while its payer channel is held here (abandoned to the next holder otherwise).
    if (!this.#forwarded.has(row.paymentId)) this.#forwarded.set(row.paymentId, { route, epoch });
    try {
      if (!(await this.#conditional(route, row.preimage, row.status === 'refused')))
        this.#forwarded.delete(row.paymentId);
    } catch (e) {
      this.#deps.debug?.('conditional route’s outcome not recorded yet (the next scan retries)', {
        paymentId: row.paymentId,
        error: e instanceof Error ? e.message : String(e),
      });
    }
  }

  /** Payee's side: credit the payee on the row's channel, once. */
  async #deliver(row: OutboxEntry, take: boolean): Promise<void> {
    const pid = row.paymentId;
    const epoch = this.#deps.leases.epochOf(row.toChannel);
    if (epoch === undefined || this.#working.has(pid)) return;
    const mine: Work = { epoch, channelId: row.toChannel };
    this.#working.set(pid, mine);
    try {
      if (take && !(await this.#deps.outbox.take(pid, epoch))) return; // answered meanwhile, or the lease moved
      this.#deps.debug?.('crediting a routed payment', { paymentId: pid, toChannel: row.toChannel, take });
      const lock = row.lock;
      if (lock && this.#channelHasLock(row.toChannel, lock.hash)) return; // forwarded: the row is marked at its commit
      if (lock && lock.expiry <= this.#nowSec())
        throw new TrickleError('LOCK_EXPIRED', 'the hub’s lock toward the payee would have expired already');
      // Joins a proposal of this payment restored with the channel (a previous holder signed and stored it). A
      // conditional route's credit is the hub's lock (its commit marks the row `locked`).
      await this.#deps.channels.credit(row.toChannel, row.amount, lock ? { paymentId: pid, lock } : { paymentId: pid });
    } catch (e) {
      if (this.#working.get(pid) !== mine) return; // abandoned: the lease moved
      const code = isTrickleError(e) ? e.code : 'INTERNAL';
      if (RETRY.has(code)) return; // nothing decided: the next scan tries again
      // The payee cannot be paid on this channel: refuse, so the payer is refunded. Not while a proposal of this
      // payment is outstanding on it (the device may still countersign it).
      if (this.#deps.channels.get(row.toChannel)?.outgoing?.paymentId === pid) return;
      this.#deps.log('routed payment not delivered: refusing it, the payer is refunded', { paymentId: pid, code });
      try {
        await this.#deps.outbox.refuse(pid, epoch, code);
      } catch (err) {
        this.#deps.log('cannot refuse a routed payment yet (the next scan retries)', {
          paymentId: pid,
          error: err instanceof Error ? err.message : String(err),
        });
      }
    } finally {
      if (this.#working.get(pid) === mine) this.#working.delete(pid);
    }
  }

  #channelHasLock(channelId: ChannelId, hash: Bytes32): boolean {
    return (this.#deps.channels.get(channelId)?.locks ?? []).some((l) => l.hash === hash && l.payer === 'hub');
  }

  #nowSec(): bigint {
    return this.#deps.nowSec?.() ?? BigInt(Math.floor(Date.now() / 1000));
  }

  /** Payer's side: the row is answered; refund a refused payment, then record the outcome and tell the payer. */
  async #answer(row: OutboxRow, route: RouteRecord): Promise<void> {
    const pid = row.paymentId;
    const epoch = this.#deps.leases.epochOf(row.fromChannel);
    if (epoch === undefined || this.#settling.has(pid)) return;
    const mine: Work = { epoch, channelId: row.fromChannel };
    this.#settling.set(pid, mine);
    try {
      if (row.status === 'delivered') await this.#settle!(route, 'delivered', row.toChannel);
      else {
        // Joins a refund proposal restored with the channel; the store refuses a refund before the row is refused.
        if (row.status === 'refused') await this.#deps.channels.credit(row.fromChannel, row.amount, { paymentId: pid });
        await this.#settle!(route, 'refunded');
      }
      this.#forwarded.delete(pid);
    } catch (e) {
      this.#deps.debug?.('routed payment’s outcome not recorded yet (the next scan retries)', {
        paymentId: pid,
        error: e instanceof Error ? e.message : String(e),
      });
    } finally {
      if (this.#settling.get(pid) === mine) this.#settling.delete(pid);
    }
  }
}
