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
  /**
   * `true` when every order has already passed `validateOrder` and the ids are known to be unique, as the hub
   * ensures on receipt. Clearing then re-checks only each order's round and the numeric ranges its arithmetic
   * relies on, and skips the id format and uniqueness, address checksum and market name checks, which cost more
   * than the clearing itself (one keccak per new address, a regex and a hash-set insert per order). A record
   * built from orders that break the promise is not the honest clearing and `verifyClearing`, which always
   * validates, rejects it. Default `false`.
   */
  readonly validated?: boolean | undefined;
}

/** The defaults of {@link ClearOptions}, in one place. */
export const CLEAR_DEFAULTS = { feeBps: 0n, validated: false } as const;

/** Basis points in a whole. */
const BPS = 10_000n;
const BYTES32 = /^0x[0-9a-f]{64}$/;
const ID_PATTERN = /^0x[0-9a-f]{64}$/;
const SAFE = Number.MAX_SAFE_INTEGER;

/** One market's orders, as indices into the round's order list, in the order given. */
interface Book {
  readonly bids: number[];
  readonly asks: number[];
  /** Σ quantity of the bids and of the asks, as doubles: ≤ 2^53 − 1 means every partial sum is exact. */
  bidUnits: number;
  askUnits: number;
}

/**
 * The round's orders in columns, indexed like the order list. Read once, in order, so that the ranking and
 * matching that follow touch small arrays instead of chasing each order object and its bigints around the heap.
 */
interface Columns {
  readonly orders: readonly Order[];
  /** Participant index of each order. */
  readonly owner: Int32Array;
  /** quantity and price as doubles; exact when `exact`. */
  readonly quantity: Float64Array;
  readonly price: Float64Array;
  /** Every quantity and price is at most 2^53 − 1. */
  readonly exact: boolean;
}

