import type { FacilitatorClient } from '@x402/core/server';
import type {
  AssetAmount,
  Network,
  PaymentPayload,
  PaymentRequirements,
  Price,
  SchemeNetworkServer,
  SettleResponse,
  SupportedKind,
  SupportedResponse,
  VerifiedPaymentCanceledContext,
  VerifyResponse,
} from '@x402/core/types';
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { toAddress } from '@trickle/protocol/hex';
import {
  recoverReceiptSigner,
  resourceHash,
  signedReceiptFromJson,
  type SignedReceipt,
} from '@trickle/protocol/receipt';
import { nobleVerifier, type Verifier } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { TRICKLE_REASONS, TRICKLE_SCHEME, type TrickleReason } from './scheme.js';

export {
  TRICKLE_REASONS,
  TRICKLE_SCHEME,
  tricklePaymentOption,
  type TrickleExtra,
  type TricklePaymentOptionArgs,
  type TrickleReason,
} from './scheme.js';

/**
 * Requirements objects made by {@link TrickleChannelServerScheme.settleOnCancel}: a {@link TrickleFacilitator} given
 * one of these to settle gives the receipt's nonce back instead of recording it. Only this module creates them (the
 * stock server passes the object it got from `settleOnCancel` to the facilitator as is), so neither a payer nor a
 * route's configuration can ask for a release.
 */
const releases = new WeakSet<PaymentRequirements>();

/**
 * The server half of `trickle-channel` for `x402ResourceServer.register(network, …)`. It builds requirements (prices
 * are `{ asset, amount }` in base units, never dollar strings: a channel token has no implied decimals) and adds the
 * hub's identity from the {@link TrickleFacilitator}'s supported kind.
 * @example
 * ```ts
 * const server = new x402ResourceServer(facilitator).register('eip155:31337', new TrickleChannelServerScheme());
 * ```
 */
export class TrickleChannelServerScheme implements SchemeNetworkServer {
  readonly scheme = TRICKLE_SCHEME;
  readonly defaultAssetTransferMethod = 'default';
  /** The channel settled the payment before the request: verify and record it before the handler, nothing after. */
  readonly paymentFlows = { default: { supported: ['upfront'] as const, default: 'upfront' as const } };

  /** @throws Error for a money string: give `{ asset, amount }` in base units */
  async parsePrice(price: Price, network: Network): Promise<AssetAmount> {
    if (
      typeof price === 'object' &&
      price !== null &&
      typeof price.amount === 'string' &&
      typeof price.asset === 'string'
    ) {
      if (!/^[1-9][0-9]*$/.test(price.amount))
        throw new Error(`trickle-channel: amount must be a positive integer in base units, got ${price.amount}`);
      return { amount: price.amount, asset: toAddress(price.asset), extra: price.extra ?? {} };
    }
    throw new Error(`trickle-channel on ${network}: price must be { asset, amount } in base units`);
  }

  /**
   * The handler failed (threw or answered ≥ 400) after the receipt was recorded: the payer paid and got no content.
   * The money is already in the service's channel and cannot be handed back here, so the service gives back the
   * receipt's nonce instead: the same receipt buys the content on a retry, once, until it expires. The stock server
   * settles the returned requirements with the facilitator, which releases the nonce (`trickle_released`).
   */
  settleOnCancel(context: VerifiedPaymentCanceledContext): PaymentRequirements {
    const release = { ...context.requirements };
    releases.add(release);
    return release;
  }

  async enhancePaymentRequirements(
    requirements: PaymentRequirements,
    kind: SupportedKind,
  ): Promise<PaymentRequirements> {
    return { ...requirements, payTo: toAddress(requirements.payTo), extra: { ...requirements.extra, ...kind.extra } };
  }
}

/** Options of {@link TrickleFacilitator}; defaults in {@link DEFAULT_FACILITATOR_OPTIONS}. */
export interface TrickleFacilitatorOptions {
  /** The hub whose receipts are accepted. */
  readonly hub: Address;
  /** The hub's chain id and adjudicator (the receipts' EIP-712 domain). */
  readonly chainId: bigint;
  readonly adjudicator: Address;
  /** CAIP-2 network id; default `eip155:<chainId>`. */
  readonly network?: Network;
  /** Checks the hub's signatures (pure JS by default; pass `bestVerifier()` where libsecp256k1 is installed). */
  readonly verifier?: Verifier;
  /** Unix time in ms (tests). */
  readonly now?: () => number;
  /** Nonces remembered at most (each until its receipt expires). */
  readonly maxNonces?: number;
  /** Tolerated clock difference with payers, seconds. */
  readonly clockSkewSeconds?: number;
}

