import type { Message, MessageOf, RouteInstruction } from '@trickle/protocol/codec';
import { signReceipt, type ReceiptRequest } from '@trickle/protocol/receipt';
import { signatureFromHex, type Signer } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { RouteRecord } from './store/types.js';

/** Dependencies of {@link RouteExtras}. */
export interface RouteExtrasDeps {
  /** The hub's key: signs payment receipts. */
  readonly signer: Signer;
  /** The Trickle domain separator of the hub's chain and adjudicator. */
  readonly separator: Uint8Array;
  /** Send a frame to a connected device. */
  readonly send: (device: Address, msg: Message) => boolean;
  /**
   * Routes noted and not yet finished. Beyond this, the oldest note of the payer holding the most is dropped: a route
   * is noted when it passes the router's check, before its update is verified, so one device sending routes that are
   * then refused can only crowd out its own notes, never another payer's receipt. Default 10,000.
   */
  readonly maxPending?: number;
  /** Receipt frames kept for payers that were offline when their route finished (oldest dropped first). Default 10,000. */
  readonly maxUndelivered?: number;
}

interface Noted {
  readonly from: Address;
  readonly token: Address;
  readonly route: RouteInstruction;
}

/**
 * What a route instruction may carry beyond the payment itself: a receipt request (x402 `trickle-channel`) and
 * stream metadata (payment streams). Noted when the router accepts the route; acted on when the router reports the
 * route's outcome to the payer with its `receipt` frame:
 * - delivered with a receipt request: the frame gains `hubSig`, the hub's signature over the {@link signReceipt}
 *   Receipt (payer, payee, token, amount, resource, nonce, expiry, payment id). The router reports `delivered` only
 *   once the payee has countersigned the credit, so a receipt never vouches for money the payee does not hold.
 * - delivered with stream metadata: the payee gets a `stream` frame (stream id, rate, running total).
 * The notes live in memory; the route's store record keeps the same extras, and the router restores them
 * ({@link RouteExtras.restore}) before it reports a route it finishes after a restart or took over from another
 * cluster process, so that route too gets its signed receipt and its `stream` frame.
 *
 * A route's outcome is the payer's only word on it: a `receipt` frame that could not be sent because the payer was
 * offline is kept (bounded) and sent when it connects again, so its `pay()` resolves — with the signed receipt —
 * instead of timing out on a payment that was delivered.
 */
export class RouteExtras {
  readonly #deps: RouteExtrasDeps;
  readonly #max: number;
  readonly #noted = new Map<Bytes32, Noted>();
  /** The same notes' payment ids per payer, oldest first. */
  readonly #byPayer = new Map<Address, Set<Bytes32>>();
  readonly #maxUndelivered: number;
  /** Receipt frames for payers that were offline, per payer in the order they finished. */
  readonly #undelivered = new Map<Address, Message[]>();
  #undeliveredCount = 0;

  constructor(deps: RouteExtrasDeps) {
    this.#deps = deps;
    this.#max = deps.maxPending ?? 10_000;
    this.#maxUndelivered = deps.maxUndelivered ?? 10_000;
  }

  /** Receipt frames waiting for their payer to connect. */
  get undelivered(): number {
    return this.#undeliveredCount;
  }

