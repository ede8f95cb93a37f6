import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { randomBytes32 } from '@trickle/protocol/random';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { toBytes32 } from '@trickle/protocol/hex';
import { recoverReceiptSigner, resourceHash, type Receipt, type SignedReceipt } from '@trickle/protocol/receipt';
import { nobleVerifier, signatureToHex, type Verifier } from '@trickle/protocol/signer';
import { MAX_UINT64, type Address, type Bytes32, type SignatureHex } from '@trickle/protocol/types';
import type { ClientChannel } from './channel.js';
import type { TrickleClient } from './client.js';
import type { PurchaseStore } from './purchases.js';
import { deadline, MAX_TIMER_MS } from './timers.js';

/** Arguments of {@link payForReceipt}. */
export interface PayForReceiptArgs {
  /** The payee (the service's Trickle address, x402 `payTo`). */
  readonly to: Address;
  /** Base units, > 0. */
  readonly amount: bigint;
  /** The resource's name as the service states it (x402: `extra.resource`); the receipt binds its keccak256. */
  readonly resource: string;
  /** Unix seconds after which the receipt is worthless. */
  readonly expiry: bigint;
  /** Unique per receipt; random when omitted. */
  readonly nonce?: Bytes32 | undefined;
}

/**
 * Per client: the outcomes of receipt requests not yet claimed, per routed payment id — the hub's signature, or for a
 * payment whose `pay()` timed out (`late`), `false` when the hub refunded it and `true` when it was delivered without
 * one — and what the receipt of each such late payment says. Both bounded, oldest dropped first.
 */
const MAX_UNCLAIMED = 10_000;
interface Book {
  readonly sigs: Map<Bytes32, SignatureHex | boolean>;
  readonly late: Map<Bytes32, Receipt>;
}
const books = new WeakMap<TrickleClient, Book>();

const bounded = <K, V>(m: Map<K, V>, k: K, v: V): void => {
  if (m.size >= MAX_UNCLAIMED) m.delete(m.keys().next().value!);
  m.set(k, v);
};

function bookOf(client: TrickleClient): Book {
  let book = books.get(client);
  if (!book) {
    const b: Book = { sigs: new Map(), late: new Map() };
    client.onMessage((m) => {
      if (m.t === 'receipt' && (m.hubSig || b.late.has(m.paymentId)))
        bounded(b.sigs, m.paymentId, m.hubSig ? signatureToHex(m.hubSig) : m.delivered);
    });
    books.set(client, (book = b));
  }
  return book;
}

/**
 * Pay a device through the hub and get the hub's signed receipt for it (the payload of x402's `trickle-channel`
 * scheme). Resolves once the payee has countersigned the payment and the hub has signed the receipt; the hub's
 * signature is checked here against the hub this client is connected to.
 * @param client - the connected client
 * @param channel - one of its channels, in the token the payee asks for
 * @param args - payee, amount, resource, expiry, optional nonce
 * @param verifier - checks the hub's signature (pure JS by default)
 * @returns the signed receipt
 * @throws TrickleError WRONG_CHANNEL when `channel` is not one of `client`'s, INVALID_ARGUMENT for an expiry that is
 *   not a uint64 or a nonce that is not 32 bytes (each before paying); STORE_FAILURE (or MALFORMED for a damaged
 *   purchase file) when the store cannot record the purchase or forget expired ones (nothing is paid then); from `pay`
 *   (INSUFFICIENT_FUNDS, NO_ROUTE, TIMEOUT …); RECEIPT_MISSING when the hub delivered the payment without a receipt;
 *   BAD_SIGNATURE when the receipt is not the hub's. After TIMEOUT the payment may still be delivered (or after the
 *   process ended before the hub's word): {@link receiptFor} with the error's `details.paymentId` gets its receipt, in
 *   this process or a later one on the same store (or NO_ROUTE once the hub refunded it).
 * @example
 * ```ts
 * const signed = await payForReceipt(client, channel, { to: service, amount: 1_000n, resource: 'sensor-7/readings', expiry: now + 60n });
 * ```
 */
