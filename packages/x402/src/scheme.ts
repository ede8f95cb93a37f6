import type { PaymentOption } from '@x402/core/http';
import type { Network } from '@x402/core/types';
import type { Address } from '@trickle/protocol/types';
import { isLifetime } from './lifetime.js';

/**
 * The `trickle-channel` x402 scheme, shared by its server and client halves.
 *
 * Requirements (`PAYMENT-REQUIRED` → `accepts[]`): `asset` is the channel token, `amount` the price in base units,
 * `payTo` the service's Trickle address, `maxTimeoutSeconds` the longest a receipt may live, and `extra` carries the
 * resource name the receipt must bind and the hub that vouches for payments ({@link TrickleExtra}).
 *
 * Payload (`PAYMENT-SIGNATURE` → `payload`): `{ receipt }`, the hub's signed receipt for a routed payment of exactly
 * `amount` of `asset` to `payTo` (`SignedReceiptJson` in @trickle/protocol/receipt).
 *
 * Flow: `upfront` — the channel already settled the payment, so the service "settles" before its handler by
 * checking the receipt offline and recording its nonce; `PAYMENT-RESPONSE` names the routed payment id as the
 * transaction. A failed check answers 402 with {@link TRICKLE_REASONS | a reason code} in `PAYMENT-RESPONSE`. When the
 * handler then fails (throws or answers ≥ 400), the service gives the nonce back (`trickle_released`): the payer paid
 * and got no content, so the same receipt buys the content on a retry, once.
 */
export const TRICKLE_SCHEME = 'trickle-channel';

/** Why a `trickle-channel` payment was refused (`errorReason` / `invalidReason`). Codes are API: never renamed. */
export const TRICKLE_REASONS = {
  /** The payload is not a receipt of the expected form. */
  malformed: 'trickle_malformed',
  /** The requirements name no resource (`extra.resource`) or another scheme. */
  badRequirements: 'trickle_bad_requirements',
  /** The receipt is not signed by the hub the service trusts. */
  notSignedByHub: 'trickle_not_signed_by_hub',
  /** The receipt pays somebody else: it was bought for another service. */
  wrongPayee: 'trickle_wrong_payee',
  /** The receipt is for another resource. */
  wrongResource: 'trickle_wrong_resource',
  /** The receipt is for another amount than the price. */
  wrongAmount: 'trickle_wrong_amount',
  /** The receipt is in another token than the one asked for. */
  wrongToken: 'trickle_wrong_token',
  /** The receipt expired. */
  expired: 'trickle_expired',
  /** The receipt lives longer than `maxTimeoutSeconds` allows (the service would have to remember it too long). */
  expiryTooFar: 'trickle_expiry_too_far',
  /**
   * The receipt expires no later than `extra.minExpiry`: the service keeps served nonces in memory since it last
   * started, and an earlier run of it could have served this receipt. Refused rather than possibly served twice; a
   * receipt expiring after `extra.minExpiry` is accepted (the client scheme buys such one).
   */
  expiryTooSoon: 'trickle_expiry_too_soon',
  /** The receipt's nonce was already served: one payment is never served twice. */
  replayed: 'trickle_replayed',
  /**
   * The service's memory of seen nonces is full of unexpired ones, or holds this payer's share of them (a tenth by
   * default): retry later with the same receipt (it was not recorded).
   */
  busy: 'trickle_busy',
  /** The service's nonce store failed (e.g. its database is down): nothing was served or recorded; retry. */
  storeFailure: 'trickle_store_failure',
  /** The payment header is of another x402 version than 2 (the only one this scheme speaks). */
  unsupportedVersion: 'trickle_unsupported_version',
  /**
   * Not a refusal of the request but the outcome of a failed handler (`PAYMENT-RESPONSE` of its error response): the
   * service took back the receipt's nonce, so the same receipt may be presented again until it expires.
   */
  released: 'trickle_released',
} as const;

/** A reason code from {@link TRICKLE_REASONS}. */
export type TrickleReason = (typeof TRICKLE_REASONS)[keyof typeof TRICKLE_REASONS];

/** `extra` of `trickle-channel` requirements. */
export interface TrickleExtra {
  /** The resource's name the receipt binds (keccak256 of it). Name it so that no two services share it. */
  readonly resource: string;
  /** The hub whose receipts the service accepts (added by the server scheme from the facilitator). */
  readonly hub?: Address;
  /** The hub's chain id (decimal) and adjudicator: the receipt's EIP-712 domain. */
  readonly chainId?: string;
  readonly adjudicator?: Address;
  /**
   * Unix seconds (decimal): a receipt must expire after this (added by the server scheme when the facilitator's nonce
   * store forgets at restarts, as the default in-memory one does). Any receipt an earlier run of the service accepted
   * expires by then, so none is served twice. It is one second beyond the window the service accepts when it
   * starts (now + `maxTimeoutSeconds` + its skew), within it from the next second on: a payer buys a receipt expiring
   * at `minExpiry` at once, and a payment arriving in the service's first second waits for the next one.
   */
  readonly minExpiry?: string;
}

/** Arguments of {@link tricklePaymentOption}. */
export interface TricklePaymentOptionArgs {
  /** CAIP-2 id of the hub's chain, e.g. `eip155:31337`. */
  readonly network: Network;
  /** The service's Trickle address (its device key). */
  readonly payTo: Address;
  /** The channel token (ERC20 address). */
  readonly token: Address;
  /** Price per request in base units. */
  readonly amount: bigint;
  /** The resource's name, e.g. `https://sensor-7.example/readings`. */
  readonly resource: string;
  /** How long a receipt may live, in seconds. Default 60. */
  readonly maxTimeoutSeconds?: number;
}

/**
 * One `accepts` entry of an x402 route for the `trickle-channel` scheme.
 * @returns a PaymentOption for `paymentMiddleware` routes
 * @throws RangeError for an amount that is not positive or a `maxTimeoutSeconds` that is not a positive integer
 * @example
 * ```ts
 * paymentMiddleware({ '/readings': { accepts: [tricklePaymentOption({ network, payTo, token, amount: 1_000n, resource: 'sensor-7/readings' })] } }, server);
 * ```
 */
export function tricklePaymentOption(args: TricklePaymentOptionArgs): PaymentOption {
  if (args.amount <= 0n) throw new RangeError('amount must be positive');
  if (args.maxTimeoutSeconds !== undefined && !isLifetime(args.maxTimeoutSeconds))
    throw new RangeError('maxTimeoutSeconds must be a positive integer (seconds)');
  const extra: TrickleExtra = { resource: args.resource };
  return {
    scheme: TRICKLE_SCHEME,
    network: args.network,
    payTo: args.payTo,
    price: { asset: args.token, amount: args.amount.toString() },
    maxTimeoutSeconds: args.maxTimeoutSeconds ?? 60,
    extra: { ...extra },
  };
}
