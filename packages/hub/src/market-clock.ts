import {
  type PublishedClearing,
  clearRound,
  clearingDigest,
  hashClearing,
  hashOrder,
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
import type { HubStore } from './store/types.js';

/** Options of the market: round length and hub fee. */
export interface MarketOptions {
  /** Round length in ms (default 1000). */
  readonly roundMs?: number;
  /** Hub fee on seller proceeds, in basis points (default 0). */
  readonly feeBps?: bigint;
  /**
   * How many of the latest rounds keep their stored clearing record once every credit it owes has landed (default
   * 1,000); older ones are deleted. A record whose credits have not all landed is kept, however old.
   */
  readonly keepClearings?: number;
}

export interface MarketClockDeps {
  readonly channels: ChannelTable;
  readonly committer: Committer;
  readonly store: HubStore;
  readonly signer: Signer;
  readonly verifier: Verifier;
  readonly domain: Domain;
  readonly send: (device: Address, msg: Message) => boolean;
  /** Send to every connected device. */
  readonly broadcast: (msg: Message) => void;
  readonly credit: (channelId: ChannelId, amount: bigint, meta: { round?: bigint | undefined }) => Promise<SignedState>;
  readonly onRound: (record: ClearingRecord) => void;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
}

/** A clearing as the hub stores it: what it published, plus the channel that pays each participant. */
interface StoredClearing extends PublishedClearing {
  readonly channels: Readonly<Record<string, ChannelId>>;
}

interface PlacedOrder {
  readonly order: Order;
  readonly sig: string;
  readonly channelId: ChannelId;
}

const ROUND_KEY = 'market/round';
const ARRIVAL_KEY = 'market/arrival';
const orderKey = (round: bigint, id: Bytes32) => `market/order/${round.toString().padStart(20, '0')}/${id}`;
const clearingKey = (round: bigint) => `market/clearing/${round.toString().padStart(20, '0')}`;

/**
 * The market clock: takes signed orders (bids only once their worst case is escrowed in a channel payment), clears
 * each round on a timer with `@trickle/market`, publishes the hub-signed clearing record to the participants and
 * sends each exactly one hub-signed credit (refund of the unused escrow plus seller proceeds), netting every
 * market of the round into that one channel update. Orders, escrows and clearings are durable, so a restarted hub
 * pays every credit it owes.
 */
export class MarketClock {
  round = 1n;
  readonly #deps: MarketClockDeps;
  readonly #feeBps: bigint;
  #arrival = 0n;
  readonly #orders = new Map<bigint, PlacedOrder[]>();
  readonly #escrows = new Map<Bytes32, EscrowRecord>();
  #timer: NodeJS.Timeout | undefined;
  #clearing: Promise<void> = Promise.resolve();
  /** Per device, the rounds whose credit to it is not delivered yet, with their clearing frames. */
  readonly #owed = new Map<Address, Map<bigint, () => Message>>();
  /** Rounds with a stored clearing record: how many of its credits are still on their way (Infinity: one never can be). */
  readonly #stored = new Map<bigint, number>();
  readonly #keepClearings: number;
  #pruning = false;

  constructor(deps: MarketClockDeps, options: MarketOptions) {
    this.#deps = deps;
    this.#feeBps = options.feeBps ?? 0n;
    this.#keepClearings = options.keepClearings ?? 1000;
    if (!Number.isSafeInteger(this.#keepClearings) || this.#keepClearings < 0) {
      throw new TrickleError('INVALID_ARGUMENT', 'keepClearings must be a whole number of rounds, 0 or more', {
        details: { keepClearings: options.keepClearings },
      });
    }
  }

  get feeBps(): bigint {
    return this.#feeBps;
  }

  /** Load durable market state; re-send credits owed by rounds cleared before a restart. */
  async restore(): Promise<void> {
    const s = this.#deps.store;
    this.round = BigInt((await s.getMeta(ROUND_KEY)) ?? '1');
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
    this.#timer = setInterval(() => {
      this.#clearing = this.#clearing
        .then(async () => void (await this.closeRound()))
        .catch((e: unknown) => this.#deps.log('round failed', { err: String(e) }));
    }, roundMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#clearing;
  }

  /** The frame announcing the open round. */
  roundFrame(): Message {
    return { t: 'round', id: 0, round: this.round, feeBps: this.#feeBps };
  }

  /** Whether an order or escrow of this channel is still waiting for its round's credit. */
  owes(channelId: ChannelId): boolean {
    for (const e of this.#escrows.values()) if (e.channelId === channelId) return true;
    for (const list of this.#orders.values()) for (const p of list) if (p.channelId === channelId) return true;
    return false;
  }

  /** A device's escrow payment was made durable. */
  onEscrow(e: EscrowRecord): void {
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
    if (terms.round < this.round || terms.round > this.round + 1n) {
      throw new TrickleError('BAD_ORDER', `order is for round ${terms.round}; round ${this.round} is open`, {
        details: { round: this.round },
      });
    }
    const list = this.#orders.get(terms.round) ?? [];
    if (list.some((p) => p.order.id === terms.id)) throw new TrickleError('BAD_ORDER', 'duplicate order id');
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
      if (!channelId) throw new TrickleError('BAD_ORDER', 'no open channel to receive proceeds');
    }
    const order: Order = { ...terms, arrival: ++this.#arrival };
    validateOrder(order);
    const placed: PlacedOrder = { order, sig: `0x${Buffer.from(msg.sig).toString('hex')}`, channelId };
    await this.#deps.committer.write([
      { kind: 'meta', key: orderKey(order.round, order.id), value: stringifyJson(placed) },
      { kind: 'meta', key: ARRIVAL_KEY, value: String(this.#arrival) },
    ]);
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

  #marketChannel(device: Address): ChannelId | undefined {
    for (const id of this.#deps.channels.channelsOf(device)) {
      const r = this.#deps.channels.get(id);
      if (r && r.status === 'open' && !r.latest.state.isFinal) return id;
    }
    return undefined;
  }

  /** Clear the open round now (the timer calls this). */
  async closeRound(): Promise<ClearingRecord> {
    const r = this.round;
    // Close the round before anything awaits: orders arriving from now on are for a later round.
    this.round = r + 1n;
    const placed = [...(this.#orders.get(r) ?? [])];
    this.#orders.delete(r);
    // Orders were validated and de-duplicated on receipt (place), so clearing skips re-validating them.
    const record = clearRound(
      r,
      placed.map((p) => p.order),
      { feeBps: this.#feeBps, validated: true },
    );
    // Escrows not backing any placed order of this round or the next are refunded now.
    const used = new Set<Bytes32>(placed.map((p) => p.order.id));
    for (const [round, list] of this.#orders) if (round > r) for (const p of list) used.add(p.order.id);
    const refunds: PublishedClearing['refunds'][number][] = [];
    for (const e of this.#escrows.values())
      if (!used.has(e.orderId)) refunds.push({ participant: e.device, orderId: e.orderId, amount: e.amount });
    // Extra escrow paid above a bid's worst case is refunded too.
    for (const p of placed) {
      const e = this.#escrows.get(p.order.id);
      const extra = e ? e.amount - escrowFor(p.order) : 0n;
      if (e && extra > 0n) refunds.push({ participant: e.device, orderId: e.orderId, amount: extra });
    }
    // What is stored: the published clearing plus which channel pays each participant (not published).
    const stored: StoredClearing = {
      record,
      orders: placed.map((p) => ({ ...p.order, sig: p.sig })),
      feeBps: this.#feeBps,
      refunds,
      channels: Object.fromEntries(placed.map((p) => [p.order.participant, p.channelId])),
    };
    // A round nobody took part in owes nothing and is published to nobody: only the round number moves on (an idle
    // market would otherwise store a record per round, every round, and re-read each one at every restart).
    const empty = placed.length === 0 && refunds.length === 0;
    const writes = [
      ...(empty ? [] : [{ kind: 'meta' as const, key: clearingKey(r), value: stringifyJson(stored) }]),
      { kind: 'meta' as const, key: ROUND_KEY, value: String(r + 1n) },
      ...placed.map((p) => ({ kind: 'deleteMeta' as const, key: orderKey(r, p.order.id) })),
      ...placed
        .filter((p) => p.order.side === 'bid')
        .map((p) => ({ kind: 'deleteMeta' as const, key: escrowKey(p.order.id) })),
      ...refunds
        .filter((x) => !placed.some((p) => p.order.id === x.orderId))
        .map((x) => ({ kind: 'deleteMeta' as const, key: escrowKey(x.orderId) })),
    ];
    await this.#deps.committer.write(writes);
    for (const p of placed) if (p.order.side === 'bid') this.#escrows.delete(p.order.id);
    for (const x of refunds) this.#escrows.delete(x.orderId);
    this.#deps.onRound(record);
    if (!empty) this.#payCredits(stored);
    this.#deps.broadcast(this.roundFrame());
    void this.#prune();
    return record;
  }

  /**
   * Send a participant its round credit, after the clearing record it is checked against (the device refuses a round
   * credit without it). What the hub owes is never dropped: a refused or undeliverable credit is retried with backoff
   * (the device may be offline, or busy with its own updates), the record going again before each attempt and
   * whenever the device reconnects; once the channel has moved to a later round, it goes as a plain credit.
   */
  #deliver(
    channelId: ChannelId,
    participant: Address,
    amount: bigint,
    round: bigint,
    attempt: number,
    clearing: () => Message,
  ): void {
    let owed = this.#owed.get(participant);
    if (!owed) this.#owed.set(participant, (owed = new Map()));
    owed.set(round, clearing);
    const settled = (landed: boolean) => {
      owed.delete(round);
      if (owed.size === 0 && this.#owed.get(participant) === owed) this.#owed.delete(participant);
      const left = this.#stored.get(round);
      if (left !== undefined) this.#stored.set(round, landed ? left - 1 : Number.POSITIVE_INFINITY);
    };
    this.#deps.send(participant, clearing());
    const current = this.#deps.channels.get(channelId)?.latest.state.round ?? 0n;
    this.#deps.credit(channelId, amount, { round: current < round ? round : undefined }).then(
      () => settled(true),
      (e: unknown) => {
        const code = isTrickleError(e) ? e.code : 'INTERNAL';
        this.#deps.log('round credit not delivered yet', {
          participant,
          round: String(round),
          code,
          message: isTrickleError(e) ? e.shortMessage : undefined,
          attempt,
        });
        if (code === 'CHANNEL_NOT_OPEN' || code === 'CHANNEL_FINAL' || attempt >= 30) return settled(false);
        setTimeout(
          () => this.#deliver(channelId, participant, amount, round, attempt + 1, clearing),
          Math.min(200 * 2 ** attempt, 10_000),
        );
      },
    );
  }

  /**
   * Delete the stored clearing records older than the kept rounds whose credits have all landed (an idle hub would
   * otherwise keep one per round for ever, and read each back at every restart).
   */
  async #prune(): Promise<void> {
    if (this.#pruning) return;
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
    return [...this.#stored.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** A device (re)connected: send the clearing records of the rounds that still owe it a credit, before the credits. */
  deviceConnected(device: Address): void {
    for (const clearing of this.#owed.get(device)?.values() ?? []) this.#deps.send(device, clearing());
  }

  /**
   * Publish the record to the participants still owed their credit and send each that one credit: every participant
   * when the round has just closed, at a restart those whose channel has not reached the round yet.
   */
  #payCredits(p: StoredClearing): void {
    const r = p.record.round;
    // Signed and encoded once, and only when some participant is still owed (a restart re-reads every clearing).
    let frame: Message | undefined;
    const clearingFrame = (): Message => {
      if (frame) return frame;
      const sig = this.#deps.signer.signDigest(clearingDigest(this.#deps.domain, r, hashClearing(p.record)));
      const { channels: _channels, ...published } = p;
      const record = new TextEncoder().encode(stringifyJson(published satisfies PublishedClearing));
      return (frame = { t: 'clearing', id: 0, round: r, record, sig });
    };
    const due = new Map<Address, bigint>();
    for (const c of p.record.credits) due.set(c.participant, (due.get(c.participant) ?? 0n) + c.amount);
    for (const x of p.refunds) due.set(x.participant, (due.get(x.participant) ?? 0n) + x.amount);
    // Credits settle asynchronously, so the count is complete before the first one lands.
    let owed = 0;
    for (const [participant, amount] of due) {
      const channelId = p.channels[participant] ?? this.#marketChannel(participant);
      const record = channelId ? this.#deps.channels.get(channelId) : undefined;
      if (!channelId || !record) {
        owed = Number.POSITIVE_INFINITY; // nowhere to pay it: the record stays as what the hub owes
        continue;
      }
      if (record.latest.state.round >= r) continue; // credited before a restart
      owed++;
      this.#deliver(channelId, participant, amount, r, 1, clearingFrame);
    }
    this.#stored.set(r, owed);
  }
}