export async function payForReceipt(
  client: TrickleClient,
  channel: ClientChannel,
  args: PayForReceiptArgs,
  verifier: Verifier = nobleVerifier,
): Promise<SignedReceipt> {
  if (args.amount <= 0n) throw new TrickleError('INVALID_ARGUMENT', 'amount must be positive');
  // The hub sends the receipt on the connection the payment came by: another client's channel would pay, and this
  // client would never see the receipt (nor could the receipt name it as payer).
  if (!client.channels().includes(channel))
    throw new TrickleError('WRONG_CHANNEL', 'the channel is not one of this client', {
      details: { channelId: channel.channelId },
    });
  // Checked before paying: a route that cannot be encoded failed after the payment was queued, and the error
  // escaped and left the client disconnected.
  if (typeof args.expiry !== 'bigint' || args.expiry < 0n || args.expiry > MAX_UINT64)
    throw new TrickleError('INVALID_ARGUMENT', 'expiry must be unix seconds in a uint64', {
      details: { expiry: args.expiry },
    });
  let nonce: Bytes32;
  try {
    nonce = args.nonce === undefined ? randomBytes32() : toBytes32(args.nonce);
  } catch {
    throw new TrickleError('INVALID_ARGUMENT', 'nonce must be 32 bytes of hex', { details: { nonce: args.nonce } });
  }
  if (typeof args.resource !== 'string') throw new TrickleError('INVALID_ARGUMENT', 'resource must be a string');
  const book = bookOf(client);
  const request = { resource: resourceHash(args.resource), nonce, expiry: args.expiry };
  const paymentId = randomBytes32();
  const receipt: Receipt = {
    payer: client.address,
    payee: args.to,
    token: channel.record.params.token,
    amount: args.amount,
    ...request,
    paymentId,
  };
  // Recorded before the payment leaves: a device restarted before the hub's word asks the hub for it (receiptFor).
  const purchases = client.store.purchases;
  if (purchases) {
    await forgetExpired(client, purchases);
    await purchases.savePurchase(receipt);
  }
  try {
    await channel.pay(args.amount, { to: args.to, paymentId, receipt: request });
  } catch (e) {
    // The hub acked the payment and has not said yet whether it was delivered: `receiptFor` gets its receipt later.
    if (isTrickleError(e, 'TIMEOUT') && e.details['paymentId'] === paymentId) bounded(book.late, paymentId, receipt);
    throw e;
  }
  const sig = book.sigs.get(paymentId);
  book.sigs.delete(paymentId);
  return checked(client, receipt, sig, verifier);
}

/** When each client last forgot its expired purchases (ms): once a minute at most, as it buys. */
const lastForget = new WeakMap<TrickleClient, number>();

/** Forget the purchases whose receipt expired (bounded store growth). */
async function forgetExpired(client: TrickleClient, purchases: PurchaseStore): Promise<void> {
  const now = Date.now();
  if (now - (lastForget.get(client) ?? -Infinity) < 60_000) return;
  lastForget.set(client, now);
  const nowSeconds = BigInt(Math.floor(now / 1000));
  for (const p of await purchases.listPurchases())
    if (p.expiry < nowSeconds) await purchases.forgetPurchase(p.paymentId);
}

/** The signed receipt of `receipt` from the hub's answer `sig`, checked against the client's hub. */
function checked(
  client: TrickleClient,
  receipt: Receipt,
  sig: SignatureHex | boolean | undefined,
  verifier: Verifier,
): SignedReceipt {
  if (typeof sig !== 'string')
    throw new TrickleError('RECEIPT_MISSING', 'the payment was delivered but the hub sent no signed receipt', {
      details: { paymentId: receipt.paymentId },
    });
  const signed: SignedReceipt = { receipt, sig };
  const { hub } = client;
  if (recoverReceiptSigner(verifier, domainSeparator(trickleDomain(hub.chainId, hub.adjudicator)), signed) !== hub.hub)
    throw new TrickleError('BAD_SIGNATURE', 'the receipt is not signed by the hub');
  return signed;
}

/** Options of {@link receiptFor}. */
export interface ReceiptForOptions {
  /** Wait at most this long for the hub's word (default, or past ~24.8 days, a timer's most: until it comes). */
  readonly timeoutMs?: number | undefined;
  /** Checks the hub's signature (pure JS by default). */
  readonly verifier?: Verifier | undefined;
}