/** Per-participant running totals, indexed like `addresses`. */
interface Ledger {
  readonly addresses: string[];
  readonly index: Map<string, number>;
  readonly escrow: bigint[];
  readonly nets: bigint[];
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
 * its limit before the fee (taken from seller proceeds), and no order left (partly) unfilled would have wanted to
 * trade at that price. `null` when nothing crosses.
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
 * **Cost.** O(n log n) in the number of orders, no I/O, clock or randomness. The hub's path is `validated: true`
 * with the `ordersDigest` it kept on receipt: about 60–80 ms for 100,000 orders on a small 2-core server
 * (`bench/clear.mjs`). Re-validating every order (the default) roughly triples that; computing the orders digest
 * here adds about 30 µs per order.
 *
 * @param round - the round number (uint64); every order must be for it
 * @param orders - the round's orders, in any order (time priority is cheapest); ids must be unique
 * @param options - {@link ClearOptions}; defaults in {@link CLEAR_DEFAULTS}
 * @returns the {@link ClearingRecord}: markets by name, nets and credits by address
 * @throws TrickleError `BAD_ORDER` when an order is malformed (see `validateOrder`), is for another round, or
 *   repeats an id (with `validated: true`, only the round and the numeric fields are re-checked);
 *   `INVALID_ARGUMENT` for a bad round, order list or option
 * @example
 * ```ts
 * const record = clearRound(7n, orders, { feeBps: 30n })
 * for (const { participant, amount } of record.credits) pay(participant, amount)
 * ```
 */
export function clearRound(round: bigint, orders: readonly Order[], options: ClearOptions = {}): ClearingRecord {
  const feeBps = options.feeBps ?? CLEAR_DEFAULTS.feeBps;
  const validated = options.validated ?? CLEAR_DEFAULTS.validated;
  if (typeof round !== 'bigint' || round < 0n || round > MAX_UINT64) invalid('round is not a uint64', { round });
  if (!Array.isArray(orders as unknown)) invalid('orders is not an array', {});
  if (typeof feeBps !== 'bigint' || feeBps < 0n || feeBps > BPS) invalid('feeBps is not in [0, 10000]', { feeBps });
  if (typeof validated !== 'boolean') invalid('validated is not a boolean', { validated });
  const given = options.ordersDigest;
  if (given !== undefined && (typeof given !== 'string' || !BYTES32.test(given))) {
    invalid('ordersDigest is not lowercase 32-byte hex', { ordersDigest: given });
  }

  // One sequential pass over the orders: validate, index by participant and market, sum escrow, fill the columns.
  const n = orders.length;
  const ledger: Ledger = { addresses: [], index: new Map(), escrow: [], nets: [] };
  const owner = new Int32Array(n);
  const quantities = new Float64Array(n);
  const prices = new Float64Array(n);
  const arrivals = new Float64Array(n);
  let exact = true;
  let inTimeOrder = true;
  const books = new Map<string, Book>();
  const ids = new Set<string>();
  const checksums = new Map<string, boolean>();
  for (let k = 0; k < n; k++) {
    const order = orders[k]!;
    // Fast path on doubles: Number() rounds monotonically, so 1 ≤ Number(x) ≤ 2^53 − 1 proves the same of x, and
    // then Number(x) is x. Anything else gets checkOrder's exact verdict (and the bigint paths below).
    let q = NaN;
    let pr = NaN;
    let a = NaN;
    if (typeof order === 'object' && order !== null) {
      const { quantity, price, arrival } = order;
      if (typeof quantity === 'bigint' && typeof price === 'bigint' && typeof arrival === 'bigint') {
        q = Number(quantity);
        pr = Number(price);
        a = Number(arrival);
      }
    }
    if (
      !(q >= 1 && q <= SAFE && pr >= 1 && pr <= SAFE && a >= 0 && a <= SAFE) ||
      (!validated && (typeof order.id !== 'string' || !ID_PATTERN.test(order.id))) ||
      (order.side !== 'bid' && order.side !== 'ask')
    ) {
      checkOrder(order, checksums);
      exact = false;
    }
    if (order.round !== round) {
      checkOrder(order, checksums);
      throw new TrickleError('BAD_ORDER', 'order is for another round', {
        details: { field: 'round', id: order.id, expected: round, actual: order.round },
      });
    }
    let p = ledger.index.get(order.participant);
    let book = books.get(order.market);
    if (p === undefined || book === undefined) {
      // First order of this participant or market: the full check, including the address checksum and market name.
      if (!validated) checkOrder(order, checksums);
      if (p === undefined) {
        p = ledger.addresses.length;
        ledger.addresses.push(order.participant);
        ledger.index.set(order.participant, p);
        ledger.escrow.push(0n);
        ledger.nets.push(0n);
      }
      if (book === undefined) {
        book = { bids: [], asks: [], bidUnits: 0, askUnits: 0 };
        books.set(order.market, book);
      }
    }
    if (!validated) {
      if (ids.has(order.id)) {
        throw new TrickleError('BAD_ORDER', 'duplicate order id', { details: { field: 'id', id: order.id } });
      }
      ids.add(order.id);
    }
    owner[k] = p;
    quantities[k] = q;
    prices[k] = pr;
    arrivals[k] = a;
    if (order.side === 'bid') {
      book.bids.push(k);
      book.bidUnits += q;
      const escrow: bigint = order.quantity * order.price;
      ledger.escrow[p] = ledger.escrow[p]! + escrow;
    } else {
      book.asks.push(k);
      book.askUnits += q;
    }
    if (inTimeOrder && k > 0) {
      const before = arrivals[k - 1]!;
      if (!exact || a < before || (a === before && orders[k - 1]!.id > order.id)) inTimeOrder = false;
    }
  }
  const columns: Columns = { orders, owner, quantity: quantities, price: prices, exact };
  const byTime = exact
    ? (x: number, y: number): number => arrivals[x]! - arrivals[y]! || compareCodeUnits(orders[x]!.id, orders[y]!.id)
    : (x: number, y: number): number => compareArrival(orders[x]!, orders[y]!);

  const markets: MarketClearing[] = [];
  let fee = 0n;
  for (const market of [...books.keys()].sort(compareCodeUnits)) {
    const book = books.get(market)!;
    if (!inTimeOrder) {
      book.bids.sort(byTime);
      book.asks.sort(byTime);
    }
    const cleared = clearMarket(market, book, columns, ledger.nets, feeBps);
    markets.push(cleared.clearing);
    fee += cleared.fee;
  }

  const byAddress = ledger.addresses.map((address, p) => ({ key: address.toLowerCase(), p }));
  byAddress.sort((a, b) => compareCodeUnits(a.key, b.key));
  const nets: Net[] = [];
  const credits: Credit[] = [];
  for (const { p } of byAddress) {
    const participant = ledger.addresses[p] as Address;
    const net = ledger.nets[p]!;
    nets.push({ participant, net });
    credits.push({ participant, amount: ledger.escrow[p]! + net });
  }

  return { round, ordersDigest: given ?? digestOrders(orders), markets, nets, credits, fee };
}

/** Order strings by UTF-16 code units, independent of locale. */
function compareCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Rank one side of a book, given in time priority: by price (descending for bids, ascending for asks), keeping
 * time priority within a price. When prices are exact doubles and the side's price span times its size fits 53
 * bits (the usual case), the key priceRank × 2^⌈log₂ n⌉ + timeRank is an exact double and a native numeric sort
 * does the work; otherwise a stable comparator sort on the bigint prices.
 */
function rankSide(side: number[], columns: Columns, descending: boolean): Ranked {
  const n = side.length;
  if (n < 2) return side;
  const prices = columns.price;
  let min = Infinity;
  let max = -Infinity;
  for (let k = 0; k < n; k++) {
    const price = prices[side[k]!]!;
    if (price < min) min = price;
    if (price > max) max = price;
  }
  let slots = 1;
  while (slots < n) slots *= 2;
  if (!columns.exact || (max - min) * slots + slots > Number.MAX_SAFE_INTEGER) {
    const orders = columns.orders;
    return side.slice().sort((a, b) => {
      const pa = orders[a]!.price;
      const pb = orders[b]!.price;
      return pa === pb ? 0 : pa > pb === descending ? -1 : 1;
    });
  }
  const keys = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const price = prices[side[k]!]!;
    keys[k] = (descending ? max - price : price - min) * slots + k;
  }
  keys.sort();
  const ranked = new Int32Array(n);
  for (let k = 0; k < n; k++) ranked[k] = side[keys[k]! % slots]!;
  return ranked;
}

