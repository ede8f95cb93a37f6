import {
  type PublishedClearing,
  escrowFor,
  clearingDigestV2,
  hashClearing,
  publishedClearingDigest,
  hashOrder,
  joinClearing,
  validateOrder,
  type HeldClearing,
  verifyClearing,
  type ClearingRecord,
  type Order,
  type Side,
} from '@trickle/market';
import { trickleDomain } from '@trickle/protocol/eip712';
import { randomBytes32 } from '@trickle/protocol/random';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { fromHex } from '@trickle/protocol/hex';
import { parseJson } from '@trickle/protocol/json';
import type { Message } from '@trickle/protocol/codec';
import type { Signer, Verifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId, Domain, State } from '@trickle/protocol/types';
import type { ClientChannel } from './channel.js';
import type { DeviceMarketOrder, MarketOrderStore } from './market-orders.js';
import { notify } from './notify.js';
import { deadline } from './timers.js';

/** An order this device placed. */
export interface PlacedOrder {
  readonly id: Bytes32;
  readonly round: bigint;
  readonly arrival: bigint;
  readonly escrow: bigint;
}

export interface MarketDeps {
  readonly signer: Signer;
  readonly verifier: Verifier;
  readonly hub: () => { hub: Address; chainId: bigint; adjudicator: Address };
  /**
   * The wire version of the hub's connection (`TrickleClient.wireVersion`): below 3 the hub signs a clearing's record
   * only (`clearingDigestV2`), and that is what is verified; its refunds are then checked unsigned. Absent or
   * undefined: the current signature, over the record and its refunds.
   */
  readonly wireVersion?: (() => number | undefined) | undefined;
  readonly request: (build: (id: number) => Message) => Promise<Message>;
  /**
   * Where the session keeps its orders and escrows until their round is settled (`ChannelStore.market`), so that it
   * checks them after a restart too. Without it they are kept in memory only.
   */
  readonly store?: MarketOrderStore | undefined;
}

const KEEP_ROUNDS = 64;
/** Orders whose announced fee is remembered in memory (the latest signed). */
const SIGNED_FEES = 4096;

/**
 * The device side of the market: places signed orders (escrowing a bid's worst case first), receives the hub's
 * clearing records, and — before the channel countersigns a round's credit — recomputes the clearing from the
 * published orders and refuses (`BAD_CLEARING`) any credit that does not match.
 *
 * Every order the hub accepted, and every escrow paid, is kept (in the store's `market` when it has one, written
 * before the order is sent or reported placed) until a round's credit settles it: the order is in its round's record
 * (a bid's escrow then comes back in its credit), or the escrow of an order refused or never answered is refunded in
 * full. One still unsettled when the hub credits a later round than it could be settled in (`settleBy`) was left out:
 * the session reports it to {@link MarketSession.onError} as `BAD_CLEARING` (`details.reason` `'left-out'`, or
 * `'refund-short'` for a refund below the escrow) and forgets it. A failed write of the kept orders is reported there
 * too (`STORE_FAILURE`) unless a call fails with it.
 */
export class MarketSession {
  /** Whether the hub announced that it runs no market (orders then fail with `MARKET_DISABLED`). */
  disabled = false;
  /** The round open for orders, as the hub last announced it. */
  round = 0n;
  feeBps = 0n;
  readonly #deps: MarketDeps;
  readonly #clearings = new Map<bigint, PublishedClearing>();
  /** The parts of a clearing record received so far (see `joinClearing`). */
  #held: HeldClearing | undefined;
  /**
   * The orders this device placed and the escrows it paid, until a round settles them: their terms, the arrival the
   * hub answered and the fee it announced when they were placed (what the device agreed to).
   */
  readonly #orders = new Map<Bytes32, DeviceMarketOrder>();
  /**
   * Round credits that passed {@link check} and have not landed: the record each was checked against, by channel and
   * round (the KEEP_ROUNDS last). The orders a record settles are forgotten only when its credit lands ({@link credited}).
   */
  readonly #checked = new Map<string, PublishedClearing>();
  /**
   * The fee announced when this process signed each of its latest orders ({@link SIGNED_FEES}), by order id: a record
   * holding one the hub left unanswered is held to it too (in memory only: after a restart, an unanswered ask is known
   * by its signature alone).
   */
  readonly #signedFees = new Map<Bytes32, bigint>();
  /** The kept orders' writes, one at a time in call order. */
  #writes: Promise<void> = Promise.resolve();
  readonly #listeners = new Set<(c: PublishedClearing) => void>();
  readonly #errorListeners = new Set<(e: TrickleError) => void>();
  #roundWaiters: (() => void)[] = [];
  /** The client was disconnected (`stop()`): waits for a round end with `DISCONNECTED`. */
  #stopped = false;

