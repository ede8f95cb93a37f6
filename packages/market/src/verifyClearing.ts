import { TrickleError } from '@trickle/protocol/errors';
import { MAX_UINT64 } from '@trickle/protocol/types';
import type { Address } from '@trickle/protocol/types';
import type { ClearOptions } from './clearRound.js';
import { digestOrders } from './digestOrders.js';
import { checkOrder, type Order } from './order.js';
import { compareArrival } from './priority.js';
import type { ClearingRecord, Fill, MarketClearing } from './record.js';

/** Options of {@link verifyClearing}: what the verifier knows independently of the record. */
export interface VerifyOptions {
  /** The fee the verifier agreed to, not one the record claims. Default 0n. */
  readonly feeBps?: ClearOptions['feeBps'];
  /** The round the verifier expects; without it only the orders' own round binds `record.round`. */
  readonly round?: bigint | undefined;
}

function describe(v: unknown): unknown {
  if (Array.isArray(v)) return `array(${v.length})`;
  if (typeof v === 'object' && v !== null) return 'object';
  return v;
}

function mismatch(path: string, expected: unknown, actual: unknown): never {
  throw new TrickleError('BAD_CLEARING', `clearing record differs at ${path}`, {
    details: { path, expected: describe(expected), actual: describe(actual) },
  });
}

/** Compare `actual` with `expected` field by field (no extra fields allowed); throws at the first difference. */
function compare(expected: unknown, actual: unknown, path: string): void {
  if (Array.isArray(expected)) {
    if (!Array.isArray(actual) || actual.length !== expected.length) mismatch(path, expected, actual);
    for (let k = 0; k < expected.length; k++) compare(expected[k], actual[k], `${path}[${k}]`);
    return;
  }
  if (typeof expected === 'object' && expected !== null) {
    if (typeof actual !== 'object' || actual === null || Array.isArray(actual)) mismatch(path, expected, actual);
    const e = expected as Record<string, unknown>;
    const a = actual as Record<string, unknown>;
    // Own keys only: `in` would let an extra field named after an Object.prototype member (toString) through.
    for (const key of Object.keys(a)) if (!Object.hasOwn(e, key)) mismatch(`${path}.${key}`, undefined, a[key]);
    for (const key of Object.keys(e)) compare(e[key], a[key], `${path}.${key}`);
    return;
  }
  if (expected !== actual) mismatch(path, expected, actual);
}

/**
 * Recompute a round's clearing from its orders and check that a record matches it exactly: round, orders digest
 * (always recomputed, whatever the hub used), every market, price, volume and fill, every net and credit, and the
 * fee. A device calls this before countersigning its round update; it should then also check that each of its
 * own orders is in `orders` as it signed it, and that its credit is what the hub pays.
 *
 * @param record - the record the hub sent
 * @param orders - the round's orders the hub published
 * @param options - {@link VerifyOptions}: the agreed `feeBps` (default 0n) and, optionally, the expected `round`
 * @returns nothing when the record is the honest clearing of `orders`
 * @throws TrickleError `BAD_CLEARING` on any difference, with `details.path` (e.g. `record.markets[0].price`),
 *   `details.expected` and `details.actual`; `BAD_ORDER` when an order is malformed, for another round or repeats
 *   an id; `INVALID_ARGUMENT` for a bad option
 * @example
 * ```ts
 * // throws TrickleError { code: 'BAD_CLEARING' } if the record is not the clearing of these orders
 * verifyClearing(record, orders, { feeBps: 30n, round: 7n })
 * ```
 */
