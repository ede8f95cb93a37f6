import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import type { Message, RouteInstruction } from '@trickle/protocol/codec';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import type { ChannelTable } from './channels.js';
import type { Committer } from './committer.js';
import type { RouteRecord } from './store/types.js';

/** Dependencies of the router. */
export interface RouterDeps {
  readonly channels: ChannelTable;
  readonly committer: Committer;
  readonly isConnected: (device: Address) => boolean;
  readonly send: (device: Address, msg: Message) => boolean;
  readonly maxRoutedInFlight: bigint;
  readonly onResult: (result: 'delivered' | 'refunded') => void;
  readonly log: (msg: string, fields: Record<string, unknown>) => void;
  readonly debug?: (msg: string, fields: Record<string, unknown>) => void;
}

/**
 * Routed payments. Order of events, so that nobody can lose more than what is in flight:
 * 1. the payer's update (paying the hub `amount`) is made durable with the route marked pending;
 * 2. the hub credits the payee on the payee's channel (hub signs first);
 * 3. when the payee countersigns, the route is delivered and the payer gets a `receipt` (delivered);
 * 4. if the payee refuses or its channel closes, the hub refunds the payer with a credit on the payer's channel
 *    and sends a `receipt` (not delivered). A payee that is unknown or offline is refused up front (`NO_ROUTE`),
 *    before the payer's update is accepted.
 * The hub never forwards money it has not received; the payer's exposure is capped by `maxRoutedInFlight`.
 */
export class Router {
  readonly #deps: RouterDeps;
  /** Undelivered routed amount per paying device. */
  readonly #inFlight = new Map<Address, bigint>();
  readonly #seen = new Set<Bytes32>();

  constructor(deps: RouterDeps) {
    this.#deps = deps;
  }

  /** The payee's open channel in the same token, if any. */
  #payeeChannel(to: Address, token: Address): ChannelId | undefined {
    for (const id of this.#deps.channels.channelsOf(to)) {
      const r = this.#deps.channels.get(id);
      if (r && r.status === 'open' && !r.latest.state.isFinal && r.params.token === token) return id;
    }
    return undefined;
  }

  /** Called before a payer's update is accepted. @throws TrickleError NO_ROUTE / LIMIT_EXCEEDED */
  check(from: Address, token: Address, route: RouteInstruction, extra: bigint): void {
    if (route.to === from) throw new TrickleError('NO_ROUTE', 'cannot route a payment to oneself');
    if (this.#seen.has(route.paymentId)) throw new TrickleError('NO_ROUTE', 'payment id already used');
    if (!this.#payeeChannel(route.to, token) || !this.#deps.isConnected(route.to)) {
      throw new TrickleError('NO_ROUTE', 'payee has no open channel in this token or is offline', { details: { to: route.to } });
    }
    const pending = (this.#inFlight.get(from) ?? 0n) + extra + route.amount;
    if (pending > this.#deps.maxRoutedInFlight) {
      throw new TrickleError('LIMIT_EXCEEDED', 'routed amount in flight exceeds the per-device limit', { details: { limit: this.#deps.maxRoutedInFlight } });
    }
  }

  /**
   * At startup: finish a route left pending by a crash. A credit that already landed (its marker was written with
   * the state) is not paid again.
   */
  async resume(route: RouteRecord, credited: readonly string[]): Promise<void> {
    const landedOn = (id: ChannelId | undefined) => id !== undefined && credited.includes(id);
    const payeeChannels = this.#deps.channels.channelsOf(route.to);
    const delivered = payeeChannels.find((id) => landedOn(id));
    if (delivered) {
      this.#seen.add(route.paymentId);
      this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
      await this.#finish(route, 'delivered', delivered);
      return;
    }
    if (landedOn(route.fromChannel)) {
      this.#seen.add(route.paymentId);
      this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
      await this.#finish(route, 'refunded');
      return;
    }
    this.forward(route);
  }

  /** Forward a route whose payer update is durable. */
  forward(route: RouteRecord): void {
    this.#deps.debug?.('forward', { paymentId: route.paymentId, from: route.from, to: route.to });
    this.#seen.add(route.paymentId);
    this.#inFlight.set(route.from, (this.#inFlight.get(route.from) ?? 0n) + route.amount);
    const fromRecord = this.#deps.channels.get(route.fromChannel);
    const toChannel = fromRecord ? this.#payeeChannel(route.to, fromRecord.params.token) : undefined;
    const deliver = toChannel
      ? this.#deps.channels.credit(toChannel, route.amount, { paymentId: route.paymentId })
      : Promise.reject(new TrickleError('NO_ROUTE', 'payee channel gone'));
    deliver.then(
      () => this.#finish(route, 'delivered', toChannel),
      (e: unknown) => this.#refund(route, isTrickleError(e) ? e.code : 'INTERNAL'),
    );
  }

  async #refund(route: RouteRecord, reason: string, attempt = 1): Promise<void> {
    if (attempt === 1) this.#deps.log('routed payment not delivered: refunding', { paymentId: route.paymentId, reason });
    try {
      await this.#deps.channels.credit(route.fromChannel, route.amount, { paymentId: route.paymentId });
      await this.#finish(route, 'refunded');
    } catch (e) {
      const code = isTrickleError(e) ? e.code : 'INTERNAL';
      // The refund is owed: retry with backoff while the payer's channel is open (it may be offline or busy).
      // A closed channel cannot take it; the route then stays pending in the store for the operator.
      if (code !== 'CHANNEL_NOT_OPEN' && code !== 'CHANNEL_FINAL' && attempt < 30) {
        setTimeout(() => void this.#refund(route, reason, attempt + 1), Math.min(100 * 2 ** attempt, 5_000));
        return;
      }
      this.#deps.log('refund of a routed payment could not be delivered; left pending', { paymentId: route.paymentId, code });
      this.#release(route);
    }
  }

  async #finish(route: RouteRecord, status: 'delivered' | 'refunded', toChannel?: ChannelId): Promise<void> {
    this.#deps.debug?.('finish', { paymentId: route.paymentId, status });
    await this.#deps.committer.write([{ kind: 'route', route: { ...route, status, toChannel } }]);
    this.#release(route);
    this.#deps.onResult(status);
    this.#deps.send(route.from, { t: 'receipt', id: 0, paymentId: route.paymentId, delivered: status === 'delivered' });
  }

  #release(route: RouteRecord): void {
    const left = (this.#inFlight.get(route.from) ?? 0n) - route.amount;
    if (left > 0n) this.#inFlight.set(route.from, left);
    else this.#inFlight.delete(route.from);
  }
}
