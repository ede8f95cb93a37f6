import { concatBytes, fromHex, keccak256, toHex, uintWord } from '@trickle/protocol/hex';
import type { Bytes32 } from '@trickle/protocol/types';
import { hashOrderStruct } from './hashOrder.js';
import type { Order } from './order.js';
import { compareArrival } from './priority.js';

/** The orders digest of a round with no orders: 32 zero bytes. */
export const EMPTY_ORDERS_DIGEST = `0x${'00'.repeat(32)}` as Bytes32;

/**
 * Extend an orders digest by one order. The digest of a round is a hash chain over its orders in time priority
 * (ascending `arrival`, then `id`):
 *
 *     d₀ = 0x00…00 (32 bytes)
 *     dᵢ = keccak256(dᵢ₋₁ ‖ hashOrderStruct(orderᵢ) ‖ uint256(orderᵢ.arrival))
 *
 * so it commits to every signed term of every order and to the hub's sequencing. A chain rather than one hash
 * of the sorted list lets the hub fold each order in on receipt (it assigns increasing arrivals, so receipt order
 * is chain order) instead of hashing the whole book at round end, which would dominate the clearing time.
 *
 * @param digest - the digest so far ({@link EMPTY_ORDERS_DIGEST} for none)
 * @param order - the next order in time priority (validated)
 * @param marketHashes - optional cache of keccak(market) per market name
 * @returns the extended digest
 * @throws MalformedError when `digest` or `order.id` is not 32-byte hex
 * @example
 * ```ts
 * let digest = EMPTY_ORDERS_DIGEST
 * for (const order of received) digest = appendOrderDigest(digest, order)
 * ```
 */
export function appendOrderDigest(digest: Bytes32, order: Order, marketHashes?: Map<string, Uint8Array>): Bytes32 {
  const structHash = hashOrderStruct(order, marketHashes);
  const next = keccak256(concatBytes(fromHex(digest, 32), structHash, uintWord(order.arrival)));
  return toHex(next) as string as Bytes32;
}

/**
 * The orders digest of a set of orders (see {@link appendOrderDigest}), independent of the order they are given in.
 *
 * Cost: about three keccak permutations per order, which is far more than clearing itself; the hub should keep
 * the digest incrementally and pass it to `clearRound`.
 *
 * @param orders - the round's orders (validated, ids unique)
 * @returns the 32-byte digest as lowercase hex
 * @throws MalformedError when an id is not 32-byte hex
 * @example
 * ```ts
 * const record = clearRound(round, orders, { ordersDigest: digestOrders(orders) })
 * ```
 */
export function digestOrders(orders: readonly Order[]): Bytes32 {
  const sorted = orders.slice().sort(compareArrival);
  const marketHashes = new Map<string, Uint8Array>();
  let digest = EMPTY_ORDERS_DIGEST;
  for (const order of sorted) digest = appendOrderDigest(digest, order, marketHashes);
  return digest;
}