  constructor(deps: MarketDeps) {
    this.#deps = deps;
  }

  /**
   * Read the orders and escrows kept before a restart (the client calls this when it connects, before any frame): their
   * rounds' credits are checked against them as against those placed since.
   * @throws TrickleError STORE_FAILURE / MALFORMED from the store
   */
  async restore(): Promise<void> {
    for (const o of (await this.#deps.store?.loadOrders()) ?? [])
      if (!this.#orders.has(o.id)) this.#orders.set(o.id, o);
  }

  /** The orders and escrows kept until a round settles them (see the class). */
  pending(): DeviceMarketOrder[] {
    return [...this.#orders.values()];
  }

  /**
   * Subscribe to what the session finds without a call to fail: an order or escrow of this device the hub left out of
   * its rounds (`BAD_CLEARING`, `details.reason` `'left-out'` or `'refund-short'`, `details.orderId`), a write of the
   * kept orders that failed (`STORE_FAILURE`).
   * @returns unsubscribe
   */
  onError(listener: (e: TrickleError) => void): () => void {
    this.#errorListeners.add(listener);
    return () => this.#errorListeners.delete(listener);
  }

  /** Write the kept orders as they are now (after the writes before it). @throws TrickleError STORE_FAILURE */
  #save(): Promise<void> {
    const store = this.#deps.store;
    if (!store) return Promise.resolve();
    const orders = [...this.#orders.values()];
    const run = this.#writes.then(() => store.saveOrders(orders));
    this.#writes = run.then(
      () => undefined,
      () => undefined, // ordering only: this write's failure reaches its caller through `run`
    );
    return run.catch((e: unknown) => {
      throw isTrickleError(e, 'STORE_FAILURE')
        ? e
        : new TrickleError('STORE_FAILURE', 'cannot write the market orders', { cause: e });
    });
  }

  /** A write no call waits for: its failure goes to the error listeners. */
  #saveReported(): void {
    this.#save().catch((e: unknown) => notify(this.#errorListeners, e as TrickleError));
  }

  /** The digest the hub signed a clearing under on this connection: its refunds too from wire version 3 on. */
  #clearingDigest(round: bigint, published: PublishedClearing): Uint8Array {
    return (this.#deps.wireVersion?.() ?? 3) >= 3
      ? publishedClearingDigest(this.#domain(), round, published)
      : clearingDigestV2(this.#domain(), round, hashClearing(published.record));
  }

  #domain(): Domain {
    const h = this.#deps.hub();
    return trickleDomain(h.chainId, h.adjudicator);
  }

  /** Frames from the hub that belong to the market. */
  onFrame(m: Message): void {
    if (m.t === 'round') {
      // Round 0 is the hub saying it runs no market (sent after `ok` like a real round): orders fail at once.
      this.disabled = m.round === 0n;
      this.round = m.round;
      this.feeBps = m.feeBps;
      for (const w of this.#roundWaiters.splice(0)) w();
    } else if (m.t === 'clearing') {
      let published: PublishedClearing;
      try {
        // A record longer than a frame comes in parts: held (bounded) until whole, then verified as a whole one.
        const joined = joinClearing(this.#held, m);
        this.#held = joined.held;
        if (!joined.record) return;
        published = parseJson<PublishedClearing>(new TextDecoder().decode(joined.record));
        // Another round's record, or one the hub did not sign, is ignored as an unreadable one is.
        if (
          published.record.round !== m.round ||
          this.#deps.verifier.recoverAddress(this.#clearingDigest(m.round, published), m.sig) !== this.#deps.hub().hub
        )
          return;
      } catch {
        return; // an unverifiable record is ignored; the credit it would justify is then refused
      }
      // Kept: the records last received, whatever their rounds (a record comes again before each attempt of its
      // credit): KEEP_ROUNDS of them, fewer after one in parts (KEEP_ROUNDS / its parts), so whatever a hub sends the
      // device keeps at most 64 × (1 + 1/2 + … + 1/64) ≈ 304 blobs of records (18 MiB).
      this.#clearings.delete(m.round);
      this.#clearings.set(m.round, published);
      for (const r of this.#clearings.keys())
        if (this.#clearings.size * (m.parts ?? 1) > KEEP_ROUNDS) this.#clearings.delete(r);
      notify(this.#listeners, published);
    }
  }

  /** Subscribe to clearing records. @returns unsubscribe */
  onClearing(listener: (c: PublishedClearing) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Wait for the hub to open the next round (its `round` announcement), so orders placed now have the whole round.
   * @returns the round now open
   */
  async nextRound(timeoutMs = 30_000): Promise<bigint> {
    if (this.disabled) throw marketDisabled();
    if (this.#stopped) throw disconnected();
    const current = this.round;
    await new Promise<void>((resolve, reject) => {
      const t = deadline(() => reject(new TrickleError('TIMEOUT', 'the hub opened no new round')), timeoutMs);
      const wait = () =>
        this.#roundWaiters.push(() => {
          if (this.disabled || this.#stopped) {
            clearTimeout(t);
            reject(this.#stopped ? disconnected() : marketDisabled());
          } else if (this.round > current) {
            clearTimeout(t);
            resolve();
          } else wait();
        });
      wait();
    });
    return this.round;
  }

  /**
   * Wait until the hub has announced a round.
   * @throws TrickleError MARKET_DISABLED at once when the hub announced that it runs no market; TIMEOUT when it
   * announced nothing within `timeoutMs`
   */
  async ready(timeoutMs = 5000): Promise<void> {
    if (this.disabled) throw marketDisabled();
    if (this.round > 0n) return;
    if (this.#stopped) throw disconnected();
    await new Promise<void>((resolve, reject) => {
      const t = deadline(() => reject(new TrickleError('TIMEOUT', 'the hub announced no market round')), timeoutMs);
      this.#roundWaiters.push(() => {
        clearTimeout(t);
        if (this.#stopped) reject(disconnected());
        else if (this.disabled) reject(marketDisabled());
        else resolve();
      });
    });
  }

  /** The client was disconnected: `nextRound()` and `ready()` waiting, and called from now on, fail `DISCONNECTED`. */
  stop(): void {
    this.#stopped = true;
    for (const w of this.#roundWaiters.splice(0)) w();
  }

  /**
   * Place an order for the open round. A bid first pays its worst case (quantity × price) to the hub as an
   * ordinary channel payment marked as this order's escrow; the unused part comes back in the round's credit. The
   * escrow, once paid, is kept in the store before the order is sent, and the order once accepted (see the class).
   * @throws TrickleError BAD_ORDER / INSUFFICIENT_FUNDS; LIMIT_EXCEEDED when the round is full (nothing paid for a
   *   refused escrow); MARKET_DISABLED (at once) against a hub without a market; STORE_FAILURE when the paid escrow
   *   cannot be kept (the order is not sent: the hub refunds the escrow at round end, checked by this process only)
   * @example
   * ```ts
   * await client.market.submitOrder(channel, { market: 'kwh', side: 'bid', quantity: 3n, price: 120_000n });
   * ```
   */
  async submitOrder(
    channel: ClientChannel,
    o: { market: string; side: Side; quantity: bigint; price: bigint; round?: bigint },
  ): Promise<PlacedOrder> {
    await this.ready();
    const feeBps = this.feeBps; // the fee announced for the round the device orders in: the one it agrees to
    const id = randomBytes32();
    const round = o.round ?? this.round;
    const terms = {
      id,
      participant: this.#deps.signer.address,
      market: o.market,
      side: o.side,
      quantity: o.quantity,
      price: o.price,
      round,
    };
    // An order the hub would refuse is refused here, before its escrow is paid (it would come back only a round later).
    validateOrder({ ...terms, arrival: 0n });
    const escrow = o.side === 'bid' ? o.quantity * o.price : 0n;
    const kept = { id, round, market: o.market, side: o.side, quantity: o.quantity, price: o.price, feeBps, escrow };
    if (escrow > 0n) {
      await channel.pay(escrow, { escrowFor: id });
      // Paid (the hub committed it): kept before the order goes, so that after a restart too the device checks that the
      // escrow comes back — in its order's round, or refunded by the round open at the hub when it was paid (at most
      // one past the round this device saw then), or by the round after its order's when the hub refuses it then.
      const seen = this.round > round ? this.round : round;
      this.#orders.set(id, { ...kept, settleBy: seen + 1n });
      await this.#save();
    }
    const sig = this.#deps.signer.signDigest(hashOrder(this.#domain(), terms));
    // The fee this order agrees to, kept whatever the hub answers (an ask has no escrow, so no kept order, until then).
    this.#signedFees.set(id, feeBps);
    if (this.#signedFees.size > SIGNED_FEES) this.#signedFees.delete(this.#signedFees.keys().next().value!);
    let reply: Message;
    try {
      reply = await this.#deps.request((rid) => ({
        t: 'order',
        id: rid,
        order: terms, // the codec writes the wire order's fields: not `participant` (the sender)
        sig,
      }));
      if (reply.t !== 'accepted') throw new TrickleError('BAD_ORDER', 'order not accepted');
    } catch (e) {
      // Refused by the hub: the escrow comes back whole as a refund. Not answered (TIMEOUT, DISCONNECTED): the order
      // may have been placed; the escrow is kept and checked either way.
      const paid = this.#orders.get(id);
      if (paid && isTrickleError(e) && e.code !== 'TIMEOUT' && e.code !== 'DISCONNECTED') {
        this.#orders.set(id, { ...paid, refused: true });
        this.#saveReported();
      }
      throw e;
    }
    // Accepted: the clearing of its round must now contain it (an accepted order is durable at the hub).
    this.#orders.set(id, { ...kept, settleBy: round, arrival: reply.arrival });
    // The order is placed whatever the write does: a failed one is reported, not thrown (this process checks it still).
    this.#saveReported();
    return { id, round, arrival: reply.arrival, escrow };
  }

  /** The clearing of a round, if received. */
  clearing(round: bigint): PublishedClearing | undefined {
    return this.#clearings.get(round);
  }

  /**
   * Check a hub credit that nets market round `state.round` before countersigning it. Nothing is forgotten here: the
   * credit may still be refused after this check (its signature, the device's store, the application's guard), and a
   * hub could then send another record of the round without our order. The orders it settles are forgotten when the
   * client reports the credit countersigned and durable ({@link credited}).
   * @throws TrickleError('BAD_CLEARING')
   */
  check(credit: { channelId: ChannelId; previous: State; state: State; amount: bigint }): void {
    if (credit.state.round <= credit.previous.round) return; // not a round credit
    const r = credit.state.round;
    const p = this.#clearings.get(r);
    if (!p) throw new TrickleError('BAD_CLEARING', `no verified clearing record for round ${r}`);
    const orders: Order[] = p.orders.map(({ sig: _sig, ...o }) => o);
    try {
      verifyClearing(p.record, orders, { feeBps: p.feeBps, round: r });
    } catch (e) {
      // A malformed order in the hub's record (one of another round, say) makes the record bad, not our order.
      if (!isTrickleError(e, 'BAD_ORDER')) throw e;
      throw new TrickleError('BAD_CLEARING', `the clearing record holds a bad order: ${e.shortMessage}`, {
        details: e.details,
        cause: e,
      });
    }
    const me = this.#deps.signer.address;
    const mine = new Map<Bytes32, DeviceMarketOrder>();
    for (const o of this.#orders.values()) if (o.round === r && o.arrival !== undefined) mine.set(o.id, o);
    for (const [id, o] of mine) {
      // The record is the clearing at the fee the hub published; that fee must be no higher than the one it announced
      // when this device placed the order: a fee raised afterwards takes more of a seller's proceeds than it agreed to.
      if (p.feeBps > o.feeBps) {
        throw new TrickleError('BAD_CLEARING', 'a fee above the one announced', {
          details: { announced: o.feeBps, published: p.feeBps },
        });
      }
      // Every term as placed, and the arrival too: it ranks the order among those at its price, so a changed one
      // could leave it unfilled.
      const found = orders.find((x) => x.id === id);
      const { side, quantity, price, market, arrival } = o;
      if (
        !found ||
        found.participant !== me ||
        Object.entries({ side, quantity, price, market, arrival }).some(([k, v]) => found[k as keyof Order] !== v)
      ) {
        throw new TrickleError('BAD_CLEARING', 'one of our orders left out or altered', {
          details: { id },
        });
      }
    }
    // An order in our name must carry our signature: the hub cannot trade for us.
    const domain = this.#domain();
    for (const o of p.orders) {
      if (o.participant !== me || mine.has(o.id)) continue;
      const { sig, arrival: _a, ...terms } = o;
      let ok: boolean | undefined;
      try {
        ok = this.#deps.verifier.recoverAddress(hashOrder(domain, terms), fromHex(sig)) === me;
      } catch {
        // not a signature: not ours
      }
      if (!ok)
        throw new TrickleError('BAD_CLEARING', 'an order in our name we did not sign', {
          details: { id: o.id },
        });
      // One the hub never answered (or refused) is ours too once it is in the record: cleared at no higher a fee than
      // the one announced when we signed it. Else a hub could withhold `accepted` and take a seller's proceeds.
      const agreed = this.#orders.get(o.id)?.feeBps ?? this.#signedFees.get(o.id);
      if (agreed !== undefined && p.feeBps > agreed)
        throw new TrickleError('BAD_CLEARING', 'a fee above the one announced', {
          details: { announced: agreed, published: p.feeBps, id: o.id },
        });
    }
    let expected = 0n;
    for (const c of [...p.record.credits, ...p.refunds]) if (c.participant === me) expected += c.amount;
    if (credit.amount !== expected) {
      throw new TrickleError('BAD_CLEARING', 'round credit does not match the clearing', {
        details: { expected, offered: credit.amount },
      });
    }
    const key = `${credit.channelId}:${r}`;
    this.#checked.delete(key);
    this.#checked.set(key, p);
    if (this.#checked.size > KEEP_ROUNDS) this.#checked.delete(this.#checked.keys().next().value!);
  }

  /**
   * A round credit that passed {@link check} landed: the device countersigned it and its state is durable. The orders
   * and escrows the record it was checked against settles are forgotten now, and those the hub left out are reported.
   * The client calls this for each round credit its channels report (`onPayment` with `round`).
   */
  credited(channelId: ChannelId, round: bigint): void {
    const key = `${channelId}:${round}`;
    const p = this.#checked.get(key);
    if (p === undefined) return;
    this.#checked.delete(key);
    this.#settle(round, p);
  }

  /**
   * Round `r`'s credit passed its checks and landed: forget the kept orders and escrows its record settles (an order of ours in
   * it, or a refund under the order's id: together at least the escrow paid), and report those the hub left out — still
   * unsettled although a later round than their `settleBy` is credited: the hub pays a participant's round credits
   * oldest round first, each after its record, so the record that could settle them is past.
   */
  #settle(r: bigint, p: PublishedClearing): void {
    const me = this.#deps.signer.address;
    const found: TrickleError[] = [];
    let changed = false;
    for (const o of [...this.#orders.values()]) {
      const placed = p.orders.find((x) => x.id === o.id && x.participant === me);
      let refunded = 0n;
      for (const x of p.refunds) if (x.orderId === o.id && x.participant === me) refunded += x.amount;
      if (placed !== undefined || refunded > 0n) {
        const back = (placed ? escrowFor(placed) : 0n) + refunded;
        if (back < o.escrow)
          found.push(
            new TrickleError(
              'BAD_CLEARING',
              `round ${r} paid back ${back} of the escrow ${o.escrow} of order ${o.id}`,
              {
                details: { reason: 'refund-short', orderId: o.id, round: r, escrow: o.escrow, returned: back },
              },
            ),
          );
      } else if (o.settleBy < r) {
        found.push(
          new TrickleError(
            'BAD_CLEARING',
            o.arrival !== undefined
              ? `the hub left order ${o.id} out of round ${o.round}`
              : `the hub never refunded the escrow ${o.escrow} of order ${o.id}`,
            {
              details: {
                reason: 'left-out',
                orderId: o.id,
                round: o.round,
                escrow: o.escrow,
                settleBy: o.settleBy,
                credited: r,
              },
            },
          ),
        );
      } else continue;
      this.#orders.delete(o.id);
      changed = true;
    }
    if (changed) this.#saveReported();
    for (const e of found) notify(this.#errorListeners, e);
  }
}

const marketDisabled = (): TrickleError => new TrickleError('MARKET_DISABLED', 'the hub runs no market');
const disconnected = (): TrickleError =>
  new TrickleError('DISCONNECTED', 'the client was disconnected: connect again to trade');