export function verifyClearing(record: ClearingRecord, orders: readonly Order[], options: VerifyOptions = {}): void {
  if (typeof record !== 'object' || record === null) mismatch('record', 'object', record);
  const round: unknown = record.round;
  if (typeof round !== 'bigint' || round < 0n || round > MAX_UINT64) mismatch('record.round', 'uint64', round);
  if (options.round !== undefined && options.round !== round) mismatch('record.round', options.round, round);
  // A record for another round than its orders is a bad record, not a bad order.
  const first: unknown = Array.isArray(orders as unknown) ? orders[0] : undefined;
  if (typeof first === 'object' && first !== null) {
    const ordersRound = (first as { round?: unknown }).round;
    if (typeof ordersRound === 'bigint' && ordersRound !== round) mismatch('record.round', ordersRound, round);
  }
  const expected = clearExact(round, orders, options.feeBps ?? 0n);
  compare(expected, record, 'record');
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/**
 * `clearRound` of a round's orders (every order checked, the fee `feeBps`), computed the plain way: one comparator
 * sort per side of each market and a walk on the bigint fields, by the rules `clearRound` documents (ranking, walk,
 * price rule, fills, fee, nets and credits) — without its fast paths on doubles, which a verifier needs not pay for
 * in code. The same record as `clearRound`, field for field, and the same refusals (clearRound.property.test).
 */
function clearExact(round: bigint, orders: readonly Order[], feeBps: bigint): ClearingRecord {
  if (!Array.isArray(orders as unknown))
    throw new TrickleError('INVALID_ARGUMENT', 'orders is not an array', { details: {} });
  if (typeof feeBps !== 'bigint' || feeBps < 0n || feeBps > 10_000n)
    throw new TrickleError('INVALID_ARGUMENT', 'feeBps is not in [0, 10000]', { details: { feeBps } });
  const checksums = new Map<string, boolean>();
  const ids = new Set<string>();
  const books = new Map<string, Order[]>();
  /** Per participant, in the order first seen: [escrow, net]. */
  const ledger = new Map<Address, [bigint, bigint]>();
  for (const order of orders) {
    checkOrder(order, checksums);
    if (order.round !== round)
      throw new TrickleError('BAD_ORDER', 'order is for another round', {
        details: { field: 'round', id: order.id, expected: round, actual: order.round },
      });
    if (ids.has(order.id))
      throw new TrickleError('BAD_ORDER', 'duplicate order id', { details: { field: 'id', id: order.id } });
    ids.add(order.id);
    let book = books.get(order.market);
    if (!book) books.set(order.market, (book = []));
    book.push(order);
    const e = ledger.get(order.participant) ?? [0n, 0n];
    ledger.set(order.participant, [e[0] + (order.side === 'bid' ? order.quantity * order.price : 0n), 0n]);
  }
  const markets: MarketClearing[] = [];
  let fee = 0n;
  for (const market of [...books.keys()].sort(cmp)) {
    // Price priority (bids descending, asks ascending), then time priority: earlier arrival, then lower id.
    const side = (s: string, down: boolean): Order[] =>
      books
        .get(market)!
        .filter((o) => o.side === s)
        .sort((a, b) => (a.price === b.price ? compareArrival(a, b) : a.price > b.price === down ? -1 : 1));
    const bids = side('bid', true);
    const asks = side('ask', false);
    let i = 0;
    let j = 0;
    let restBid = bids[0]?.quantity ?? 0n;
    let restAsk = asks[0]?.quantity ?? 0n;
    let volume = 0n;
    while (i < bids.length && j < asks.length && bids[i]!.price >= asks[j]!.price) {
      const units = restBid < restAsk ? restBid : restAsk;
      volume += units;
      restBid -= units;
      restAsk -= units;
      if (restBid === 0n && ++i < bids.length) restBid = bids[i]!.quantity;
      if (restAsk === 0n && ++j < asks.length) restAsk = asks[j]!.quantity;
    }
    if (volume === 0n) {
      markets.push({ market, price: null, volume, fills: [] });
      continue;
    }
    const nb = i < bids.length && restBid < bids[i]!.quantity ? i + 1 : i;
    const na = j < asks.length && restAsk < asks[j]!.quantity ? j + 1 : j;
    // L = max(last accepted ask, first rejected bid), H = min(last accepted bid, first rejected ask); ⌊(L + H) / 2⌋.
    let low = asks[na - 1]!.price;
    let high = bids[nb - 1]!.price;
    if (i < bids.length && bids[i]!.price > low) low = bids[i]!.price;
    if (j < asks.length && asks[j]!.price < high) high = asks[j]!.price;
    const price = (low + high) / 2n;
    const fills: Fill[] = [];
    const fill = (ranked: Order[], n: number, whole: number, rest: bigint): void => {
      for (let k = 0; k < n; k++) {
        const o = ranked[k]!;
        const quantity = k < whole ? o.quantity : o.quantity - rest;
        const amount = quantity * price;
        const cut = o.side === 'ask' ? (amount * feeBps) / 10_000n : 0n;
        fills.push({ orderId: o.id, participant: o.participant, side: o.side, quantity, amount });
        const e = ledger.get(o.participant)!;
        e[1] += o.side === 'ask' ? amount - cut : -amount;
        fee += cut;
      }
    };
    fill(bids, nb, i, restBid);
    fill(asks, na, j, restAsk);
    markets.push({ market, price, volume, fills });
  }
  const people = [...ledger.keys()].sort((a, b) => cmp(a.toLowerCase(), b.toLowerCase()));
  return {
    round,
    ordersDigest: digestOrders(orders),
    markets,
    nets: people.map((participant) => ({ participant, net: ledger.get(participant)![1] })),
    credits: people.map((participant) => ({ participant, amount: ledger.get(participant)!.reduce((x, y) => x + y) })),
    fee,
  };
}