  /**
   * Send a frame of the router: completed by {@link RouteExtras.outgoing}, and a `receipt` frame the payer cannot
   * get now (offline) is kept for {@link RouteExtras.deviceConnected}.
   * @returns whether it was sent
   */
  deliver(device: Address, msg: Message): boolean {
    const out = this.outgoing(msg);
    if (this.#deps.send(device, out)) return true;
    if (out.t === 'receipt') {
      // Full: drop the oldest frame of the payer holding the most, so that a device paying a colluding one and going
      // offline over and over crowds out only its own receipts.
      if (this.#undeliveredCount >= this.#maxUndelivered) {
        const most = largest(this.#undelivered, (frames) => frames.length);
        if (most) {
          most[1].shift();
          this.#undeliveredCount--;
          if (most[1].length === 0) this.#undelivered.delete(most[0]);
        }
      }
      let frames = this.#undelivered.get(device);
      if (!frames) this.#undelivered.set(device, (frames = []));
      frames.push(out);
      this.#undeliveredCount++;
    }
    return false;
  }

  /** A device (re)connected: send it the receipts it missed. */
  deviceConnected(device: Address): void {
    const frames = this.#undelivered.get(device);
    if (!frames) return;
    this.#undelivered.delete(device);
    this.#undeliveredCount -= frames.length;
    const kept = frames.filter((msg) => !this.#deps.send(device, msg));
    if (kept.length > 0) {
      this.#undelivered.set(device, kept);
      this.#undeliveredCount += kept.length;
    }
  }

  /** A route the router accepted (its `check` passed). Routes without extras are not kept. */
  note(from: Address, token: Address, route: RouteInstruction): void {
    if (!route.receipt && !route.stream) return;
    this.#forget(route.paymentId);
    if (this.#noted.size >= this.#max) this.#dropOne();
    this.#noted.set(route.paymentId, { from, token, route });
    let ids = this.#byPayer.get(from);
    if (!ids) this.#byPayer.set(from, (ids = new Set()));
    ids.add(route.paymentId);
  }

  /**
   * A route about to be reported: note its extras from its store record when they are not noted (the route was
   * resumed after a restart, taken over from another process, or its note was dropped for room).
   */
  restore(route: RouteRecord): void {
    if (this.#noted.has(route.paymentId) || !route.token || (!route.receipt && !route.stream)) return;
    // Decoded from JSON: the stream tick's integers may come back as decimal strings.
    const stream = route.stream && {
      ...route.stream,
      ratePerSecond: BigInt(route.stream.ratePerSecond),
      total: BigInt(route.stream.total),
    };
    this.note(route.from, route.token, {
      to: route.to,
      amount: route.amount,
      paymentId: route.paymentId,
      receipt: route.receipt && { ...route.receipt, expiry: BigInt(route.receipt.expiry) },
      stream,
    });
  }

  /** Drop the oldest note of the payer holding the most. */
  #dropOne(): void {
    const oldest = largest(this.#byPayer, (ids) => ids.size)?.[1]
      .values()
      .next().value;
    if (oldest !== undefined) this.#forget(oldest);
  }

  #forget(paymentId: Bytes32): Noted | undefined {
    const noted = this.#noted.get(paymentId);
    if (!noted) return undefined;
    this.#noted.delete(paymentId);
    const ids = this.#byPayer.get(noted.from);
    ids?.delete(paymentId);
    if (ids?.size === 0) this.#byPayer.delete(noted.from);
    return noted;
  }

  /** Routes noted and not yet finished. */
  get pending(): number {
    return this.#noted.size;
  }

  /**
   * Pass every frame the router sends through this: a `receipt` frame is completed as described above; any other
   * frame is returned as is.
   */
  outgoing(msg: Message): Message {
    if (msg.t !== 'receipt') return msg;
    const noted = this.#forget(msg.paymentId);
    if (!noted) return msg;
    if (!msg.delivered) return msg;
    const { from, token, route } = noted;
    if (route.stream)
      this.#deps.send(route.to, {
        t: 'stream',
        id: 0,
        from,
        paymentId: route.paymentId,
        amount: route.amount,
        stream: route.stream,
      });
    if (!route.receipt) return msg;
    return { ...msg, hubSig: this.#sign(from, token, route.to, route.amount, route.paymentId, route.receipt) };
  }

  /**
   * The answer to a payer's `outcome` query about `route` (its stored record, the payer's own): a `receipt` frame with
   * the query's id — `pending`, refunded, or delivered with `hubSig` when the route carried a receipt request. The hub
   * signs the terms the payer's route instruction carried, as kept in the record; a record from before they were kept
   * (no `token`) is answered without a signature. Changes nothing: the route's notes stay for its own outcome frame.
   */
  answer(id: number, route: RouteRecord): MessageOf<'receipt'> {
    const base = { t: 'receipt', id, paymentId: route.paymentId } as const;
    if (route.status === 'pending') return { ...base, delivered: false, pending: true };
    if (route.status !== 'delivered') return { ...base, delivered: false };
    if (!route.receipt || !route.token || route.lock) return { ...base, delivered: true };
    const request = { ...route.receipt, expiry: BigInt(route.receipt.expiry) }; // decoded from JSON: maybe a string
    return {
      ...base,
      delivered: true,
      hubSig: this.#sign(route.from, route.token, route.to, route.amount, route.paymentId, request),
    };
  }

  #sign(
    payer: Address,
    token: Address,
    payee: Address,
    amount: bigint,
    paymentId: Bytes32,
    request: ReceiptRequest,
  ): Uint8Array {
    const { resource, nonce, expiry } = request;
    const signed = signReceipt(this.#deps.signer, this.#deps.separator, {
      payer,
      payee,
      token,
      amount,
      resource,
      nonce,
      expiry,
      paymentId,
    });
    return signatureFromHex(signed.sig);
  }
}

/** The entry of `groups` holding the most (by `size`; the first of equals), undefined when there is none. */
function largest<K, V>(groups: ReadonlyMap<K, V>, size: (v: V) => number): [K, V] | undefined {
  let most: [K, V] | undefined;
  for (const e of groups) if (!most || size(e[1]) > size(most[1])) most = e;
  return most;
}
