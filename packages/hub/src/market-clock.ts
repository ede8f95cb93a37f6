import {
  type PublishedClearing,
  clearRound,
  clearingDigestV2,
  hashClearing,
  publishedClearingDigest,
  hashOrder,
  splitClearing,
  validateOrder,
  escrowFor,
  type ClearingRecord,
  type Order,
} from '@trickle/market';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import type { Message } from '@trickle/protocol/codec';
import type { Signer, Verifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId, Domain, SignedState } from '@trickle/protocol/types';
import { escrowKey, type ChannelTable, type EscrowRecord } from './channels.js';
import type { Committer } from './committer.js';
import { fencedChannels } from './leases.js';
import type { MarketRounds, MarketWrite } from './market-rounds.js';
import type { HubStore } from './store/types.js';

/** Options of the market: the token it settles in, round length and hub fee. */
export interface MarketOptions {
  /**
   * The token the market settles in (an ERC20 address, or the zero address for ETH): a bid's escrow is taken, and a
   * credit paid, only on a channel in this token. Required: the hub holds channels in any token, and a market that
   * took a bid's escrow in one token and paid the seller in another would pay real money for worthless tokens.
   */
  readonly token: Address;
  /** Round length in ms (default 1000). */
  readonly roundMs?: number;
  /** Hub fee on seller proceeds, in basis points (default 0). */
  readonly feeBps?: bigint;
  /**
   * How many of the latest rounds keep their stored clearing record once every credit it owes has landed (default
   * 1,000); older ones are deleted. A record whose credits have not all landed is kept, however old.
   */
  readonly keepClearings?: number;
  /**
   * The most entries one round's clearing record takes (default {@link DEFAULT_MAX_ROUND_ORDERS}): its orders plus the
   * escrows it refunds, a bid and its escrow counting once (one order id). An order or escrow payment that would take
   * its round past it is refused with `LIMIT_EXCEEDED` (nothing stored, the escrow not taken): a record needing more
   * than `MAX_CLEARING_PARTS` parts could not be published and its round's credits would stay owed for ever. The
   * default fits the worst case (every field at its longest, each order its own participant and market, each id a
   * refund); a market whose orders are shorter may raise it, measured against its own records. In a cluster the
   * database counts every process's orders and escrows per round (see {@link MarketRounds.limitEntries}), so the bound
   * holds for the round whatever process took them: give every process the same bound (each refuses past its own).
   */
  readonly maxRoundOrders?: number;
  /**
   * The most orders one participant may place in one round (default {@link DEFAULT_MAX_PARTICIPANT_ORDERS}); past it an
   * order is refused with `LIMIT_EXCEEDED` (`details.refused: 'participant'`). An ask costs nothing to place, so without
   * it one device could take every entry of a round ({@link maxRoundOrders}) and leave the others none. Its escrow
   * payments are bounded the same: one past its entries of the open round (its escrows not backing a bid of the next
   * round, and its orders of the open round, one per id) is refused `LIMIT_EXCEEDED`, nothing moves. Counted by the
   * process the device is connected to (in a cluster, the orders placed through it).
   */
  readonly maxParticipantOrders?: number;
}

/** The default of {@link MarketOptions.maxParticipantOrders}: 30 devices are needed to fill a default round. */
export const DEFAULT_MAX_PARTICIPANT_ORDERS = 100;

/**
 * The default bound of a round's entries ({@link MarketOptions.maxRoundOrders}). Measured worst case (every bigint at
 * its largest, 64-character market names, a market and a participant per order, crossing pairs so every order has a
 * fill, a 78-digit refund under every id): 1,253 bytes of record JSON per entry; 64 parts of 61,440 bytes hold
 * 3,138 such entries, so 3,000 leaves room for the record's envelope.
 */
export const DEFAULT_MAX_ROUND_ORDERS = 3000;

export interface MarketClockDeps {
  readonly channels: ChannelTable;
  readonly committer: Committer;
  readonly store: HubStore;
  readonly signer: Signer;
  readonly verifier: Verifier;
  readonly domain: Domain;
  readonly send: (device: Address, msg: Message) => boolean;
  /**
   * The wire version of the device's connection (`Session.wireVersion`), undefined when it is not connected: a device
   * below version 3 is sent its clearings signed the old way (`clearingDigestV2`), which is all it verifies. Absent:
   * every device is sent the current signature.
   */
  readonly wireVersion?: ((device: Address) => number | undefined) | undefined;
  /** Send to every connected device. */
  readonly broadcast: (msg: Message) => void;
  readonly credit: (channelId: ChannelId, amount: bigint, meta: { round?: bigint | undefined }) => Promise<SignedState>;
  readonly onRound: (record: ClearingRecord) => void;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
  /** Several hub processes run this market on one database (absent: this process is the market). */
  readonly cluster?: MarketClusterDeps | undefined;
}

/** What the market clock of one process of a hub cluster needs (see {@link MarketRounds}). */
export interface MarketClusterDeps {
  readonly rounds: MarketRounds;
  /** Whether this process holds the channel's lease now: only the holder of a channel credits it. */
  readonly holds: (channelId: ChannelId) => boolean;
  /**
   * Take the channel's lease back when its device is connected here but the lease ran out here (the database was
   * unreachable); resolves whether it is held now (false: its device is not connected here), fails when it could not
   * be taken yet. Absent: such a credit waits for the device's next frame or reconnection.
   */
  readonly hold?: ((channelId: ChannelId) => Promise<boolean>) | undefined;
}

/**
 * A round's `clearing` frames for a device of the given wire version (the record is the same; the signature is over
 * the record and its refunds from version 3 on, over the record only before).
 */
type ClearingFrames = (wireVersion: number) => Message[];

/** A clearing as the hub stores it: what it published, plus the channel that pays each participant. */
interface StoredClearing extends PublishedClearing {
  readonly channels: Readonly<Record<string, ChannelId>>;
}

/** Cluster: an order received, waiting for its placement transaction. */
interface WaitingOrder {
  readonly device: Address;
  readonly terms: Omit<Order, 'arrival'>;
  readonly sig: string;
  readonly resolve: (p: PlacedOrder) => void;
  readonly reject: (e: unknown) => void;
}

/** Cluster: the most orders one placement transaction carries. */
const MAX_PLACEMENTS = 256;

interface PlacedOrder {
  readonly order: Order;
  readonly sig: string;
  readonly channelId: ChannelId;
  /**
   * The fee this process announced when it took the order: the most the device agreed to (its client refuses a
   * clearing at a higher one). Absent in records stored before it was kept.
   */
  readonly feeBps?: bigint | undefined;
}

const ROUND_KEY = 'market/round';
const ARRIVAL_KEY = 'market/arrival';
const ESCROW_PREFIX = 'market/escrow/';
const ORDER_PREFIX = 'market/order/';
const orderPrefix = (round: bigint) => `${ORDER_PREFIX}${round.toString().padStart(20, '0')}/`;
const orderKey = (round: bigint, id: Bytes32) => `${orderPrefix(round)}${id}`;
const clearingKey = (round: bigint) => `market/clearing/${round.toString().padStart(20, '0')}`;
const STRANDED_PREFIX = 'market/stranded/';
const strandedKey = (participant: Address, round: bigint) =>
  `${STRANDED_PREFIX}${participant}/${round.toString().padStart(20, '0')}`;

/**
 * Cluster: a round credit whose channel closed without it (`market/stranded/<participant>/<round>`), owed on another
 * channel of the participant. `on`: the channel it is being paid on, claimed by that channel's holder (only it can
 * credit the channel, so the credit is paid once whatever process claims it); absent while no channel took it.
 */
interface StrandedMark {
  readonly participant: Address;
  readonly round: bigint;
  readonly amount: bigint;
  readonly on?: ChannelId | undefined;
}

/**
 * The market clock: takes signed orders (bids only once their worst case is escrowed in a channel payment), clears
 * each round on a timer with `@trickle/market`, publishes the hub-signed clearing record to the participants and
 * sends each exactly one hub-signed credit (refund of the unused escrow plus seller proceeds), netting every
 * market of the round into that one channel update. Orders, escrows and clearings are durable, so a restarted hub
 * pays every credit it owes.
 *
 * In a cluster (`deps.cluster`), the market's state is the database's, shared by every process: an order is placed
 * in one transaction with the open round (whichever process the device is connected to), the process holding the
 * round lease clears each round in one fenced transaction that reads every process's orders and escrows, and every
 * process pays the credits of the channels it holds: those of a round it cleared at once, those of a round cleared
 * elsewhere when it sees the round move on (it polls the open round), and those owed to a device whose channels it
 * takes over once it holds them. A channel's round credits land in round order, one at a time, so its state's
 * `round` says which have landed: a credit is never paid twice, whichever process pays it.
 */