export const DEFAULT_FACILITATOR_OPTIONS = { maxNonces: 100_000, clockSkewSeconds: 5 } as const;

type Check =
  { ok: true; signed: SignedReceipt } | { ok: false; reason: TrickleReason; message: string; payer?: string };

/**
 * An in-process x402 facilitator for `trickle-channel`: verifies the hub's receipt offline (its signature against
 * the hub's address, then payee, token, amount, resource, expiry) and keeps every nonce it served until the receipt
 * expires, so a payment is never served twice. Memory is bounded: at most `maxNonces` unexpired receipts, and a
 * receipt may not live longer than the route's `maxTimeoutSeconds`. Settling makes no chain call and no call to the
 * hub: the channel already moved the money.
 *
 * Pass it to `new x402ResourceServer([trickleFacilitator, otherFacilitator])` next to an `exact` facilitator to
 * offer both schemes.
 */
export class TrickleFacilitator implements FacilitatorClient {
  readonly #hub: Address;
  readonly #network: Network;
  readonly #chainId: bigint;
  readonly #adjudicator: Address;
  readonly #separator: Uint8Array;
  readonly #verifier: Verifier;
  readonly #now: () => number;
  readonly #maxNonces: number;
  readonly #skew: bigint;
  /** Served nonces and their receipts' expiry (unix seconds). */
  readonly #seen = new Map<Bytes32, bigint>();

  constructor(options: TrickleFacilitatorOptions) {
    const maxNonces = options.maxNonces ?? DEFAULT_FACILITATOR_OPTIONS.maxNonces;
    const skew = options.clockSkewSeconds ?? DEFAULT_FACILITATOR_OPTIONS.clockSkewSeconds;
    if (!Number.isInteger(maxNonces) || maxNonces < 1) throw new RangeError('maxNonces must be a positive integer');
    if (!Number.isInteger(skew) || skew < 0) throw new RangeError('clockSkewSeconds must be a non-negative integer');
    this.#hub = toAddress(options.hub);
    this.#chainId = options.chainId;
    this.#adjudicator = toAddress(options.adjudicator);
    this.#network = options.network ?? (`eip155:${options.chainId}` as Network);
    this.#separator = domainSeparator(trickleDomain(options.chainId, this.#adjudicator));
    this.#verifier = options.verifier ?? nobleVerifier;
    this.#now = options.now ?? Date.now;
    this.#maxNonces = maxNonces;
    this.#skew = BigInt(skew);
  }

  /** Nonces currently remembered. */
  get rememberedNonces(): number {
    return this.#seen.size;
  }

  async getSupported(): Promise<SupportedResponse> {
    return {
      kinds: [
        {
          x402Version: 2,
          scheme: TRICKLE_SCHEME,
          network: this.#network,
          extra: { hub: this.#hub, chainId: this.#chainId.toString(), adjudicator: this.#adjudicator },
        },
      ],
      extensions: [],
      signers: {},
    };
  }

  /** Check a payment without recording it. */
  async verify(payload: PaymentPayload, requirements: PaymentRequirements): Promise<VerifyResponse> {
    const c = this.#check(payload, requirements);
    return c.ok
      ? { isValid: true, payer: c.signed.receipt.payer }
      : { isValid: false, invalidReason: c.reason, invalidMessage: c.message, payer: c.payer };
  }

  /**
   * Check a payment and record its nonce: the same receipt is refused from then on until it expires. Given the
   * requirements of {@link TrickleChannelServerScheme.settleOnCancel} (the handler failed), check it likewise and
   * forget its nonce instead (`errorReason` `trickle_released`, the receipt may be presented again).
   */
  async settle(payload: PaymentPayload, requirements: PaymentRequirements): Promise<SettleResponse> {
    if (releases.has(requirements)) return this.#release(payload, requirements);
    const c = this.#check(payload, requirements);
    if (c.ok) {
      const r = c.signed.receipt;
      if (!this.#remember(r.nonce, r.expiry))
        return this.#unsettled(TRICKLE_REASONS.busy, 'too many unexpired receipts remembered', r.payer);
      return {
        success: true,
        payer: r.payer,
        transaction: r.paymentId,
        network: this.#network,
        amount: r.amount.toString(),
      };
    }
    return this.#unsettled(c.reason, c.message, c.payer);
  }

  /** A settle response that took no payment. */
  #unsettled(errorReason: TrickleReason, errorMessage: string, payer: string | undefined): SettleResponse {
    return { success: false, errorReason, errorMessage, payer, transaction: '', network: this.#network };
  }

  #release(payload: PaymentPayload, requirements: PaymentRequirements): SettleResponse {
    const c = this.#check(payload, requirements, true);
    if (!c.ok) return this.#unsettled(c.reason, c.message, c.payer);
    this.#seen.delete(c.signed.receipt.nonce);
    return this.#unsettled(
      TRICKLE_REASONS.released,
      'the handler failed: the receipt may be presented again until it expires',
      c.signed.receipt.payer,
    );
  }

