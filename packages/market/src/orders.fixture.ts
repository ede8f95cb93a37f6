// Test-only helpers (excluded from the build): checksummed addresses, ids and orders with defaults.
import { toAddress, toHex, uintWord } from '@trickle/protocol/hex';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { Order } from './order.js';

/** A deterministic EIP-55 address for a small number. */
export function addr(n: number): Address {
  return toAddress(`0x${(0xa11ce000 + n).toString(16).padStart(40, '0')}`);
}

/** A 32-byte id for a small number. */
export function oid(n: number | bigint): Bytes32 {
  return toHex(uintWord(BigInt(n))) as string as Bytes32;
}

let next = 1;

/** An order with defaults: round 1, market 'cpu', a fresh id and arrival. */
export function order(fields: Partial<Order> & Pick<Order, 'side' | 'quantity' | 'price'>): Order {
  const n = next++;
  return { id: oid(n), participant: addr(0), market: 'cpu', round: 1n, arrival: BigInt(n), ...fields };
}
