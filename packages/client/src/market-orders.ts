// The device's market orders and escrows not settled yet, and where a store keeps them: no I/O here (the file store's
// copy is in market-orders-file.ts).
import { TrickleError } from '@trickle/protocol/errors';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import type { Bytes32 } from '@trickle/protocol/types';

/**
 * An order the device placed, or the escrow it paid for a bid, kept until the round that settles it has been checked
 * (see `MarketSession`): after a restart the device still checks that the hub's clearing holds the order and pays the
 * escrow back.
 */
export interface DeviceMarketOrder {
  readonly id: Bytes32;
  /** The round the order is for. */
  readonly round: bigint;
  readonly market: string;
  readonly side: 'bid' | 'ask';
  readonly quantity: bigint;
  readonly price: bigint;
  /** The fee the hub announced when the order was placed: the most this device agreed to. */
  readonly feeBps: bigint;
  /** What this device paid the hub under the order's id (a bid's worst case), 0 for an ask. */
  readonly escrow: bigint;
  /**
   * The last round whose clearing can settle it: the order's round once the hub accepted it; for an escrow whose order
   * was refused or not answered, the round after both the order's and the one open when the escrow was paid.
   */
  readonly settleBy: bigint;
  /** The arrival the hub answered (`accepted`); absent while not accepted. */
  readonly arrival?: bigint | undefined;
  /** The hub refused the order: its escrow comes back whole, as a refund. */
  readonly refused?: boolean | undefined;
}

/**
 * Where a device keeps its {@link DeviceMarketOrder}s (`ChannelStore.market`). A store without it keeps them in memory
 * only: after a restart the device can no longer tell that the hub left one out.
 */
export interface MarketOrderStore {
  /**
   * The orders as last saved; none when nothing was saved.
   * @throws TrickleError STORE_FAILURE when they cannot be read, MALFORMED when what is stored is not such a list
   */
  loadOrders(): Promise<DeviceMarketOrder[]>;
  /** Replace the saved orders with `orders`; resolves when durable. @throws TrickleError STORE_FAILURE */
  saveOrders(orders: readonly DeviceMarketOrder[]): Promise<void>;
}

/** Serialise a device's market orders as the stores write them (JSON, bigints as decimal strings). */
export function encodeMarketOrders(orders: readonly DeviceMarketOrder[]): string {
  return `${stringifyJson({ orders }, 2)}\n`;
}

const UINT = /^\d+$/;

/** Parse what {@link encodeMarketOrders} wrote. @throws TrickleError('MALFORMED') */
export function decodeMarketOrders(text: string): DeviceMarketOrder[] {
  try {
    const { orders } = parseJson<{ orders: Record<string, unknown>[] }>(text);
    if (!Array.isArray(orders)) throw new Error('not a list of orders');
    return orders.map((o) => {
      // `escrow` and `settleBy` are not among the JSON reader's bigint field names.
      const { escrow, settleBy } = o;
      if (
        typeof o.id !== 'string' ||
        typeof o.round !== 'bigint' ||
        typeof o.quantity !== 'bigint' ||
        typeof o.price !== 'bigint' ||
        typeof o.feeBps !== 'bigint' ||
        typeof escrow !== 'string' ||
        !UINT.test(escrow) ||
        typeof settleBy !== 'string' ||
        !UINT.test(settleBy)
      )
        throw new Error('not a market order');
      return { ...o, escrow: BigInt(escrow), settleBy: BigInt(settleBy) } as DeviceMarketOrder;
    });
  } catch (cause) {
    throw new TrickleError('MALFORMED', 'not a Trickle market orders record', { cause });
  }
}

/** Market orders kept in memory (the memory channel store's): nothing survives the process. */
export function memoryMarketOrders(): MarketOrderStore {
  let text: string | undefined;
  return {
    async loadOrders() {
      return text === undefined ? [] : decodeMarketOrders(text);
    },
    async saveOrders(orders) {
      text = encodeMarketOrders(orders);
    },
  };
}
