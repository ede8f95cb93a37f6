import { TrickleError } from '@trickle/protocol/errors';
import { MAX_UINT64 } from '@trickle/protocol/types';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { digestOrders } from './digestOrders.js';
import { checkOrder } from './order.js';
import type { Order } from './order.js';
import { compareArrival } from './priority.js';
import type { ClearingRecord, Credit, Fill, MarketClearing, Net } from './record.js';

/** Options of {@link clearRound}. */
export interface ClearOptions {
  /** Hub fee in basis points of each seller fill, 0–10,000. Default 0n. */
  readonly feeBps?: bigint | undefined;
  /**
   * The round's orders digest, when the hub has kept it incrementally with `appendOrderDigest`. It is put in the
   * record as given (`verifyClearing` always recomputes it). Default: computed with `digestOrders`, which costs
   * about three keccak permutations per order, many times the clearing itself.
   */
  readonly ordersDigest?: Bytes32 | undefined;
}

/** The defaults of {@link ClearOptions}, in one place. */
export const CLEAR_DEFAULTS = { feeBps: 0n } as const;

/** Basis points in a whole. */
const BPS = 10_000n;
const BYTES32 = /^0x[0-9a-f]{64}$/;
const ID_PATTERN = /^0x[0-9a-f]{64}$/;
/** Both factors below 2^128 means the product fits a uint256: skips a multiplication for realistic orders. */
const HALF_WORD = 1n << 128n;
const MAX_UINT256 = (1n << 256n) - 1n;

interface Book {
  readonly bids: Order[];
  readonly asks: Order[];
}

interface Account {
  net: bigint;
  credit: bigint;
}

function invalid(shortMessage: string, details: Record<string, unknown>): never {
  throw new TrickleError('INVALID_ARGUMENT', shortMessage, { details });
}

/**
 * Clear one round of periodic double auctions, one per market, and net the result across markets.
 *
 * **Matching.** Each market's bids are ranked by price descending, its asks by price ascending, ties broken by
 * earlier `arrival`, then lower `id`. Walking the two ranked lists, units trade while the current bid's limit is ≥
 * the current ask's limit, so every unit that can add gains from trade does: the traded volume and the surplus
 * (Σ buyers' (limit − price)·q + Σ sellers' (price − limit)·q, which does not depend on the price) are the
 * maximum over all feasible allocations. At most one bid and one ask per market are filled partially.
 *
 * **Price rule.** One uniform integer price per market: with L = max(last accepted ask, first rejected bid) and
 * H = min(last accepted bid, first rejected ask) (a missing rejected order imposes no bound), the price is
 * ⌊(L + H) / 2⌋. L ≤ H always holds, so no filled buyer pays above its limit, no filled seller receives below
 * its limit, and no order left (partly) unfilled would have wanted to trade at that price. `null` when nothing
 * crosses.
 *
 * **Money.** A fill's amount is quantity × price exactly, so buyers' payments equal sellers' receipts to the base
 * unit. The hub fee is ⌊amount × feeBps / 10,000⌋ per ask fill, taken from the seller. `nets[p]` = Σ p's ask
 * amounts after fee − Σ p's bid amounts; Σ nets = −fee.
 *
 * **Escrow scheme** (how the hub moves the money over its channels): when a participant places a bid it pays the
 * hub `escrowFor(bid)` = quantity × limit up front as an ordinary channel payment; an ask costs nothing. At round
 * end the hub sends each participant one channel payment, `credits[p]` = Σ over p's bids (quantity × limit −
 * filled amount) + Σ over p's asks (filled amount − fee) = Σ escrow(p) + nets[p] ≥ 0. Every participant with an
 * order has an entry, zero included, so each gets a record for the round.
 *
 * Cost: O(n log n) in the number of orders; no I/O, clock or randomness.
 *
 * @param round - the round number (uint64); every order must be for it
 * @param orders - the round's orders, in any order; ids must be unique
 * @param options - {@link ClearOptions}; defaults in {@link CLEAR_DEFAULTS}
 * @returns the {@link ClearingRecord}: markets by name, nets and credits by address
 * @throws TrickleError `BAD_ORDER` when an order is malformed (see `validateOrder`), is for another round, or
 *   repeats an id; `INVALID_ARGUMENT` for a bad round, order list or option
 * @example
 * ```ts
 * const record = clearRound(7n, orders, { feeBps: 30n })
 * for (const { participant, amount } of record.credits) pay(participant, amount)
 * ```
 */
