import { TrickleError } from '@trickle/protocol/errors';
import type { RouteInstruction, WireLock } from '@trickle/protocol/codec';
import type { Lock } from '@trickle/protocol/locks';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import type { ChannelTableDeps, EscrowRecord } from './channels.js';
import type { RouteRecord, StoreWrite } from './store/types.js';

/** What the channel table asks of the router. */
export interface RouteLink {
  check(from: Address, token: Address, route: RouteInstruction, extra: bigint, lock?: WireLock): void | Promise<void>;
  routeChecked(paymentIds: readonly Bytes32[]): void;
  routeWrites(route: RouteRecord): readonly StoreWrite[];
  forward(route: RouteRecord): void;
  onPreimage(channelId: ChannelId, hash: Bytes32, preimage: Bytes32): void;
  onLockSettled(channelId: ChannelId, lock: Lock, outcome: 'claimed' | 'refunded'): void;
}

/** What the channel table asks of the market. */
export interface MarketLink {
  onEscrow(escrow: EscrowRecord): void;
  checkEscrow(orderId: Bytes32, token: Address, device: Address): void | Promise<void>;
  releaseEscrow(orderId: Bytes32): void;
  owes(channelId: ChannelId, device: Address): boolean;
}

/** The channel table's hooks toward the parts built on top of it (each one given: the table's defaults do nothing). */
export type ChannelLinkHooks = Required<
  Pick<
    ChannelTableDeps,
    | 'onRouted'
    | 'checkRoute'
    | 'routeChecked'
    | 'routeWrites'
    | 'onPreimage'
    | 'onLockSettled'
    | 'onEscrow'
    | 'checkEscrow'
    | 'releaseEscrow'
    | 'owesCredit'
  >
>;

/**
 * The channel table and the parts built on it (the router, the market) depend on each other: the table tells the
 * router about durable routed payments, the router credits payees through the table. `createHub` builds the table
 * first with these links' hooks, then each part and attaches it here, in construction order — nothing is referred
 * to before it exists. Until a part is attached (only while `createHub` runs, before any device can connect), the
 * hooks behave as if the hub had no such part: routes are refused with `NO_ROUTE`, escrows with `MARKET_DISABLED`, no
 * market is owed a credit.
 */
export class ChannelLinks {
  #router: RouteLink | undefined;
  #market: MarketLink | undefined;

  /** Attach the router (once). @throws TrickleError('INVALID_ARGUMENT') when one is attached already */
  attachRouter(router: RouteLink): void {
    if (this.#router) throw new TrickleError('INVALID_ARGUMENT', 'a router is attached already');
    this.#router = router;
  }

  /** Attach the market (once). @throws TrickleError('INVALID_ARGUMENT') when one is attached already */
  attachMarket(market: MarketLink): void {
    if (this.#market) throw new TrickleError('INVALID_ARGUMENT', 'a market is attached already');
    this.#market = market;
  }

  /** The hooks to construct the channel table with. */
  readonly hooks: ChannelLinkHooks = {
    checkRoute: (from, token, route, extra, lock) => {
      if (!this.#router) throw new TrickleError('NO_ROUTE', 'this hub routes no payments yet');
      return this.#router.check(from, token, route, extra, lock);
    },
    routeChecked: (paymentIds) => this.#router?.routeChecked(paymentIds),
    routeWrites: (route) => this.#router?.routeWrites(route) ?? [],
    onRouted: (route) => {
      // checkRoute refused every route before a router was attached, so none can have been made durable.
      if (!this.#router) throw new TrickleError('INTERNAL', 'a routed payment reached a hub without a router');
      this.#router.forward(route);
    },
    onPreimage: (channelId, hash, preimage) => this.#router?.onPreimage(channelId, hash, preimage),
    onLockSettled: (channelId, lock, outcome) => this.#router?.onLockSettled(channelId, lock, outcome),
    onEscrow: (escrow) => this.#market?.onEscrow(escrow),
    checkEscrow: (device, orderId, token) => {
      // No market, no round to refund an escrow in: the payment would be the hub's for good.
      if (!this.#market)
        throw new TrickleError('MARKET_DISABLED', 'this hub runs no market: an escrow paid here would never come back');
      return this.#market.checkEscrow(orderId, token, device);
    },
    releaseEscrow: (orderId) => this.#market?.releaseEscrow(orderId),
    owesCredit: (channelId, device) => this.#market?.owes(channelId, device) ?? false,
  };
}