/** Order indices of one side in price-time priority. */
type Ranked = ArrayLike<number>;

/** Where the walk down the two ranked sides stopped. */
interface Walk {
  /** Bids [0, i) and asks [0, j) are filled completely. */
  readonly i: number;
  readonly j: number;
  /** What bid i and ask j (when they exist) have left; less than their quantity means a partial fill. */
  readonly restBid: bigint;
  readonly restAsk: bigint;
  readonly volume: bigint;
}

/** Units trade while the current bid's limit is ≥ the current ask's. Doubles; exact by the caller's check. */
function walkExact(bids: Ranked, asks: Ranked, columns: Columns): Walk {
  const { quantity, price } = columns;
  const nb = bids.length;
  const na = asks.length;
  let i = 0;
  let j = 0;
  let restBid = nb > 0 ? quantity[bids[0]!]! : 0;
  let restAsk = na > 0 ? quantity[asks[0]!]! : 0;
  let volume = 0;
  while (i < nb && j < na && price[bids[i]!]! >= price[asks[j]!]!) {
    const units = restBid < restAsk ? restBid : restAsk;
    volume += units;
    restBid -= units;
    restAsk -= units;
    if (restBid === 0 && ++i < nb) restBid = quantity[bids[i]!]!;
    if (restAsk === 0 && ++j < na) restAsk = quantity[asks[j]!]!;
  }
  return { i, j, restBid: BigInt(restBid), restAsk: BigInt(restAsk), volume: BigInt(volume) };
}