export function clearRound(round: bigint, orders: readonly Order[], options: ClearOptions = {}): ClearingRecord {
  const feeBps = options.feeBps ?? CLEAR_DEFAULTS.feeBps;
  if (typeof round !== 'bigint' || round < 0n || round > MAX_UINT64) invalid('round is not a uint64', { round });
  if (!Array.isArray(orders)) invalid('orders is not an array', {});
  if (typeof feeBps !== 'bigint' || feeBps < 0n || feeBps > BPS) invalid('feeBps is not in [0, 10000]', { feeBps });
  const given = options.ordersDigest;
  if (given !== undefined && (typeof given !== 'string' || !BYTES32.test(given))) {
    invalid('ordersDigest is not lowercase 32-byte hex', { ordersDigest: given });
  }

  const books = new Map<string, Book>();
  const accounts = new Map<string, Account>();
  const checksums = new Map<string, boolean>();
  const ids = new Set<string>();
  for (const order of orders) {
    if (!isValidFast(order, books, accounts)) checkOrder(order, checksums);
    if (order.round !== round) {
      throw new TrickleError('BAD_ORDER', 'order is for another round', {
        details: { field: 'round', id: order.id, expected: round, actual: order.round },
      });
    }
    if (ids.has(order.id)) {
      throw new TrickleError('BAD_ORDER', 'duplicate order id', { details: { field: 'id', id: order.id } });
    }
    ids.add(order.id);
    if (!accounts.has(order.participant)) accounts.set(order.participant, { net: 0n, credit: 0n });
    let book = books.get(order.market);
    if (book === undefined) {
      book = { bids: [], asks: [] };
      books.set(order.market, book);
    }
    (order.side === 'bid' ? book.bids : book.asks).push(order);
  }

  const markets: MarketClearing[] = [];
  let fee = 0n;
  for (const market of [...books.keys()].sort(compareCodeUnits)) {
    const book = books.get(market)!;
    const cleared = clearMarket(market, book, feeBps, accounts);
    markets.push(cleared.clearing);
    fee += cleared.fee;
  }

  const participants = [...accounts.keys()].map((p) => [p.toLowerCase(), p] as const);
  participants.sort((a, b) => compareCodeUnits(a[0], b[0]));
  const nets: Net[] = [];
  const credits: Credit[] = [];
  for (const [, participant] of participants) {
    const account = accounts.get(participant)!;
    nets.push({ participant: participant as Address, net: account.net });
    credits.push({ participant: participant as Address, amount: account.credit });
  }

  return { round, ordersDigest: given ?? digestOrders(orders), markets, nets, credits, fee };
}

/**
 * The same acceptance as `checkOrder`, minus the work already done for an earlier order of the round: an address
 * or market seen before was valid then. `false` sends the order to `checkOrder`, which throws the precise error
 * (or accepts a first-seen address or market).
 */
function isValidFast(order: Order, books: Map<string, Book>, accounts: Map<string, Account>): boolean {
  if (typeof order !== 'object' || order === null) return false;
  const { id, participant, market, side, quantity, price, arrival } = order;
  return (
    typeof id === 'string' &&
    ID_PATTERN.test(id) &&
    typeof participant === 'string' &&
    accounts.has(participant) &&
    typeof market === 'string' &&
    books.has(market) &&
    (side === 'bid' || side === 'ask') &&
    typeof quantity === 'bigint' &&
    quantity >= 1n &&
    typeof price === 'bigint' &&
    price >= 1n &&
    ((quantity < HALF_WORD && price < HALF_WORD) || quantity * price <= MAX_UINT256) &&
    typeof order.round === 'bigint' &&
    order.round >= 0n &&
    order.round <= MAX_UINT64 &&
    typeof arrival === 'bigint' &&
    arrival >= 0n &&
    arrival <= MAX_UINT64
  );
}

/** Order strings by UTF-16 code units, independent of locale. */
function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Rank one side of a book: price (descending for bids, ascending for asks), then time priority. Sorts packed
 * float keys natively when the price span and the side's size fit 53 bits together (the usual case), else falls
 * back to a comparator.
 */