export class MarketClock {
  round = 1n;
  readonly #deps: MarketClockDeps;
  readonly #feeBps: bigint;
  /** The market's token, lowercase (channel parameters carry it checksummed). */
  readonly #token: string;
  #arrival = 0n;
  readonly #orders = new Map<bigint, PlacedOrder[]>();
  /** Orders whose placement is being written (not yet in `#orders`), by id. */
  readonly #placingIds = new Map<
    Bytes32,
    { readonly round: bigint; readonly side: Order['side']; readonly device: Address }
  >();
  readonly #escrows = new Map<Bytes32, EscrowRecord>();
  /**
   * Escrow payments accepted by {@link checkEscrow} and not yet durable ({@link onEscrow}), by order id, with the open
   * round when checked: counted in the open round's entries meanwhile. One the engine refused after the check never
   * lands; it is forgotten two rounds on (it would by then have landed and been counted as an escrow).
   */
  readonly #escrowsChecked = new Map<Bytes32, bigint>();
  /** The device of each entry of {@link #escrowsChecked} (an entry no longer there is dropped when next counted). */
  readonly #checkedBy = new Map<Bytes32, Address>();
  readonly #maxRoundOrders: number;
  readonly #maxParticipantOrders: number;
  #timer: NodeJS.Timeout | undefined;
  #clearing: Promise<void> = Promise.resolve();
  /** Per device, the rounds whose credit to it is not delivered yet, with their clearing frames. */
  readonly #owed = new Map<Address, Map<bigint, ClearingFrames>>();
  /** `stop()` was called: round credits being retried are left to the next start (their records stay stored). */
  #stopped = false;
  /**
   * Per channel, the rounds whose credit to it is on its way (sent, or waiting for its retry after the device refused
   * it): {@link owes} holds a cooperative close meanwhile, else a final state would strand the credit.
   */
  readonly #owing = new Map<ChannelId, Set<bigint>>();
  /**
   * Cluster: devices taken over here whose escrows and orders placed through another process are not read yet
   * ({@link #learnOpen}; true while a read is under way, false after one failed, retried at the next tick): until
   * they are, {@link owes} holds their cooperative closes, else a close right after the takeover would strand them.
   */
  readonly #unlearnt = new Map<Address, boolean>();
  /**
   * Single hub: round credits whose channel closed (on-chain, at a state without them) before they landed, by
   * participant and round: still owed, paid on the participant's next open channel in the market's token, looked for
   * at every round and whenever the device connects.
   */
  readonly #stranded = new Map<Address, Map<bigint, { readonly amount: bigint; readonly clearing: ClearingFrames }>>();
  /** Rounds with a stored clearing record: how many of its credits are still on their way (Infinity: one never can be). */
  readonly #stored = new Map<bigint, number>();
  readonly #keepClearings: number;
  #pruning = false;
  /** Cluster: the clearing records seen (stored ones; rounds nobody took part in have none), by round. */
  readonly #clearings = new Map<bigint, StoredClearing>();
  /** Cluster: when this process, holding the round lease, clears the open round. */
  #nextClose = 0;
  #roundMs = 1000;
  /** Cluster: the open round when the stored clearing records were last pruned. */
  #prunedAt = 0n;
  /** Cluster: orders waiting for the next placement transaction (bounded by the devices' in-flight requests). */
  readonly #placing: WaitingOrder[] = [];
  #placingNow = false;
  /**
   * Cluster: credits not paid here because the channel was not held here when they were due, by round: each tick
   * asks to hold the channel (its device may be connected here, its lease run out during a database outage); when
   * its device is elsewhere, the process serving it pays them when it takes the channel over.
   */
  readonly #unheld = new Map<bigint, Set<Address>>();
  /**
   * Cluster: participants whose stranded credits (see {@link StrandedMark}) are being read or claimed here: their round
   * credits wait meanwhile, so that none moves a channel past the round of a stranded credit it is about to take (its
   * round reaching the stranded one's is then what says that one landed).
   */
  readonly #strandedReading = new Map<Address, number>();
  /**
   * Cluster: the rounds of the stranded credits taken by each channel (as last read, or claimed here) and not landed:
   * no later round's credit goes on the channel before them (it would move the channel past their round, which is
   * what says they landed).
   */
  readonly #strandedOn = new Map<ChannelId, Set<bigint>>();
  /** Cluster: the last read or claim of stranded credits queued (see {@link #oneAtATime}). */
  #strandedTurn: Promise<unknown> = Promise.resolve();
  /** Cluster: stranded credits reported as having no channel left to take them (reported once each). */
  readonly #strandedStuck = new Set<string>();