  /** @param released - a release: a nonce already recorded is not a replay */
  #check(payload: PaymentPayload, req: PaymentRequirements, released = false): Check {
    const fail = (reason: TrickleReason, message: string, payer?: string): Check => ({
      ok: false,
      reason,
      message,
      payer,
    });
    if (payload.x402Version !== 2)
      return fail(TRICKLE_REASONS.unsupportedVersion, 'trickle-channel payments are x402 version 2');
    if (req.scheme !== TRICKLE_SCHEME || req.network !== this.#network)
      return fail(TRICKLE_REASONS.badRequirements, 'not a trickle-channel requirement of this network');
    const resource = req.extra?.['resource'];
    if (typeof resource !== 'string' || resource.length === 0)
      return fail(TRICKLE_REASONS.badRequirements, 'requirements name no resource (extra.resource)');
    let signed: SignedReceipt;
    try {
      signed = signedReceiptFromJson(payload.payload?.['receipt']);
    } catch {
      return fail(TRICKLE_REASONS.malformed, 'payload.receipt is not a signed receipt');
    }
    const r = signed.receipt;
    let signer: Address | undefined;
    try {
      signer = recoverReceiptSigner(this.#verifier, this.#separator, signed);
    } catch {
      signer = undefined;
    }
    if (signer !== this.#hub)
      return fail(TRICKLE_REASONS.notSignedByHub, 'the receipt is not signed by the hub', r.payer);
    let payTo: Address;
    let asset: Address;
    try {
      payTo = toAddress(req.payTo);
      asset = toAddress(req.asset);
    } catch {
      return fail(TRICKLE_REASONS.badRequirements, 'payTo and asset must be addresses');
    }
    if (r.payee !== payTo) return fail(TRICKLE_REASONS.wrongPayee, 'the receipt pays another payee', r.payer);
    if (r.token !== asset) return fail(TRICKLE_REASONS.wrongToken, 'the receipt is in another token', r.payer);
    if (r.amount.toString() !== req.amount)
      return fail(TRICKLE_REASONS.wrongAmount, 'the receipt is for another amount', r.payer);
    if (r.resource !== resourceHash(resource))
      return fail(TRICKLE_REASONS.wrongResource, 'the receipt is for another resource', r.payer);
    const now = BigInt(Math.floor(this.#now() / 1000));
    if (r.expiry <= now) return fail(TRICKLE_REASONS.expired, 'the receipt expired', r.payer);
    if (r.expiry > now + BigInt(req.maxTimeoutSeconds) + this.#skew)
      return fail(TRICKLE_REASONS.expiryTooFar, 'the receipt lives longer than maxTimeoutSeconds', r.payer);
    const seen = this.#seen.get(r.nonce);
    if (!released && seen !== undefined && seen > now)
      return fail(TRICKLE_REASONS.replayed, 'this receipt was already served', r.payer);
    return { ok: true, signed };
  }

  /** Record a served nonce; false when full of unexpired ones. */
  #remember(nonce: Bytes32, expiry: bigint): boolean {
    if (this.#seen.size >= this.#maxNonces) {
      const now = BigInt(Math.floor(this.#now() / 1000));
      for (const [n, e] of this.#seen) if (e <= now) this.#seen.delete(n);
      if (this.#seen.size >= this.#maxNonces) return false;
    }
    this.#seen.set(nonce, expiry);
    return true;
  }
}
