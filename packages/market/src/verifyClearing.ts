import { TrickleError } from '@trickle/protocol/errors';
import { MAX_UINT64 } from '@trickle/protocol/types';
import { clearRound } from './clearRound.js';
import type { ClearOptions } from './clearRound.js';
import type { Order } from './order.js';
import type { ClearingRecord } from './record.js';

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
  const expected = clearRound(round, orders, { feeBps: options.feeBps });
  compare(expected, record, 'record');
}