function rankSide(orders: Order[], descending: boolean): Order[] {
  const n = orders.length;
  if (n < 2) return orders;
  orders.sort(compareArrival);
  let min = orders[0]!.price;
  let max = min;
  for (let k = 1; k < n; k++) {
    const p = orders[k]!.price;
    if (p < min) min = p;
    else if (p > max) max = p;
  }
  let slots = 1;
  while (slots < n) slots *= 2;
  if ((max - min) * BigInt(slots) + BigInt(slots) <= BigInt(Number.MAX_SAFE_INTEGER)) {
    // key = priceRank × slots + timeRank: exact in a double, so a plain numeric sort yields price-time priority.
    const keys = new Float64Array(n);
    const exact = max <= BigInt(Number.MAX_SAFE_INTEGER);
    const base = descending ? Number(max) : Number(min);
    for (let k = 0; k < n; k++) {
      const p = orders[k]!.price;
      const rank = exact
        ? descending
          ? base - Number(p)
          : Number(p) - base
        : Number(descending ? max - p : p - min);
      keys[k] = rank * slots + k;
    }
    keys.sort();
    const ranked = new Array<Order>(n);
    for (let k = 0; k < n; k++) ranked[k] = orders[keys[k]! % slots]!;
    return ranked;
  }
  // Array.prototype.sort is stable, so time priority survives within a price.
  return orders.sort((a, b) =>
    a.price === b.price ? 0 : (a.price > b.price) === descending ? -1 : 1,
  );
}

function clearMarket(
  market: string,
  book: Book,
  feeBps: bigint,
  accounts: Map<string, Account>,
): { clearing: MarketClearing; fee: bigint } {
  const bids = rankSide(book.bids, true);
  const asks = rankSide(book.asks, false);
  const nb = bids.length;
  const na = asks.length;

  // Walk both ranked sides while the current bid crosses the current ask.
  let i = 0;
  let j = 0;
  let restBid = nb > 0 ? bids[0]!.quantity : 0n;
  let restAsk = na > 0 ? asks[0]!.quantity : 0n;
  let volume = 0n;
  while (i < nb && j < na && bids[i]!.price >= asks[j]!.price) {
    const units = restBid < restAsk ? restBid : restAsk;
    volume += units;
    restBid -= units;
    restAsk -= units;
    if (restBid === 0n && ++i < nb) restBid = bids[i]!.quantity;
    if (restAsk === 0n && ++j < na) restAsk = asks[j]!.quantity;
  }
  // Orders [0, i) are filled completely; order i, if any, keeps restBid (partial when below its quantity).
  const filledBids = i < nb && restBid < bids[i]!.quantity ? i + 1 : i;
  const filledAsks = j < na && restAsk < asks[j]!.quantity ? j + 1 : j;

  let price: bigint | null = null;
  if (volume > 0n) {
    const lastBid = bids[filledBids - 1]!.price;
    const lastAsk = asks[filledAsks - 1]!.price;
    const firstRejectedBid = i < nb ? bids[i]!.price : undefined;
    const firstRejectedAsk = j < na ? asks[j]!.price : undefined;
    const low = firstRejectedBid !== undefined && firstRejectedBid > lastAsk ? firstRejectedBid : lastAsk;
    const high = firstRejectedAsk !== undefined && firstRejectedAsk < lastBid ? firstRejectedAsk : lastBid;
    price = (low + high) / 2n;
  }

  const fills: Fill[] = [];
  let fee = 0n;
  for (let k = 0; k < nb; k++) {
    const bid = bids[k]!;
    const account = accounts.get(bid.participant)!;
    const escrow = bid.quantity * bid.price;
    if (k < filledBids) {
      const quantity = k < i ? bid.quantity : bid.quantity - restBid;
      const amount = quantity * price!;
      fills.push({ orderId: bid.id, participant: bid.participant, side: 'bid', quantity, amount });
      account.net -= amount;
      account.credit += escrow - amount;
    } else {
      account.credit += escrow;
    }
  }
  for (let k = 0; k < filledAsks; k++) {
    const ask = asks[k]!;
    const account = accounts.get(ask.participant)!;
    const quantity = k < j ? ask.quantity : ask.quantity - restAsk;
    const amount = quantity * price!;
    const cut = feeBps === 0n ? 0n : (amount * feeBps) / BPS;
    fills.push({ orderId: ask.id, participant: ask.participant, side: 'ask', quantity, amount });
    account.net += amount - cut;
    account.credit += amount - cut;
    fee += cut;
  }
  return { clearing: { market, price, volume, fills }, fee };
}