/**
 * The signed receipt of a {@link payForReceipt} that failed with `TIMEOUT` (`details.paymentId`), or whose device
 * restarted before it ended: the hub had taken the payment and had not yet said whether the payee took it. It finds the
 * purchase in this client's memory, else in its store (`store.purchases`, recorded before the payment was sent), asks
 * the hub for the payment's outcome (an `outcome` query) and, while the route is pending, waits for the hub's word (on
 * this connection, or when the client reconnects). Call it as often as needed: the hub answers again.
 * @param client - a client of the device that paid (the same object, or a new one on the same key and store)
 * @param paymentId - the payment id of the TIMEOUT error's details
 * @param options - how long to wait, and the verifier
 * @returns the signed receipt, checked to be the hub's
 * @throws TrickleError NO_ROUTE when the hub refunded the payment (the money is back in the channel); INVALID_ARGUMENT
 *   for a payment id of no receipt purchase this client or its store knows, or a negative `timeoutMs`; UNKNOWN_PAYMENT when the hub holds no
 *   payment of this device with that id (it never took it: nothing was paid; or it forgot it past its retention);
 *   TIMEOUT when the hub has not answered within `timeoutMs` (ask again later); STORE_FAILURE when the store cannot be
 *   read; RECEIPT_MISSING / BAD_SIGNATURE as `payForReceipt`
 * @example
 * ```ts
 * const signed = await receiptFor(client, error.details.paymentId, { timeoutMs: 60_000 });
 * ```
 */
export async function receiptFor(
  client: TrickleClient,
  paymentId: Bytes32,
  options: ReceiptForOptions = {},
): Promise<SignedReceipt> {
  const wait = waitMs(options.timeoutMs);
  const book = bookOf(client);
  let receipt = book.late.get(paymentId);
  if (!receipt) {
    const stored = await client.store.purchases?.loadPurchase(paymentId);
    if (!stored || stored.payer !== client.address)
      throw new TrickleError('INVALID_ARGUMENT', 'no receipt purchase of this client has this payment id', {
        details: { paymentId },
      });
    bounded(book.late, paymentId, (receipt = stored)); // the book files the hub's word on it from now on
  }
  let sig = book.sigs.get(paymentId);
  if (sig === undefined) sig = await askHub(client, book, paymentId, wait);
  if (sig === false)
    throw new TrickleError('NO_ROUTE', 'not delivered: the hub refunded it', { details: { paymentId } });
  return checked(client, receipt, sig, options.verifier ?? nobleVerifier);
}

/**
 * The hub's word on a routed payment of this client: asked with an `outcome` query, and awaited as the route's own
 * `receipt` frame while it is pending. The query is sent only on a connection of wire version 3 or later (an older
 * hub does not know it); one not sent (not connected, an older hub) or that fails (no answer in time) leaves the wait
 * for that frame, which comes when the route finishes, or when the client reconnects.
 */
/**
 * `receiptFor`'s `timeoutMs` as a timer's delay: unbounded when absent or longer than a timer holds (which would fire
 * at once, answering TIMEOUT for a receipt on its way).
 * @throws TrickleError INVALID_ARGUMENT for a negative or non-numeric one
 */
function waitMs(timeoutMs: number | undefined): number {
  if (timeoutMs === undefined) return Infinity;
  if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0)
    throw new TrickleError('INVALID_ARGUMENT', 'timeoutMs must be a number of milliseconds, 0 or more', {
      details: { timeoutMs },
    });
  return timeoutMs > MAX_TIMER_MS ? Infinity : timeoutMs;
}

function askHub(
  client: TrickleClient,
  book: Book,
  paymentId: Bytes32,
  timeoutMs: number,
): Promise<SignatureHex | boolean | undefined> {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (settle: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      off();
      settle();
    };
    const timer =
      timeoutMs === Infinity
        ? undefined
        : deadline(
            () =>
              finish(() =>
                reject(
                  new TrickleError('TIMEOUT', 'the hub has not said yet whether it was delivered', {
                    details: { paymentId },
                  }),
                ),
              ),
            timeoutMs,
          );
    // Listeners run in order: the book's (registered first) has filed the hub's answer when this one hears it.
    const off = client.onMessage((m) => {
      if (m.t === 'receipt' && m.paymentId === paymentId && !m.pending) finish(() => resolve(book.sigs.get(paymentId)));
    });
    // A hub of wire version 1 or 2 does not know the query (it refuses it MALFORMED and counts it toward closing the
    // connection): there the route's own frame is all there is to wait for.
    if ((client.wireVersion ?? 0) < 3) return;
    client
      .request((id) => ({ t: 'outcome', id, paymentId }))
      .then(
        (m) => {
          if (m.t !== 'receipt' || m.paymentId !== paymentId || m.pending) return; // pending: its frame comes later
          const word = m.hubSig ? signatureToHex(m.hubSig) : m.delivered;
          bounded(book.sigs, paymentId, word);
          finish(() => resolve(word));
        },
        (e: unknown) => {
          if (isTrickleError(e, 'UNKNOWN_PAYMENT'))
            finish(() =>
              reject(
                new TrickleError('UNKNOWN_PAYMENT', 'the hub holds no payment of this device with this id', {
                  details: { paymentId },
                  cause: e,
                }),
              ),
            );
        },
      );
  });
}
