import { TrickleError } from '@trickle/protocol/errors';
import { toAddress } from '@trickle/protocol/hex';
import { MAX_UINT256, MAX_UINT64 } from '@trickle/protocol/types';
import type { Address, Bytes32 } from '@trickle/protocol/types';

/** Which side of a market an order is on: a bid buys, an ask sells. Signed as `uint8` 0 (bid) / 1 (ask). */
export type Side = 'bid' | 'ask';

/**
 * A limit order for one periodic double-auction round.
 *
 * Every field but `arrival` is signed by the participant (see `hashOrder`); `arrival` is the sequence number the
 * hub assigns on receipt and only breaks ties between equal prices.
 */
export interface Order {
  /** Participant-chosen identifier, unique within a round; lowercase 32-byte hex. */
  readonly id: Bytes32;
  /** The participant's EIP-55 checksummed address; the address of its channel with the hub. */
  readonly participant: Address;
  /** Market name: 1–64 characters of `[a-z0-9._-]`. */
  readonly market: string;
  readonly side: Side;
  /** Units of the good, > 0. */
  readonly quantity: bigint;
  /** Limit price per unit in token base units, > 0: the most a bid pays, the least an ask accepts. */
  readonly price: bigint;
  /** The round the order is for (uint64). */
  readonly round: bigint;
  /** Sequence number assigned by the hub on receipt (uint64); earlier arrival wins a price tie. */
  readonly arrival: bigint;
}

/** Pattern a market name must match. */
export const MARKET_NAME_PATTERN: RegExp = /^[a-z0-9._-]{1,64}$/;

const ID_PATTERN = /^0x[0-9a-f]{64}$/;
/**
 * The largest value (quantity × price) of one order, 2^128 − 1. The clearing record the hub signs holds each
 * participant's net as an int256 and its credit as a uint256, sums over all of its orders in the round: with each
 * order's value below 2^128 and fewer than 2^64 orders (arrival is a uint64), every sum fits, so every round of
 * valid orders can be signed and paid. An order of uint256 value could make a record no hub can sign.
 */
const MAX_ORDER_VALUE = (1n << 128n) - 1n;
const ADDRESS_SHAPE = /^0x[0-9a-fA-F]{40}$/;

function bad(field: string, reason: string, order: unknown): never {
  const id = typeof order === 'object' && order !== null ? (order as { id?: unknown }).id : undefined;
  throw new TrickleError('BAD_ORDER', `order ${field}: ${reason}`, {
    details: { field, reason, ...(typeof id === 'string' ? { id } : {}) },
  });
}

function checkUint(order: Record<string, unknown>, field: string, min: bigint, max: bigint): bigint {
  const v = order[field];
  if (typeof v !== 'bigint') bad(field, 'not a bigint', order);
  if (v < min || v > max) bad(field, `out of range [${min}, ${max}]`, order);
  return v;
}

/**
 * The checks behind {@link validateOrder}. `checksums` caches the EIP-55 verdict per address string so that
 * clearing a large round pays one keccak per participant rather than per order.
 * @internal
 */
export function checkOrder(order: unknown, checksums?: Map<string, boolean>): asserts order is Order {
  if (typeof order !== 'object' || order === null) bad('order', 'not an object', order);
  const o = order as Record<string, unknown>;
  if (typeof o.id !== 'string' || !ID_PATTERN.test(o.id)) bad('id', 'not lowercase 32-byte hex', order);
  const p = o.participant;
  if (typeof p !== 'string' || !ADDRESS_SHAPE.test(p)) bad('participant', 'not a 20-byte hex address', order);
  let checksummed = checksums?.get(p);
  if (checksummed === undefined) {
    try {
      checksummed = toAddress(p) === p;
    } catch {
      checksummed = false;
    }
    checksums?.set(p, checksummed);
  }
  if (!checksummed) bad('participant', 'not EIP-55 checksummed', order);
  if (typeof o.market !== 'string' || !MARKET_NAME_PATTERN.test(o.market)) {
    bad('market', 'not 1-64 characters of [a-z0-9._-]', order);
  }
  if (o.side !== 'bid' && o.side !== 'ask') bad('side', "not 'bid' or 'ask'", order);
  const quantity = checkUint(o, 'quantity', 1n, MAX_UINT256);
  const price = checkUint(o, 'price', 1n, MAX_UINT256);
  checkUint(o, 'round', 0n, MAX_UINT64);
  checkUint(o, 'arrival', 0n, MAX_UINT64);
  // The whole order value, a bid's escrow or an ask's proceeds, summed with the participant's other orders of the
  // round, must fit the record's int256 net and uint256 credit (see MAX_ORDER_VALUE).
  if (quantity * price > MAX_ORDER_VALUE) bad('quantity', 'quantity × price exceeds 2^128 − 1', order);
}

/**
 * Check that a value is a well-formed {@link Order}.
 *
 * @param order - the value to check, typically decoded from the wire
 * @returns nothing; narrows `order` to {@link Order}
 * @throws TrickleError `BAD_ORDER` with `details.field` naming the first offending field: id not lowercase
 *   32-byte hex, participant not an EIP-55 address, bad market name, side not `'bid'`/`'ask'`, quantity or price
 *   not a bigint in [1, 2^256), round or arrival not a uint64, or quantity × price above 2^128 − 1 (so that the
 *   sums of a round's record always fit its int256 nets and uint256 credits)
 * @example
 * ```ts
 * validateOrder(order) // throws TrickleError { code: 'BAD_ORDER' } when malformed
 * ```
 */
export function validateOrder(order: unknown): asserts order is Order {
  checkOrder(order);
}

/**
 * The amount a participant pays the hub up front when placing an order: the worst case quantity × limit price
 * for a bid, nothing for an ask (a seller is paid after the round clears).
 *
 * @param order - a valid order
 * @returns escrow in token base units
 * @example
 * ```ts
 * escrowFor({ ...order, side: 'bid', quantity: 3n, price: 10n }) // 30n
 * ```
 */
export function escrowFor(order: Order): bigint {
  return order.side === 'bid' ? order.quantity * order.price : 0n;
}