  constructor(deps: MarketClockDeps, options: MarketOptions) {
    this.#deps = deps;
    this.#feeBps = options.feeBps ?? 0n;
    const token: unknown = options.token;
    if (typeof token !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(token)) {
      throw new TrickleError(
        'INVALID_ARGUMENT',
        'market.token must be the address of the token the market settles in',
        {
          details: { token },
        },
      );
    }
    this.#token = token.toLowerCase();
    this.#keepClearings = options.keepClearings ?? 1000;
    if (!Number.isSafeInteger(this.#keepClearings) || this.#keepClearings < 0) {
      throw new TrickleError('INVALID_ARGUMENT', 'keepClearings must be a whole number of rounds, 0 or more', {
        details: { keepClearings: options.keepClearings },
      });
    }
    this.#maxRoundOrders = options.maxRoundOrders ?? DEFAULT_MAX_ROUND_ORDERS;
    this.#maxParticipantOrders = options.maxParticipantOrders ?? DEFAULT_MAX_PARTICIPANT_ORDERS;
    if (!Number.isSafeInteger(this.#maxParticipantOrders) || this.#maxParticipantOrders < 1) {
      throw new TrickleError('INVALID_ARGUMENT', 'maxParticipantOrders must be a whole number of orders, 1 or more', {
        details: { maxParticipantOrders: options.maxParticipantOrders },
      });
    }
    if (!Number.isSafeInteger(this.#maxRoundOrders) || this.#maxRoundOrders < 1) {
      throw new TrickleError('INVALID_ARGUMENT', 'maxRoundOrders must be a whole number of orders, 1 or more', {
        details: { maxRoundOrders: options.maxRoundOrders },
      });
    }
    deps.cluster?.rounds.limitEntries(this.#maxRoundOrders);
  }

  /**
   * How many entries the clearing record of `round` (the open round or the next) takes so far, of what this process
   * took. The open round's record refunds every escrow not used by a bid of the next round, or lists it with its bid
   * (one entry: the same id), so it counts the escrows (durable or being paid) and its asks, less the next round's
   * bids on escrows counted here. The next round's record holds its orders. Orders being written count in their round.
   * A single hub only: in a cluster the database counts (see {@link MarketRounds.limitEntries}).
   */
  #entries(round: bigint): number {
    const open = round === this.round;
    // Loops, not copies: this runs on every order and escrow payment, over up to maxRoundOrders entries.
    let n = 0;
    const count = (o: { round: bigint; side: Order['side'] }) => {
      if (o.round === round && (!open || o.side === 'ask')) n++;
    };
    for (const p of this.#orders.get(round) ?? []) count(p.order);
    for (const x of this.#placingIds.values()) count(x);
    for (const w of this.#placing) count(w.terms);
    if (!open) return n;
    n += this.#escrows.size + this.#escrowsChecked.size;
    const uncount = (o: { round: bigint; side: Order['side'] }, id: Bytes32) => {
      if (o.round === round + 1n && o.side === 'bid' && this.#escrows.has(id)) n--;
    };
    for (const p of this.#orders.get(round + 1n) ?? []) uncount(p.order, p.order.id);
    for (const [id, x] of this.#placingIds) uncount(x, id);
    for (const w of this.#placing) uncount(w.terms, w.terms.id);
    return n;
  }

  /** Refuse an order past {@link MarketOptions.maxParticipantOrders} of `device` in `round` (placed or being placed). */
  #checkParticipant(device: Address, round: bigint): void {
    let n = 0;
    for (const p of this.#orders.get(round) ?? []) if (p.order.participant === device) n++;
    for (const x of this.#placingIds.values()) if (x.round === round && x.device === device) n++;
    for (const w of this.#placing) if (w.terms.round === round && w.device === device) n++;
    if (n + 1 > this.#maxParticipantOrders)
      throw new TrickleError(
        'LIMIT_EXCEEDED',
        `a participant places at most ${this.#maxParticipantOrders} orders in a round`,
        { details: { round, max: this.#maxParticipantOrders, refused: 'participant' } },
      );
  }

  /**
   * Refuse an escrow payment past {@link MarketOptions.maxParticipantOrders} of `device`'s entries in the open round's
   * record: its escrows (durable or being paid) not backing a bid of the next round, and its open round's orders, one
   * entry per id. An escrow needs no order to take an entry (the round refunds it), so a funded device paying escrows
   * of one unit under fresh ids took every entry of a round, as asks did before the bound.
   */
  #checkParticipantEscrow(device: Address, orderId: Bytes32): void {
    const ids = new Set<Bytes32>();
    for (const e of this.#escrows.values()) if (e.device === device) ids.add(e.orderId);
    for (const [id, d] of this.#checkedBy) {
      if (!this.#escrowsChecked.has(id)) this.#checkedBy.delete(id);
      else if (d === device) ids.add(id);
    }
    const mine = (o: { round: bigint; device: Address }, id: Bytes32) => {
      if (o.device !== device) return;
      if (o.round === this.round) ids.add(id);
      else if (o.round === this.round + 1n && this.#escrows.has(id)) ids.delete(id);
    };
    for (const r of [this.round, this.round + 1n])
      for (const p of this.#orders.get(r) ?? []) mine({ round: r, device: p.order.participant }, p.order.id);
    for (const [id, x] of this.#placingIds) mine(x, id);
    for (const w of this.#placing) mine({ round: w.terms.round, device: w.device }, w.terms.id);
    ids.delete(orderId); // one sent again is counted once
    if (ids.size + 1 > this.#maxParticipantOrders)
      throw new TrickleError(
        'LIMIT_EXCEEDED',
        `a participant takes at most ${this.#maxParticipantOrders} entries of a round with orders and escrows`,
        { details: { round: this.round, max: this.#maxParticipantOrders, refused: 'participant' } },
      );
  }

  /** Refuse an order or escrow that would take `round`'s record past {@link MarketOptions.maxRoundOrders} entries. */
  #checkRoom(round: bigint, what: 'order' | 'escrow'): void {
    if (this.#entries(round) + 1 > this.#maxRoundOrders) throw this.#full(round, what);
  }

  #full(round: bigint, what: 'order' | 'escrow'): TrickleError {
    return new TrickleError(
      'LIMIT_EXCEEDED',
      `round ${round} is full: its clearing record takes at most ${this.#maxRoundOrders} orders and escrows`,
      { details: { round, max: this.#maxRoundOrders, refused: what } },
    );
  }

  get feeBps(): bigint {
    return this.#feeBps;
  }

  /** Load durable market state; re-send credits owed by rounds cleared before a restart. */
  async restore(): Promise<void> {
    const s = this.#deps.store;
    this.round = BigInt((await s.getMeta(ROUND_KEY)) ?? '1');
    if (this.#deps.cluster) {
      // Orders and escrows are read where they are used (in the market's transactions); the clearings are paid to
      // the channels this process takes over, once it holds them (it holds none yet).
      for (const { value } of await s.loadMetaPrefix('market/clearing/')) {
        const p = parseJson<StoredClearing>(value);
        this.#clearings.set(p.record.round, p);
      }
      return;
    }
    this.#arrival = BigInt((await s.getMeta(ARRIVAL_KEY)) ?? '0');
    for (const { value } of await s.loadMetaPrefix('market/escrow/')) {
      const e = parseJson<EscrowRecord>(value);
      this.#escrows.set(e.orderId, e);
    }
    for (const { value } of await s.loadMetaPrefix('market/order/')) {
      const p = parseJson<PlacedOrder>(value);
      const list = this.#orders.get(p.order.round) ?? [];
      list.push(p);
      this.#orders.set(p.order.round, list);
    }
    for (const { value } of await s.loadMetaPrefix('market/clearing/'))
      this.#payCredits(parseJson<StoredClearing>(value));
  }

  start(roundMs: number): void {
    this.#stopped = false;
    this.#roundMs = roundMs;
    const cluster = this.#deps.cluster;
    // In a cluster the timer also renews the round lease (every quarter lease at least) and follows the open round:
    // every quarter round at least, so a device served by another process than the leader hears of a new round
    // (and can order for it) at most a quarter round late.
    const every = cluster ? Math.max(50, Math.floor(Math.min(roundMs, cluster.rounds.leaseMs) / 4)) : roundMs;
    this.#timer = setInterval(() => {
      this.#clearing = this.#clearing
        .then(async () => (cluster ? this.#tick(cluster) : void (await this.closeRound())))
        .catch((e: unknown) => this.#deps.log('round failed', { err: String(e) }));
    }, every);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#timer);
    await this.#clearing;
    // The next process clears the next round without waiting for the lease to lapse.
    await this.#deps.cluster?.rounds
      .resign()
      .catch((e: unknown) => this.#deps.log('round lease not released', { err: String(e) }));
  }

  /** Cluster: take or renew the round lease, clear the open round when it is due here, follow the others' rounds. */
  async #tick(cluster: MarketClusterDeps): Promise<void> {
    const was = cluster.rounds.leading();
    const leading = await cluster.rounds.lead().catch((e: unknown) => {
      this.#deps.log('round lease not renewed', { err: String(e) });
      return false;
    });
    // Before this tick's round credits: a stranded credit is taken by a channel only while the channel is before its
    // round.
    await this.#scanStranded(cluster);
    // A process that has just taken the lease gives the open round its full length (the order of a device that
    // saw it open just now still makes it), then clears on its own clock.
    if (leading && !was) this.#nextClose = performance.now() + this.#roundMs;
    if (leading && performance.now() >= this.#nextClose) {
      await this.closeRound(); // a failure (the database, a lost lease) is retried at the next tick
      this.#nextClose += this.#roundMs;
      if (this.#nextClose < performance.now()) this.#nextClose = performance.now() + this.#roundMs;
    }
    await this.#follow(cluster);
    this.#retryUnheld(cluster);
    for (const [device, reading] of this.#unlearnt) if (!reading) void this.#learn(device);
    if (this.round !== this.#prunedAt) {
      this.#prunedAt = this.round;
      await this.#pruneShared(cluster);
    }
  }

  /**
   * Cluster: the process holding the round lease deletes the stored clearing records older than the kept rounds
   * whose every credit landed: each channel they credit has reached the round by its stored state (a credit is
   * committed before it is acked). One it cannot tell of (a participant without a channel, a channel closed before
   * its credit) stays, as on a single hub. The other processes forget the records that are gone.
   */
  async #pruneShared(cluster: MarketClusterDeps): Promise<void> {
    if (this.#pruning) return;
    const last = this.round - 1n - BigInt(this.#keepClearings);
    const old = [...this.#clearings.keys()].filter((r) => r <= last);
    if (old.length === 0) return;
    this.#pruning = true;
    try {
      if (cluster.rounds.leading()) {
        const owed = new Map<bigint, (ChannelId | undefined)[]>();
        for (const r of old) {
          const p = this.#clearings.get(r)!;
          const who = new Set<Address>([
            ...p.record.credits.map((c) => c.participant),
            ...p.refunds.map((x) => x.participant),
          ]);
          owed.set(
            r,
            [...who].map((participant) => p.channels[participant]),
          );
        }
        const ids = new Set<ChannelId>();
        for (const list of owed.values()) for (const id of list) if (id) ids.add(id);
        const landed = await cluster.rounds.landedRounds([...ids]);
        const done = old.filter((r) =>
          owed.get(r)!.every((id) => id !== undefined && (landed.get(id)?.round ?? -1n) >= r),
        );
        if (done.length === 0) return;
        await cluster.rounds.transact({
          fenced: true,
          prefixes: () => [],
          run: () => ({
            writes: done.map((r) => ({ kind: 'deleteMeta' as const, key: clearingKey(r) })),
            result: undefined,
          }),
        });
        for (const r of done) this.#clearings.delete(r);
      } else {
        for (const r of old)
          if ((await this.#deps.store.getMeta(clearingKey(r))) === undefined) this.#clearings.delete(r);
      }
    } catch (e) {
      this.#deps.log('clearing records not pruned yet', { err: String(e) });
    } finally {
      this.#pruning = false;
    }
  }

  /** Cluster: ask to hold the channels of the credits not paid for want of their lease; pay those now held. */
  #retryUnheld(cluster: MarketClusterDeps): void {
    if (!cluster.hold || this.#unheld.size === 0) return;
    const due = [...this.#unheld];
    this.#unheld.clear();
    for (const [r, participants] of due) {
      const p = this.#clearings.get(r);
      if (!p) continue; // pruned: every credit it owed has landed
      for (const participant of participants) {
        const channelId = p.channels[participant];
        if (!channelId) continue;
        void cluster.hold(channelId).then(
          (held) => {
            if (held) this.#payCredits(p, participant, true);
          },
          () => this.#noteUnheld(r, participant), // not yet (the database, a device moving): the next tick
        );
      }
    }
  }

  /** Cluster: the rounds cleared by another process since the last look: pay their credits to the channels held here. */
  async #follow(cluster: MarketClusterDeps): Promise<void> {
    const open = await cluster.rounds.openRound();
    if (open <= this.round) return;
    const from = this.round;
    let found: StoredClearing[];
    if (open - from > 64n) {
      found = (await this.#deps.store.loadMetaPrefix('market/clearing/'))
        .map((e) => parseJson<StoredClearing>(e.value))
        .filter((p) => p.record.round >= from && p.record.round < open);
    } else {
      found = [];
      for (let r = from; r < open; r++) {
        const v = await this.#deps.store.getMeta(clearingKey(r));
        if (v !== undefined) found.push(parseJson<StoredClearing>(v));
      }
    }
    if (open <= this.round) return; // cleared here meanwhile (closeRound moved the round on)
    this.round = open;
    for (const p of found) this.#seen(p);
    this.#forgetBefore(open);
    this.#deps.broadcast(this.roundFrame());
  }

  /** Cluster: a clearing record became known here: keep it, pay the credits of the channels held here. */
  #seen(p: StoredClearing): void {
    if (this.#clearings.has(p.record.round)) return;
    this.#clearings.set(p.record.round, p);
    for (const o of p.orders) this.#escrows.delete(o.id);
    for (const x of p.refunds) this.#escrows.delete(x.orderId);
    this.#payCredits(p);
  }

  /** Cluster: orders of rounds before `open` are cleared (or were refused): no longer owed here. */
  #forgetBefore(open: bigint): void {
    for (const r of [...this.#orders.keys()]) if (r < open) this.#orders.delete(r);
    for (const [id, checked] of this.#escrowsChecked) if (checked < open - 1n) this.#escrowsChecked.delete(id);
  }

  #noteUnheld(round: bigint, participant: Address): void {
    let set = this.#unheld.get(round);
    if (!set) this.#unheld.set(round, (set = new Set()));
    set.add(participant);
  }

  /**
   * Cluster: this process now holds the device's channels (taken over, their records reloaded): pay the credits
   * that stored clearings still owe them, oldest round first.
   */
  channelsTaken(device: Address): void {
    if (!this.#deps.cluster) return;
    // The device's stranded credits are read first (its credits below wait for it): one another process claimed on a
    // channel now held here is paid before any later round's credit moves that channel past its round.
    void this.#lookStranded(this.#deps.cluster, device, 10);
    const rounds = [...this.#clearings.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const r of rounds) this.#payCredits(this.#clearings.get(r)!, device);
    void this.#learn(device);
  }

  /** Cluster: {@link #learnOpen}, holding the device's closes meanwhile and after a failure (see {@link #unlearnt}). */
  async #learn(device: Address): Promise<void> {
    this.#unlearnt.set(device, true);
    try {
      await this.#learnOpen(device);
      this.#unlearnt.delete(device);
    } catch (e) {
      this.#unlearnt.set(device, false);
      this.#deps.log('cannot read the open orders of a device taken over', { device, err: String(e) });
    }
  }

  /**
   * Cluster: learn the device's escrows and orders still waiting for their round (placed through another process),
   * so that owes() holds its cooperative close until that round's credit (PENDING_CREDITS), as on the process that
   * took them. Only open rounds' entries exist (a clearing deletes its round's); the database scans those and
   * returns the ones naming the device (no index by device: a table of orders would give one).
   */
  async #learnOpen(device: Address): Promise<void> {
    const found = await this.#deps.cluster!.rounds.find([ESCROW_PREFIX, ORDER_PREFIX], device);
    const escrows = found.filter((e) => e.key.startsWith(ESCROW_PREFIX));
    const orders = found.filter((e) => e.key.startsWith(ORDER_PREFIX));
    // A clearing seen while these were read already settled what it cleared or refunded.
    const settled = new Set<Bytes32>();
    for (const p of this.#clearings.values()) {
      for (const o of p.orders) settled.add(o.id);
      for (const x of p.refunds) settled.add(x.orderId);
    }
    for (const { value } of escrows) {
      const e = parseJson<EscrowRecord>(value);
      if (e.device === device && !settled.has(e.orderId)) this.#escrows.set(e.orderId, e);
    }
    for (const { value } of orders) {
      const p = parseJson<PlacedOrder>(value);
      if (p.order.participant !== device || p.order.round < this.round) continue;
      const list = this.#orders.get(p.order.round) ?? [];
      if (!list.some((q) => q.order.id === p.order.id)) list.push(p);
      this.#orders.set(p.order.round, list);
    }
  }

  /** The frame announcing the open round. */
  roundFrame(): Message {
    return { t: 'round', id: 0, round: this.round, feeBps: this.#feeBps };
  }

  /**
   * Whether an order or escrow of this channel is still waiting for its round's credit, or a round credit to it is on
   * its way (retried after the device refused it: a cooperative close then would strand it). With the channel's
   * device, in a cluster: also while the escrows and orders it placed through another process are not read yet.
   */
  owes(channelId: ChannelId, device?: Address): boolean {
    if (this.#owing.has(channelId) || (device !== undefined && this.#unlearnt.has(device))) return true;
    for (const e of this.#escrows.values()) if (e.channelId === channelId) return true;
    for (const list of this.#orders.values()) for (const p of list) if (p.channelId === channelId) return true;
    return false;
  }

  /**
   * Before a device's escrow payment is accepted: refuse one on a channel in another token than the market's
   * (`BAD_ORDER`: its round credit is paid in the market's token), and an order id that already has an escrow
   * (`BAD_ORDER`), here or, in a cluster, paid through another process — the record is keyed by the id, so a second
   * payment under it would overwrite the first, which the hub would keep. With `device` (the hub always passes it), an
   * escrow past the device's share of the open round is refused `LIMIT_EXCEEDED` (`details.refused: 'participant'`):
   * its escrows and open round's orders take at most `maxParticipantOrders` entries.
   */
  checkEscrow(orderId: Bytes32, token: Address, device?: Address): void | Promise<void> {
    if (!this.#inToken(token)) throw this.#otherToken(token);
    const refuse = (): never => {
      throw new TrickleError('BAD_ORDER', 'an escrow is already paid under this order id', { details: { orderId } });
    };
    if (this.#escrows.has(orderId)) refuse();
    if (device !== undefined) this.#checkParticipantEscrow(device, orderId);
    const checked = (): void => {
      if (device !== undefined) this.#checkedBy.set(orderId, device);
    };
    if (!this.#deps.cluster) {
      this.#reserveEscrow(orderId);
      return checked();
    }
    // The database's count of the open round, with the escrows checked here and still on their way to it: past the
    // bound, refused now. (The commit that stores the escrow counts it again, atomically: one another process took
    // the room of meanwhile is refused there — a store refusal, its device told LIMIT_EXCEEDED as here.)
    return this.#deps.cluster.rounds.peek(escrowKey(orderId)).then(({ round, entries, stored }) => {
      if (stored) refuse();
      // (One checked before and sent again, its commit refused, is checked again: counted once.)
      let waiting = 0;
      for (const [id, r] of this.#escrowsChecked) if (r === round && id !== orderId) waiting++;
      if (entries + waiting + 1 > this.#maxRoundOrders) throw this.#full(round, 'escrow');
      this.#escrowsChecked.set(orderId, round);
      checked();
    });
  }

  /** Count an escrow payment in the open round's record until it is durable (or forgotten), if there is room. */
  #reserveEscrow(orderId: Bytes32): void {
    if (this.#escrowsChecked.has(orderId)) return; // counted already (a payment sent again)
    this.#checkRoom(this.round, 'escrow');
    this.#escrowsChecked.set(orderId, this.round);
  }

  #inToken(token: string): boolean {
    return token.toLowerCase() === this.#token;
  }

  #otherToken(token: string): TrickleError {
    return new TrickleError('BAD_ORDER', 'the market settles in another token than this channel’s', {
      details: { market: this.#token, channel: token },
    });
  }

  /**
   * An escrow payment {@link checkEscrow} let through was refused (its update answered with a reject: nothing paid):
   * the room counted for it is given back. Before, it stayed counted until forgotten two rounds on, so updates that
   * paid nothing (badly signed, past the deposit) filled a round at no cost.
   */
  releaseEscrow(orderId: Bytes32): void {
    if (this.#escrows.has(orderId)) return; // paid after all (an earlier payment under this id)
    this.#escrowsChecked.delete(orderId);
    this.#checkedBy.delete(orderId);
  }

  /** A device's escrow payment was made durable. */
  onEscrow(e: EscrowRecord): void {
    this.#escrowsChecked.delete(e.orderId);
    this.#escrows.set(e.orderId, e);
  }

  /**
   * Accept a signed order for the open round (or the next). Bids need their escrow paid first.
   * @throws TrickleError('BAD_ORDER')
   */
  async place(device: Address, msg: Extract<Message, { t: 'order' }>): Promise<Message> {
    const terms = { ...msg.order, participant: device };
    if (this.#deps.verifier.recoverAddress(hashOrder(this.#deps.domain, terms), msg.sig) !== device) {
      throw new TrickleError('BAD_ORDER', 'order not signed by the device');
    }
    if (this.#deps.cluster) {
      this.#checkParticipant(device, terms.round);
      return this.#placeShared(this.#deps.cluster, device, msg, terms);
    }
    if (terms.round < this.round || terms.round > this.round + 1n) {
      throw new TrickleError('BAD_ORDER', `order is for round ${terms.round}; round ${this.round} is open`, {
        details: { round: this.round },
      });
    }
    // An order id is placed once across the open round and the next, and while its placement is being written: a
    // bid's escrow is keyed by its order id, so the same bid in both rounds would have one escrow refunded twice.
    const placedIn = (r: bigint) => this.#orders.get(r)?.some((p) => p.order.id === terms.id) === true;
    if (this.#placingIds.has(terms.id) || placedIn(this.round) || placedIn(this.round + 1n))
      throw new TrickleError('BAD_ORDER', 'duplicate order id');
    this.#checkParticipant(device, terms.round);
    let channelId: ChannelId | undefined;
    if (terms.side === 'bid') {
      const e = this.#escrows.get(terms.id);
      const need = terms.quantity * terms.price;
      if (!e || e.device !== device || e.amount < need) {
        throw new TrickleError('BAD_ORDER', 'bid escrow not paid', { details: { need, paid: e?.amount ?? 0n } });
      }
      channelId = e.channelId;
    } else {
      channelId = this.#marketChannel(device);
      if (!channelId) throw new TrickleError('BAD_ORDER', 'no open channel in the market’s token to receive proceeds');
    }
    // A bid for the open round takes no new entry: its escrow's id already counts there.
    if (terms.side === 'ask' || terms.round !== this.round) this.#checkRoom(terms.round, 'order');
    const order: Order = { ...terms, arrival: ++this.#arrival };
    validateOrder(order);
    const placed: PlacedOrder = {
      order,
      sig: `0x${Buffer.from(msg.sig).toString('hex')}`,
      channelId,
      feeBps: this.#feeBps,
    };
    this.#placingIds.set(order.id, { round: order.round, side: order.side, device });
    try {
      await this.#deps.committer.write([
        { kind: 'meta', key: orderKey(order.round, order.id), value: stringifyJson(placed) },
        { kind: 'meta', key: ARRIVAL_KEY, value: String(this.#arrival) },
      ]);
    } finally {
      this.#placingIds.delete(order.id);
    }
    if (order.round < this.round) {
      // The round closed while the order was being written: refuse it; a bid's escrow is refunded next round.
      await this.#deps.committer.write([{ kind: 'deleteMeta', key: orderKey(order.round, order.id) }]);
      throw new TrickleError('BAD_ORDER', `round ${order.round} closed before the order was placed`, {
        details: { round: this.round },
      });
    }
    const current = this.#orders.get(order.round) ?? [];
    current.push(placed);
    this.#orders.set(order.round, current);
    return { t: 'accepted', id: msg.id, arrival: order.arrival };
  }

  /**
   * Cluster: place the order in one transaction with the open round (read, and locked, from the database: the round
   * another process may just have cleared), its bid's escrow (paid through whichever process held the channel) and
   * the cluster's arrival counter. Orders arriving while a placement is in flight go together in the next one (a
   * group commit of orders): the cluster's placements run one at a time, each carrying many orders.
   */
  #placeShared(
    cluster: MarketClusterDeps,
    device: Address,
    msg: Extract<Message, { t: 'order' }>,
    terms: Omit<Order, 'arrival'>,
  ): Promise<Message> {
    // Counted in the placement, by the database (see MarketOptions.maxRoundOrders).
    return new Promise<PlacedOrder>((resolve, reject) => {
      this.#placing.push({ device, terms, sig: `0x${Buffer.from(msg.sig).toString('hex')}`, resolve, reject });
      void this.#placeBatches(cluster);
    }).then((placed) => {
      // Kept here only to answer owes() (a cooperative close waits for the round); the clearing reads the database.
      const list = this.#orders.get(placed.order.round) ?? [];
      list.push(placed);
      this.#orders.set(placed.order.round, list);
      return { t: 'accepted', id: msg.id, arrival: placed.order.arrival };
    });
  }

  /** Cluster: place the waiting orders, a batch per transaction, until none wait. */
  async #placeBatches(cluster: MarketClusterDeps): Promise<void> {
    if (this.#placingNow) return;
    this.#placingNow = true;
    try {
      while (this.#placing.length > 0) {
        const batch = this.#placing.splice(0, MAX_PLACEMENTS);
        try {
          const results = await cluster.rounds.transact({
            fenced: false,
            counts: true,
            prefixes: () => [],
            keys: () => [
              ARRIVAL_KEY,
              ...batch.flatMap((b) => [
                // The order's id in the round before and after too: whichever is open, an id is placed once across
                // the open round and the next (a bid's escrow is keyed by its id).
                orderKey(b.terms.round - 1n, b.terms.id),
                orderKey(b.terms.round, b.terms.id),
                orderKey(b.terms.round + 1n, b.terms.id),
                escrowKey(b.terms.id),
              ]),
            ],
            run: (open, entries, counts) => {
              let arrival = BigInt(entries.get(ARRIVAL_KEY) ?? '0');
              const writes: MarketWrite[] = [];
              const taken = new Set<string>();
              const out = batch.map((b): PlacedOrder | unknown => {
                try {
                  const p = this.#checkPlacement(b, open, entries, taken, arrival + 1n);
                  this.#countPlacement(p.order, open, entries, counts);
                  arrival = p.order.arrival;
                  taken.add(orderKey(p.order.round, p.order.id));
                  writes.push({ kind: 'meta', key: orderKey(p.order.round, p.order.id), value: stringifyJson(p) });
                  return p;
                } catch (e) {
                  return e;
                }
              });
              if (writes.length > 0) writes.push({ kind: 'meta', key: ARRIVAL_KEY, value: String(arrival) });
              return { writes, result: out };
            },
          });
          results.forEach((r, i) => {
            if (r instanceof Error) batch[i]!.reject(r);
            else batch[i]!.resolve(r as PlacedOrder);
          });
        } catch (e) {
          for (const b of batch) b.reject(e);
        }
      }
    } finally {
      this.#placingNow = false;
    }
  }

  /**
   * Cluster: count a placed order in the entries of its round's record, or refuse it (`LIMIT_EXCEEDED`) past the
   * bound. The open round's record holds its orders and the escrows not backing an order of the next round, one entry
   * per order id: an order of the open round on an escrow (a bid's) takes no new entry; an order of the next round
   * on an escrow takes one there and moves its escrow's out of the open round's record.
   */
  #countPlacement(order: Order, open: bigint, entries: ReadonlyMap<string, string>, counts: Map<bigint, number>): void {
    const escrowed = entries.has(escrowKey(order.id));
    if (order.round === open && escrowed) return;
    const n = (counts.get(order.round) ?? 0) + 1;
    if (n > this.#maxRoundOrders) throw this.#full(order.round, 'order');
    counts.set(order.round, n);
    if (order.round !== open && escrowed) counts.set(open, Math.max(0, (counts.get(open) ?? 0) - 1));
  }

  /** Cluster: one order of a placement batch, checked against the open round and the entries read. */
  #checkPlacement(
    b: WaitingOrder,
    open: bigint,
    entries: ReadonlyMap<string, string>,
    taken: ReadonlySet<string>,
    arrival: bigint,
  ): PlacedOrder {
    const { terms, device } = b;
    if (terms.round < open || terms.round > open + 1n) {
      throw new TrickleError('BAD_ORDER', `order is for round ${terms.round}; round ${open} is open`, {
        details: { round: open },
      });
    }
    for (const key of [orderKey(open, terms.id), orderKey(open + 1n, terms.id)])
      if (entries.has(key) || taken.has(key)) throw new TrickleError('BAD_ORDER', 'duplicate order id');
    let channelId: ChannelId | undefined;
    if (terms.side === 'bid') {
      const v = entries.get(escrowKey(terms.id));
      const e = v === undefined ? undefined : parseJson<EscrowRecord>(v);
      const need = terms.quantity * terms.price;
      if (!e || e.device !== device || e.amount < need) {
        throw new TrickleError('BAD_ORDER', 'bid escrow not paid', { details: { need, paid: e?.amount ?? 0n } });
      }
      channelId = e.channelId;
    } else {
      channelId = this.#marketChannel(device);
      if (!channelId) throw new TrickleError('BAD_ORDER', 'no open channel in the market’s token to receive proceeds');
    }
    const order: Order = { ...terms, arrival };
    validateOrder(order);
    return { order, sig: b.sig, channelId, feeBps: this.#feeBps };
  }

  #marketChannel(device: Address): ChannelId | undefined {
    const holds = this.#deps.cluster?.holds;
    for (const id of this.#deps.channels.channelsOf(device)) {
      const r = this.#deps.channels.get(id);
      if (r && r.status === 'open' && !r.latest.state.isFinal && this.#inToken(r.params.token) && (!holds || holds(id)))
        return id;
    }
    return undefined;
  }

  /** Clear the open round now (the timer calls this). */
  async closeRound(): Promise<ClearingRecord> {
    if (this.#deps.cluster) return this.#closeShared(this.#deps.cluster);
    const r = this.round;
    // Close the round before anything awaits: orders arriving from now on are for a later round.
    this.round = r + 1n;
    const placed = [...(this.#orders.get(r) ?? [])];
    this.#orders.delete(r);
    // Escrows backing orders of later rounds stay, and so do those of orders whose placement is being written: such an
    // order is for the next round (kept: its round refunds the escrow) or, refused for the round now closed, leaves its
    // escrow to be refunded next round. Refunded now as well, the escrow would come back twice.
    const later = new Set<Bytes32>(this.#placingIds.keys());
    for (const [round, list] of this.#orders) if (round > r) for (const p of list) later.add(p.order.id);
    const { stored, empty, writes } = clearingOf(r, placed, later, this.#escrows, this.#feeBps);
    await this.#deps.committer.write(writes);
    for (const p of placed) if (p.order.side === 'bid') this.#escrows.delete(p.order.id);
    for (const x of stored.refunds) this.#escrows.delete(x.orderId);
    for (const [id, checked] of this.#escrowsChecked) if (checked < r) this.#escrowsChecked.delete(id);
    this.#deps.onRound(stored.record);
    if (!empty) this.#payCredits(stored);
    this.#payStranded();
    this.#deps.broadcast(this.roundFrame());
    void this.#prune();
    return stored.record;
  }

  /**
   * Cluster: clear the open round in one transaction fenced by the round lease, from the orders and escrows every
   * process stored. @throws TrickleError('STORE_FAILURE') when this process does not hold the round lease
   */
  async #closeShared(cluster: MarketClusterDeps): Promise<ClearingRecord> {
    const { stored, empty } = await cluster.rounds.transact({
      fenced: true,
      clears: true,
      prefixes: (r) => [orderPrefix(r), orderPrefix(r + 1n), ESCROW_PREFIX],
      run: (r, entries) => {
        const placed: PlacedOrder[] = [];
        const later = new Set<Bytes32>();
        const escrows = new Map<Bytes32, EscrowRecord>();
        const current = orderPrefix(r);
        for (const [key, value] of entries) {
          if (key.startsWith(ESCROW_PREFIX)) {
            const e = parseJson<EscrowRecord>(value);
            escrows.set(e.orderId, e);
          } else if (key.startsWith(current)) placed.push(parseJson<PlacedOrder>(value));
          else later.add(parseJson<PlacedOrder>(value).order.id);
        }
        placed.sort((a, b) => (a.order.arrival < b.order.arrival ? -1 : a.order.arrival > b.order.arrival ? 1 : 0));
        const c = clearingOf(r, placed, later, escrows, this.#feeBps);
        return { writes: c.writes, result: c };
      },
    });
    const r = stored.record.round;
    if (r + 1n > this.round) this.round = r + 1n;
    this.#deps.onRound(stored.record);
    if (!empty) this.#seen(stored);
    this.#forgetBefore(r + 1n);
    this.#deps.broadcast(this.roundFrame());
    return stored.record;
  }

  /**
   * Send a participant its round credit, after the clearing record it is checked against (the device refuses a round
   * credit without it). What the hub owes is never dropped: a refused or undeliverable credit is retried with backoff
   * (the device may be offline, or busy with its own updates), the record going again before each attempt and
   * whenever the device reconnects; once the channel has moved to a later round, it goes as a plain credit.
   *
   * A participant's round credits go one at a time, oldest round first: the channel reaching the round is then what
   * says the credit landed (after a restart; in a cluster, here or on the process that held the channel before). In a
   * cluster, only while this process holds the channel (else its holder pays it).
   */
  #deliver(
    channelId: ChannelId,
    participant: Address,
    amount: bigint,
    round: bigint,
    attempt: number,
    clearing: ClearingFrames,
    seenOpen = this.#deps.channels.get(channelId)?.status === 'open',
  ): void {
    let owed = this.#owed.get(participant);
    if (!owed) this.#owed.set(participant, (owed = new Map()));
    owed.set(round, clearing);
    let owing = this.#owing.get(channelId);
    if (!owing) this.#owing.set(channelId, (owing = new Set()));
    owing.add(round);
    const settled = (landed: boolean) => {
      owed.delete(round);
      owing.delete(round);
      if (owing.size === 0 && this.#owing.get(channelId) === owing) this.#owing.delete(channelId);
      if (owed.size === 0 && this.#owed.get(participant) === owed) this.#owed.delete(participant);
      const left = this.#stored.get(round);
      if (left !== undefined) this.#stored.set(round, landed ? left - 1 : Number.POSITIVE_INFINITY);
    };
    const current = this.#deps.channels.get(channelId)?.latest.state.round ?? 0n;
    const cluster = this.#deps.cluster;
    if (cluster) {
      if (!cluster.holds(channelId)) {
        settled(false);
        return this.#noteUnheld(round, participant); // the process holding the channel pays it (or this one, later)
      }
      if (current >= round) return settled(true);
    }
    // Oldest round first, on a single hub too: a later round's credit landing first would move the channel's round
    // past an earlier one still being retried, which a restart then takes as landed (and never pays).
    if (
      [...owed.keys()].some((k) => k < round) ||
      this.#strandedReading.has(participant) ||
      [...(this.#strandedOn.get(channelId) ?? [])].some((k) => k < round)
    ) {
      setTimeout(() => this.#deliver(channelId, participant, amount, round, attempt, clearing, seenOpen), 100);
      return;
    }
    for (const f of clearing(this.#wireVersion(participant))) this.#deps.send(participant, f);
    this.#deps.credit(channelId, amount, { round: current < round ? round : undefined }).then(
      () => settled(true),
      (e: unknown) => {
        if (cluster && fencedChannels(e)?.has(channelId)) {
          settled(false);
          return this.#noteUnheld(round, participant); // lost the channel: its holder pays (or this one, later)
        }
        const code = isTrickleError(e) ? e.code : 'INTERNAL';
        this.#deps.log('round credit not delivered yet', {
          participant,
          round: String(round),
          code,
          message: isTrickleError(e) ? e.shortMessage : undefined,
          attempt,
        });
        if (code === 'CHANNEL_NOT_OPEN' || code === 'CHANNEL_FINAL') {
          // Closed without it (the engine answers a credit whose state the device may still register on-chain only once
          // the channel closed at another version): owed still, on another channel of the participant.
          settled(false);
          // Only when this process saw the channel open while paying it: its engine then answers CHANNEL_NOT_OPEN once
          // the credit's state is void. A channel found closed (after a restart) may have closed at that state, paid.
          if (seenOpen && cluster) this.#strandShared(cluster, channelId, participant, round, amount, 1);
          else if (seenOpen) {
            this.#strand(participant, round, amount, clearing);
            this.#payStranded(participant); // at once when it has another channel open
          }
          return;
        }
        // Never given up while the market runs (spec §7: a credit the hub owes is never dropped): retried every 10 s
        // at most, the record going again before each attempt, until it lands, or its channel closes without it
        // (stranded above). A stopped market leaves it owed in its stored record, which the next start pays.
        if (this.#stopped) return settled(false);
        setTimeout(
          () => {
            if (this.#stopped) return settled(false);
            this.#deliver(channelId, participant, amount, round, attempt + 1, clearing, seenOpen);
          },
          Math.min(200 * 2 ** attempt, 10_000),
        ).unref?.();
      },
    );
  }

  /**
   * Delete the stored clearing records older than the kept rounds whose credits have all landed (an idle hub would
   * otherwise keep one per round for ever, and read each back at every restart).
   */
  async #prune(): Promise<void> {
    if (this.#pruning) return; // (never in a cluster: no process knows whether another still owes a credit)
    const last = this.round - 1n - BigInt(this.#keepClearings);
    const done = [...this.#stored].filter(([r, left]) => r <= last && left === 0).map(([r]) => r);
    if (done.length === 0) return;
    this.#pruning = true;
    try {
      await this.#deps.committer.write(done.map((r) => ({ kind: 'deleteMeta' as const, key: clearingKey(r) })));
      for (const r of done) this.#stored.delete(r);
    } catch (e) {
      this.#deps.log('clearing records not pruned yet', { err: String(e) });
    } finally {
      this.#pruning = false;
    }
  }

  /** Rounds whose clearing record is stored (oldest first). */
  get storedClearings(): bigint[] {
    return [...(this.#deps.cluster ? this.#clearings : this.#stored).keys()].sort((a, b) =>
      a < b ? -1 : a > b ? 1 : 0,
    );
  }

  /** A device (re)connected: send the clearing records of the rounds that still owe it a credit, before the credits. */
  deviceConnected(device: Address): void {
    for (const clearing of this.#owed.get(device)?.values() ?? [])
      for (const f of clearing(this.#wireVersion(device))) this.#deps.send(device, f);
    this.#payStranded(device);
  }

  /** The wire version the device's clearings are signed for: its connection's, the newest when not connected. */
  #wireVersion(device: Address): number {
    return this.#deps.wireVersion?.(device) ?? Number.POSITIVE_INFINITY;
  }

  #strand(participant: Address, round: bigint, amount: bigint, clearing: ClearingFrames): void {
    let rounds = this.#stranded.get(participant);
    if (!rounds) this.#stranded.set(participant, (rounds = new Map()));
    rounds.set(round, { amount, clearing });
  }

  /**
   * Single hub: pay the round credits stranded by a closed channel (see {@link #stranded}) on the participant's open
   * channel in the market's token, once it has one: oldest round first, each as a round credit (its round then says it
   * landed there).
   */
  #payStranded(only?: Address): void {
    for (const [participant, rounds] of this.#stranded) {
      if (only !== undefined && participant !== only) continue;
      const channelId = this.#marketChannel(participant);
      if (!channelId) continue;
      this.#stranded.delete(participant);
      const current = this.#deps.channels.get(channelId)?.latest.state.round ?? 0n;
      for (const [round, { amount, clearing }] of [...rounds].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        // A channel past the round took it already: after a restart the closed channel's credit is stranded again
        // (nothing durable says it landed elsewhere) and would be paid twice. (A participant's credits land oldest
        // round first, so a later round's credit did not get there first.)
        if (current >= round) continue;
        this.#deliver(channelId, participant, amount, round, 1, clearing);
      }
    }
  }

  /**
   * Cluster: the round credit of `round` to `participant` found its channel closed without it, and this process saw the
   * channel open while paying it (see {@link #deliver}): keep it in the database as owed on another channel of the
   * participant — inserted if absent; one claimed on this very channel is let go for another channel to take. A failed
   * write is retried (a later holder of the closed channel would not strand the credit again).
   */
  #strandShared(
    cluster: MarketClusterDeps,
    channelId: ChannelId,
    participant: Address,
    round: bigint,
    amount: bigint,
    attempt: number,
  ): void {
    const key = strandedKey(participant, round);
    cluster.rounds
      .transact({
        fenced: false,
        prefixes: () => [],
        keys: () => [key],
        run: (_open, entries) => {
          const v = entries.get(key);
          if (v !== undefined && parseJson<StrandedMark>(v).on !== channelId) return { writes: [], result: undefined };
          const mark: StrandedMark = { participant, round, amount };
          return { writes: [{ kind: 'meta', key, value: stringifyJson(mark) }], result: undefined };
        },
      })
      .then(
        () => {
          this.#takenBy(channelId, round, false);
          this.#deps.log('round credit stranded by a closed channel: owed on the participant’s next channel', {
            participant,
            round: String(round),
            channelId,
          });
          void this.#lookStranded(cluster, participant, 1);
        },
        (e: unknown) => {
          this.#deps.log('stranded round credit not recorded yet', {
            participant,
            round: String(round),
            err: String(e),
            attempt,
          });
          // Past the last attempt it stays owed in its round's clearing record (kept while the closed channel is
          // before the round), as a credit that could not be delivered.
          if (attempt >= 30) return;
          setTimeout(
            () => this.#strandShared(cluster, channelId, participant, round, amount, attempt + 1),
            Math.min(200 * 2 ** attempt, 10_000),
          );
        },
      );
  }

  /**
   * Cluster: at every tick, before its round credits: the participants with a stranded credit this process can act on
   * (claimed on a channel it holds, or unclaimed while it holds an open channel of the participant in the market's
   * token).
   */
  async #scanStranded(cluster: MarketClusterDeps): Promise<void> {
    await this.#oneAtATime(async () => {
      let marks: StrandedMark[];
      try {
        marks = (await this.#deps.store.loadMetaPrefix(STRANDED_PREFIX)).map(({ value }) =>
          parseJson<StrandedMark>(value),
        );
      } catch (e) {
        return this.#deps.log('stranded round credits not read yet', { err: String(e) });
      }
      // What every channel took, as stored now (a mark deleted by another process no longer holds a channel back).
      this.#strandedOn.clear();
      for (const m of marks) if (m.on !== undefined) this.#takenBy(m.on, m.round, true);
      const who = new Set<Address>();
      for (const m of marks)
        if (m.on !== undefined ? cluster.holds(m.on) : this.#takers(cluster, m.participant).length > 0)
          who.add(m.participant);
      for (const participant of who) {
        this.#gate(participant, +1);
        try {
          await this.#takeStranded(cluster, participant);
        } catch (e) {
          this.#deps.log('stranded round credits not paid yet', { participant, err: String(e) });
        } finally {
          this.#gate(participant, -1);
        }
      }
    });
  }

  /**
   * Cluster: run the reads and claims of stranded credits one at a time, so that what one read finds (and
   * {@link #strandedOn} then says) is never overtaken by an older read. Resolves or fails as `f` does.
   */
  #oneAtATime<T>(f: () => Promise<T>): Promise<T> {
    const run = this.#strandedTurn.then(f);
    // The next one runs after this one, whether it succeeded or failed (its caller gets the failure).
    this.#strandedTurn = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Cluster: hold the participant's round credits back (+1) or let them go (-1) (see {@link #strandedReading}). */
  #gate(participant: Address, by: 1 | -1): void {
    const n = (this.#strandedReading.get(participant) ?? 0) + by;
    if (n > 0) this.#strandedReading.set(participant, n);
    else this.#strandedReading.delete(participant);
  }

  /** Cluster: the participant's channels held here that can take a credit in the market's token. */
  #takers(cluster: MarketClusterDeps, participant: Address): ChannelId[] {
    return this.#deps.channels.channelsOf(participant).filter((id) => {
      const r = this.#deps.channels.get(id);
      return (
        r !== undefined &&
        r.status === 'open' &&
        !r.latest.state.isFinal &&
        this.#inToken(r.params.token) &&
        cluster.holds(id)
      );
    });
  }

  /**
   * Cluster: read the participant's stranded credits and pay those a channel held here takes, up to `tries` reads. The
   * participant's round credits wait meanwhile (see {@link #strandedReading}).
   */
  async #lookStranded(cluster: MarketClusterDeps, participant: Address, tries: number): Promise<void> {
    this.#gate(participant, +1); // at once: the credits paid after this call wait for the read
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          return await this.#oneAtATime(() => this.#takeStranded(cluster, participant));
        } catch (e) {
          this.#deps.log('stranded round credits not read yet', { participant, err: String(e), attempt });
          if (attempt >= tries) return;
          await new Promise((res) => setTimeout(res, Math.min(200 * 2 ** attempt, 5_000)));
        }
      }
    } finally {
      this.#gate(participant, -1);
    }
  }

  /**
   * Cluster: pay the participant's stranded credits, oldest round first, each as its round's credit. A credit is taken
   * by a channel (`on`, in one transaction) only while that channel is before its round and no credit of that round or
   * later is on its way to the participant here; until it lands the participant's later credits wait behind it, here
   * and on a process taking the channel over (which reads these first). So the channel reaching the round says it
   * landed, and the mark is deleted then. Only the channel's holder credits it: paid once, whatever process claims it.
   */
  async #takeStranded(cluster: MarketClusterDeps, participant: Address): Promise<void> {
    const marks = (await this.#deps.store.loadMetaPrefix(`${STRANDED_PREFIX}${participant}/`))
      .map(({ value }) => parseJson<StrandedMark>(value))
      .sort((a, b) => (a.round < b.round ? -1 : a.round > b.round ? 1 : 0));
    // What the participant's channels took, as stored now (see #strandedOn).
    for (const id of [...this.#strandedOn.keys()])
      if (this.#deps.channels.get(id)?.params.device === participant) this.#strandedOn.delete(id);
    for (const m of marks) if (m.on !== undefined) this.#takenBy(m.on, m.round, true);
    for (const m of marks) {
      const key = strandedKey(participant, m.round);
      const owed = this.#owed.get(participant);
      if (owed?.has(m.round)) continue; // on its way here
      const p = this.#clearings.get(m.round);
      if (m.on !== undefined) {
        const on = m.on;
        const record = cluster.holds(on) ? this.#deps.channels.get(on) : undefined;
        if (!record) continue; // its channel's holder pays it
        if (record.latest.state.round >= m.round) {
          await cluster.rounds.transact({
            fenced: false,
            prefixes: () => [],
            keys: () => [key],
            run: (_open, entries) => {
              const v = entries.get(key);
              const still = v !== undefined && parseJson<StrandedMark>(v).on === on;
              return { writes: still ? [{ kind: 'deleteMeta' as const, key }] : [], result: undefined };
            },
          });
          this.#takenBy(on, m.round, false);
          continue;
        }
        if (record.status === 'closed') {
          // Closed while nobody here was paying it: it may have closed at the credit's hub-signed state (as after a
          // restart on a single hub): kept owed, not paid again.
          if (!this.#strandedStuck.has(key)) {
            this.#strandedStuck.add(key);
            this.#deps.log('stranded round credit kept owed: the channel that took it closed', {
              participant,
              round: String(m.round),
              amount: String(m.amount),
              channelId: on,
            });
          }
          continue;
        }
        // Taken by this channel before (here, or by the process that held it), not landed yet: paid again.
        if (p) this.#payCredits(p, participant, false, on);
        else this.#noRecord(key, m);
        continue;
      }
      const later = [...(owed?.keys() ?? [])].some((k) => k >= m.round);
      const takers = this.#takers(cluster, participant);
      const to = takers.find((id) => this.#deps.channels.get(id)!.latest.state.round < m.round);
      if (to !== undefined && !p) this.#noRecord(key, m);
      if (to === undefined || later || !p) {
        if (takers.length > 0 && to === undefined && !this.#strandedStuck.has(key)) {
          this.#strandedStuck.add(key);
          this.#deps.log('stranded round credit kept owed: every open channel of its participant is past its round', {
            participant,
            round: String(m.round),
            amount: String(m.amount),
          });
        }
        continue;
      }
      const claimed = await cluster.rounds.transact({
        fenced: false,
        prefixes: () => [],
        keys: () => [key],
        run: (_open, entries) => {
          const v = entries.get(key);
          const now = v === undefined ? undefined : parseJson<StrandedMark>(v);
          if (now === undefined || (now.on !== undefined && now.on !== to)) return { writes: [], result: false };
          const mark: StrandedMark = { ...now, on: to };
          return { writes: [{ kind: 'meta' as const, key, value: stringifyJson(mark) }], result: true };
        },
      });
      if (!claimed) continue;
      this.#takenBy(to, m.round, true);
      this.#payCredits(p, participant, false, to);
    }
  }

  /** Cluster: a stranded credit whose round's clearing record is not known here cannot be sent (reported once). */
  #noRecord(key: string, m: StrandedMark): void {
    if (this.#strandedStuck.has(key)) return;
    this.#strandedStuck.add(key);
    this.#deps.log('stranded round credit kept owed: its clearing record is not known here', {
      participant: m.participant,
      round: String(m.round),
      amount: String(m.amount),
    });
  }

  /** Cluster: note (or forget) that `channelId` took the stranded credit of `round` (see {@link #strandedOn}). */
  #takenBy(channelId: ChannelId, round: bigint, taken: boolean): void {
    let rounds = this.#strandedOn.get(channelId);
    if (taken) {
      if (!rounds) this.#strandedOn.set(channelId, (rounds = new Set()));
      rounds.add(round);
    } else if (rounds?.delete(round) && rounds.size === 0) this.#strandedOn.delete(channelId);
  }

  /**
   * Publish the record to the participants still owed their credit and send each that one credit: every participant
   * when the round has just closed, at a restart those whose channel has not reached the round yet. `to` (cluster): pay
   * on that channel, which took the round's credit stranded by a closed one (see {@link #takeStranded}).
   */
  #payCredits(p: StoredClearing, only?: Address, retried = false, to?: ChannelId): void {
    const r = p.record.round;
    const cluster = this.#deps.cluster;
    // Signed and encoded once per signature form, and only when some participant is still owed (a restart re-reads
    // every clearing): one frame, or the record's parts when it is longer than one (`splitClearing`; FRAME_TOO_LARGE
    // past its most parts). The record is the same in both forms, and so is its size.
    let record: Uint8Array | undefined;
    let frames: Message[] | undefined;
    let framesV2: Message[] | undefined;
    const clearingFrames: ClearingFrames = (wireVersion) => {
      const { channels: _channels, ...published } = p;
      record ??= new TextEncoder().encode(stringifyJson(published satisfies PublishedClearing));
      if (wireVersion >= 3) {
        // The signature covers the refunds with the record: a relay cannot alter what the round pays back.
        frames ??= splitClearing(
          r,
          record,
          this.#deps.signer.signDigest(publishedClearingDigest(this.#deps.domain, r, published)),
        );
        return frames;
      }
      // A device of wire version 1 or 2 verifies the record's signature only (its refunds go unsigned to it).
      framesV2 ??= splitClearing(
        r,
        record,
        this.#deps.signer.signDigest(clearingDigestV2(this.#deps.domain, r, hashClearing(published.record))),
      );
      return framesV2;
    };
    const due = new Map<Address, bigint>();
    for (const c of p.record.credits) due.set(c.participant, (due.get(c.participant) ?? 0n) + c.amount);
    for (const x of p.refunds) due.set(x.participant, (due.get(x.participant) ?? 0n) + x.amount);
    // Credits settle asynchronously, so the count is complete before the first one lands.
    let owed = 0;
    for (const [participant, amount] of due) {
      if (only !== undefined && participant !== only) continue;
      const channelId = to ?? p.channels[participant] ?? this.#marketChannel(participant);
      if (cluster) {
        // Paid by the process holding the channel, once: not here when another holds it or it is on its way here.
        if (!channelId || this.#owed.get(participant)?.has(r)) continue;
        if (!cluster.holds(channelId)) {
          if (!retried) this.#noteUnheld(r, participant);
          continue;
        }
      }
      const record = channelId ? this.#deps.channels.get(channelId) : undefined;
      if (!channelId || !record) {
        owed = Number.POSITIVE_INFINITY; // nowhere to pay it: the record stays as what the hub owes
        continue;
      }
      if (record.latest.state.round >= r) continue; // credited before a restart
      // Cluster: a closed channel takes no credit (one stranded by it is paid on another channel, see #lookStranded);
      // an attempt would only hold the participant's round in #owed meanwhile.
      if (cluster && record.status === 'closed') continue;
      // A record in more parts than a device reassembles cannot be sent, and a device refuses a round credit without
      // it: the round's credits stay owed (the record is kept) instead of failing the clearing, or every restart.
      try {
        clearingFrames(Number.POSITIVE_INFINITY);
      } catch (e) {
        if (!isTrickleError(e, 'FRAME_TOO_LARGE')) throw e;
        this.#deps.log('clearing record too large to publish: its round credits cannot be paid', {
          round: String(r),
          ...e.details,
        });
        owed = Number.POSITIVE_INFINITY;
        break;
      }
      owed++;
      this.#deliver(channelId, participant, amount, r, 1, clearingFrames);
    }
    if (!cluster) this.#stored.set(r, owed);
  }
}

/**
 * The clearing of round `r` and the writes that store it: the clearing record (unless nobody took part), the next
 * open round, and the deletion of the cleared orders and of the escrows they used or that are refunded. Escrows not
 * backing an order of this round (`placed`) or a later one (`later`) are refunded, and so is what a bid's escrow
 * paid above its worst case.
 */
function clearingOf(
  r: bigint,
  placed: readonly PlacedOrder[],
  later: ReadonlySet<Bytes32>,
  escrows: ReadonlyMap<Bytes32, EscrowRecord>,
  currentFeeBps: bigint,
): { stored: StoredClearing; empty: boolean; writes: MarketWrite[] } {
  let feeBps = currentFeeBps;
  // The round's fee is the lowest announced to any of its orders: a hub restarted with a higher fee (or a cluster
  // process configured with one) still clears the orders taken under the lower one at that fee, which their devices
  // check (they refuse a higher one, and their credit would never land).
  for (const p of placed) if (p.feeBps !== undefined && p.feeBps < feeBps) feeBps = p.feeBps;
  // Orders were validated and de-duplicated on receipt (place), so clearing skips re-validating them.
  const record = clearRound(
    r,
    placed.map((p) => p.order),
    { feeBps, validated: true },
  );
  const used = new Set<Bytes32>([...placed.map((p) => p.order.id), ...later]);
  const refunds: PublishedClearing['refunds'][number][] = [];
  const refundChannels: Record<string, ChannelId> = {};
  for (const e of escrows.values())
    if (!used.has(e.orderId)) {
      refunds.push({ participant: e.device, orderId: e.orderId, amount: e.amount });
      refundChannels[e.device] = e.channelId;
    }
  for (const p of placed) {
    const e = escrows.get(p.order.id);
    const extra = e ? e.amount - escrowFor(p.order) : 0n;
    if (e && extra > 0n) refunds.push({ participant: e.device, orderId: e.orderId, amount: extra });
  }
  // What is stored: the published clearing plus which channel pays each participant (not published): the channel of
  // the participant's order, else of its refunded escrow.
  const stored: StoredClearing = {
    record,
    orders: placed.map((p) => ({ ...p.order, sig: p.sig })),
    feeBps,
    refunds,
    channels: { ...refundChannels, ...Object.fromEntries(placed.map((p) => [p.order.participant, p.channelId])) },
  };
  // A round nobody took part in owes nothing and is published to nobody: only the round number moves on (an idle
  // market would otherwise store a record per round, every round, and re-read each one at every restart).
  const empty = placed.length === 0 && refunds.length === 0;
  const writes: MarketWrite[] = [
    ...(empty ? [] : [{ kind: 'meta' as const, key: clearingKey(r), value: stringifyJson(stored) }]),
    { kind: 'meta' as const, key: ROUND_KEY, value: String(r + 1n) },
    ...placed.map((p) => ({ kind: 'deleteMeta' as const, key: orderKey(r, p.order.id) })),
    // The escrow under a placed order's id is settled by this round, whatever the order's side: an ask's was refunded
    // whole above, and kept it would be refunded again next round (a device could pay one escrow, place an ask under
    // its id and be refunded it twice).
    ...placed
      .filter((p) => p.order.side === 'bid' || escrows.has(p.order.id))
      .map((p) => ({ kind: 'deleteMeta' as const, key: escrowKey(p.order.id) })),
    ...refunds
      .filter((x) => !placed.some((p) => p.order.id === x.orderId))
      .map((x) => ({ kind: 'deleteMeta' as const, key: escrowKey(x.orderId) })),
  ];
  return { stored, empty, writes };
}