/** {@link walkExact} on the bigint fields, for quantities or prices beyond 2^53. */
function walkBig(bids: Ranked, asks: Ranked, orders: readonly Order[]): Walk {
  const nb = bids.length;
  const na = asks.length;
  const bid = (k: number): Order => orders[bids[k]!]!;
  const ask = (k: number): Order => orders[asks[k]!]!;
  let i = 0;
  let j = 0;
  let restBid = nb > 0 ? bid(0).quantity : 0n;
  let restAsk = na > 0 ? ask(0).quantity : 0n;
  let volume = 0n;
  while (i < nb && j < na && bid(i).price >= ask(j).price) {
    const units = restBid < restAsk ? restBid : restAsk;
    volume += units;
    restBid -= units;
    restAsk -= units;
    if (restBid === 0n && ++i < nb) restBid = bid(i).quantity;
    if (restAsk === 0n && ++j < na) restAsk = ask(j).quantity;
  }
  return { i, j, restBid, restAsk, volume };
}

/** Rank, match and price one market, and book its fills into `nets`. */
function clearMarket(
  market: string,
  book: Book,
  columns: Columns,
  nets: bigint[],
  feeBps: bigint,
): { clearing: MarketClearing; fee: bigint } {
  const { orders, owner } = columns;
  const bids = rankSide(book.bids, columns, true);
  const asks = rankSide(book.asks, columns, false);
  const nb = bids.length;
  const na = asks.length;
  const bid = (k: number): Order => orders[bids[k]!]!;
  const ask = (k: number): Order => orders[asks[k]!]!;

  const fast = columns.exact && book.bidUnits <= Number.MAX_SAFE_INTEGER && book.askUnits <= Number.MAX_SAFE_INTEGER;
  const { i, j, restBid, restAsk, volume } = fast ? walkExact(bids, asks, columns) : walkBig(bids, asks, orders);
  if (volume === 0n) return { clearing: { market, price: null, volume, fills: [] }, fee: 0n };

  const filledBids = i < nb && restBid < bid(i).quantity ? i + 1 : i;
  const filledAsks = j < na && restAsk < ask(j).quantity ? j + 1 : j;
  // L = max(last accepted ask, first rejected bid), H = min(last accepted bid, first rejected ask);
  // price ⌊(L + H) / 2⌋.
  let low = ask(filledAsks - 1).price;
  let high = bid(filledBids - 1).price;
  if (i < nb && bid(i).price > low) low = bid(i).price;
  if (j < na && ask(j).price < high) high = ask(j).price;
  const price = (low + high) / 2n;

  const fills = new Array<Fill>(filledBids + filledAsks);
  // When the market's traded value fits 53 bits, each amount is an exact double: one BigInt() instead of a bigint
  // multiplication on a quantity read back from the heap.
  const unitPrice = Number(price);
  const small = fast && Number(volume) * unitPrice <= SAFE;
  const quantities = columns.quantity;
  for (let k = 0; k < filledBids; k++) {
    const at = bids[k]!;
    const order = orders[at]!;
    const whole = k < i;
    const quantity = whole ? order.quantity : order.quantity - restBid;
    const amount = small ? BigInt((whole ? quantities[at]! : Number(quantity)) * unitPrice) : quantity * price;
    fills[k] = { orderId: order.id, participant: order.participant, side: 'bid', quantity, amount };
    const p = owner[at]!;
    nets[p] = nets[p]! - amount;
  }
  let fee = 0n;
  for (let k = 0; k < filledAsks; k++) {
    const at = asks[k]!;
    const order = orders[at]!;
    const whole = k < j;
    const quantity = whole ? order.quantity : order.quantity - restAsk;
    const amount = small ? BigInt((whole ? quantities[at]! : Number(quantity)) * unitPrice) : quantity * price;
    const cut = feeBps === 0n ? 0n : (amount * feeBps) / BPS;
    fills[filledBids + k] = { orderId: order.id, participant: order.participant, side: 'ask', quantity, amount };
    const p = owner[at]!;
    nets[p] = nets[p]! + amount - cut;
    fee += cut;
  }
  return { clearing: { market, price, volume, fills }, fee };
}
