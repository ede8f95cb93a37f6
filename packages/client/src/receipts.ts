import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { randomBytes32 } from '@trickle/protocol/random';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { toBytes32 } from '@trickle/protocol/hex';
import { recoverReceiptSigner, resourceHash, type Receipt, type SignedReceipt } from '@trickle/protocol/receipt';
import { nobleVerifier, signatureToHex, type Verifier } from '@trickle/protocol/signer';
import { MAX_UINT64, type Address, type Bytes32, type SignatureHex } from '@trickle/protocol/types';
import type { ClientChannel } from './channel.js';
import type { TrickleClient } from './client.js';

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
 *   not a uint64 or a nonce that is not 32 bytes (each before paying); from `pay` (INSUFFICIENT_FUNDS, NO_ROUTE,
 *   TIMEOUT …); RECEIPT_MISSING when the hub delivered the payment without a receipt; BAD_SIGNATURE when the receipt
 *   is not the hub's. After TIMEOUT the payment may still be delivered: {@link receiptFor} with the error's
 *   `details.paymentId` gets its receipt (or NO_ROUTE once the hub refunded it).
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
  const receipt = { payer: client.address, payee: args.to, token: channel.record.params.token, amount: args.amount };
  let paymentId: Bytes32;
  try {
    paymentId = (await channel.pay(args.amount, { to: args.to, receipt: request })).paymentId!;
  } catch (e) {
    // The hub acked the payment and has not said yet whether it was delivered: `receiptFor` gets its receipt later.
    const id = isTrickleError(e, 'TIMEOUT') ? (e.details['paymentId'] as Bytes32 | undefined) : undefined;
    if (id) bounded(book.late, id, { ...receipt, ...request, paymentId: id });
    throw e;
  }
  const sig = book.sigs.get(paymentId);
  book.sigs.delete(paymentId);
  return checked(client, { ...receipt, ...request, paymentId }, sig, verifier);
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
  /** Wait at most this long for the hub's word (default: until it comes). */
  readonly timeoutMs?: number | undefined;
  /** Checks the hub's signature (pure JS by default). */
  readonly verifier?: Verifier | undefined;
}

/**
 * The signed receipt of a {@link payForReceipt} that failed with `TIMEOUT` (`details.paymentId`): the hub had taken
 * the payment and had not yet said whether the payee took it. It says so later (on this connection, or when the client
 * reconnects), and this resolves with the receipt then, or at once if it already has; call it as often as needed.
 * It knows the payments this client (this object, since it connected) bought receipts for.
 * @param client - the client that paid
 * @param paymentId - the payment id of the TIMEOUT error's details
 * @param options - how long to wait, and the verifier
 * @returns the signed receipt, checked to be the hub's
 * @throws TrickleError NO_ROUTE when the hub refunded the payment (the money is back in the channel); INVALID_ARGUMENT
 *   for a payment id of no receipt purchase of this client that timed out; TIMEOUT when the hub has not answered within
 *   `timeoutMs` (ask again later); RECEIPT_MISSING / BAD_SIGNATURE as `payForReceipt`
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
  const { sigs, late } = bookOf(client);
  const receipt = late.get(paymentId);
  if (!receipt)
    throw new TrickleError('INVALID_ARGUMENT', 'no receipt purchase of this client timed out with this payment id', {
      details: { paymentId },
    });
  let sig = sigs.get(paymentId);
  if (sig === undefined)
    sig = await new Promise<SignatureHex | boolean | undefined>((resolve, reject) => {
      const { timeoutMs = Infinity } = options;
      const timer =
        timeoutMs === Infinity
          ? undefined
          : setTimeout(() => {
              off();
              reject(
                new TrickleError('TIMEOUT', 'the hub has not said yet whether it was delivered', {
                  details: { paymentId },
                }),
              );
            }, timeoutMs);
      // Listeners run in order: the book's (registered first) has filed the hub's answer when this one hears it.
      const off = client.onMessage((m) => {
        if (m.t !== 'receipt' || m.paymentId !== paymentId) return;
        clearTimeout(timer);
        off();
        resolve(sigs.get(paymentId));
      });
    });
  if (sig === false)
    throw new TrickleError('NO_ROUTE', 'not delivered: the hub refunded it', { details: { paymentId } });
  return checked(client, receipt, sig, options.verifier ?? nobleVerifier);
}
