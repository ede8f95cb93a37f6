import type { Order } from './order.js';

/**
 * Time priority: earlier `arrival` first, then lower `id` (ids are lowercase hex of one length, so string order is
 * numeric order). A total order on the orders of a round, since ids are unique within it.
 * @internal
 */
export function compareArrival(a: Order, b: Order): number {
  if (a.arrival !== b.arrival) return a.arrival < b.arrival ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
