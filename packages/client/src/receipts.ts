import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { randomBytes32 } from '@trickle/protocol/random';
import { TrickleError } from '@trickle/protocol/errors';
import { toBytes32 } from '@trickle/protocol/hex';
import { recoverReceiptSigner, resourceHash, type SignedReceipt } from '@trickle/protocol/receipt';
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

/** Signatures of receipts that arrived and were not yet claimed, per routed payment id (bounded). */
const MAX_UNCLAIMED = 10_000;
const books = new WeakMap<TrickleClient, Map<Bytes32, SignatureHex>>();

function bookOf(client: TrickleClient): Map<Bytes32, SignatureHex> {
  let book = books.get(client);
  if (!book) {
    const b = new Map<Bytes32, SignatureHex>();
    client.onMessage((m) => {
      if (m.t !== 'receipt' || !m.hubSig) return;
      if (b.size >= MAX_UNCLAIMED) b.delete(b.keys().next().value!);
      b.set(m.paymentId, signatureToHex(m.hubSig));
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
 *   is not the hub's
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
  const hub = client.hub;
  const request = { resource: resourceHash(args.resource), nonce, expiry: args.expiry };
  const paid = await channel.pay(args.amount, { to: args.to, receipt: request });
  const paymentId = paid.paymentId!;
  const sig = book.get(paymentId);
  book.delete(paymentId);
  if (!sig)
    throw new TrickleError('RECEIPT_MISSING', 'the payment was delivered but the hub sent no signed receipt', {
      details: { paymentId },
    });
  const signed: SignedReceipt = {
    receipt: {
      payer: client.address,
      payee: args.to,
      token: channel.record.params.token,
      amount: args.amount,
      ...request,
      paymentId,
    },
    sig,
  };
  const separator = domainSeparator(trickleDomain(hub.chainId, hub.adjudicator));
  if (recoverReceiptSigner(verifier, separator, signed) !== hub.hub)
    throw new TrickleError('BAD_SIGNATURE', 'the receipt is not signed by the hub');
  return signed;
}
