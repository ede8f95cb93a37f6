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
import { isLifetime } from './lifetime.js';
import { memoryNonceStore, memoryStores, type MemoryNonceStore, type NonceClaim, type NonceStore } from './nonces.js';

export {
  memoryNonceStore,
  postgresNonceStore,
  type MemoryNonceStore,
  type MemoryNonceStoreOptions,
  type NonceClaim,
  type NonceStore,
  type Queryable,
} from './nonces.js';

export { paymentHeaderGuard, type GuardedRequest, type PaymentHeaderGuardOptions } from './guard.js';

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
  /**
   * Left out when the stock server matches a payment's `accepted` to this route: `minExpiry` is each process's own
   * (from its start), and a payment built on one process's 402 may reach another process of the same service, whose
   * facilitator checks the expiry against its own bound all the same.
   */
  readonly dynamicExtraFields = ['minExpiry'];

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

  /**
   * Adds the hub's identity and, for a facilitator whose nonce store forgets at restarts, `extra.minExpiry`: the
   * earliest expiry it accepts for this route ({@link TrickleExtra.minExpiry}).
   * @throws Error for a route whose `maxTimeoutSeconds` is not a positive integer (no 402 is built: a payer would pay
   *   and then be refused)
   */
  async enhancePaymentRequirements(
    requirements: PaymentRequirements,
    kind: SupportedKind,
  ): Promise<PaymentRequirements> {
    const { replayHorizon, ...identity } = kind.extra ?? {};
    const extra: Record<string, unknown> = { ...requirements.extra, ...identity };
    if (!isLifetime(requirements.maxTimeoutSeconds))
      throw new Error(
        `trickle-channel: maxTimeoutSeconds must be a positive integer, got ${requirements.maxTimeoutSeconds}`,
      );
    if (typeof replayHorizon === 'string')
      extra['minExpiry'] = minExpiry(BigInt(replayHorizon), requirements.maxTimeoutSeconds).toString();
    return { ...requirements, payTo: toAddress(requirements.payTo), extra };
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
  /** Nonces remembered at most (each until its receipt expires) by the default in-process store. */
  readonly maxNonces?: number;
  /**
   * Where served nonces are remembered: default an in-process {@link memoryNonceStore} of `maxNonces`. Give a
   * {@link postgresNonceStore} to a service run as several processes, or restarted within its receipts' lifetime.
   */
  readonly nonces?: NonceStore;
  /** Tolerated clock difference with payers, seconds. */
  readonly clockSkewSeconds?: number;
  /**
   * Told why the nonce store failed (it threw, or answered outside its contract) each time a payment is refused
   * `trickle_store_failure` for it; default `console.error`. The payer is told only that the service could not
   * record the receipt: a database's error text (hosts, users, table names) is the service's, not the payer's.
   */
  readonly onStoreError?: (error: unknown, payer: Address) => void;
}

export const DEFAULT_FACILITATOR_OPTIONS = { maxNonces: 100_000, clockSkewSeconds: 5 } as const;

type Check =
  { ok: true; signed: SignedReceipt } | { ok: false; reason: TrickleReason; message: string; payer?: string };
type Refusal = Extract<Check, { ok: false }>;

/**
 * An in-process x402 facilitator for `trickle-channel`: verifies the hub's receipt offline (its signature against
 * the hub's address, then payee, token, amount, resource, expiry) and keeps every nonce it served until the receipt
 * expires, so a payment is never served twice. Where it keeps them is its {@link NonceStore}: by default in memory,
 * bounded (at most `maxNonces` unexpired receipts); a {@link postgresNonceStore} for a service of several processes
 * or one restarted. A receipt may not live longer than the route's `maxTimeoutSeconds`. Settling makes no chain call and no call to the
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
  readonly #skew: bigint;
  /** Served nonces until their receipts' expiry. */
  readonly #nonces: NonceStore;
  /** The store when it is an in-process one (the default, or a given {@link memoryNonceStore}). */
  readonly #memory: MemoryNonceStore | undefined;
  readonly #onStoreError: (error: unknown, payer: Address) => void;

  constructor(options: TrickleFacilitatorOptions) {
    const skew = options.clockSkewSeconds ?? DEFAULT_FACILITATOR_OPTIONS.clockSkewSeconds;
    if (options.nonces && options.maxNonces !== undefined)
      throw new RangeError('maxNonces bounds the default store: give it to that store, not next to `nonces`');
    this.#nonces =
      options.nonces ??
      memoryNonceStore({ maxNonces: options.maxNonces ?? DEFAULT_FACILITATOR_OPTIONS.maxNonces, now: options.now });
    this.#memory = memoryStores.has(this.#nonces) ? (this.#nonces as MemoryNonceStore) : undefined;
    if (!Number.isInteger(skew) || skew < 0) throw new RangeError('clockSkewSeconds must be a non-negative integer');
    this.#hub = toAddress(options.hub);
    this.#chainId = options.chainId;
    this.#adjudicator = toAddress(options.adjudicator);
    this.#network = options.network ?? (`eip155:${options.chainId}` as Network);
    this.#separator = domainSeparator(trickleDomain(options.chainId, this.#adjudicator));
    this.#verifier = options.verifier ?? nobleVerifier;
    this.#now = options.now ?? Date.now;
    this.#skew = BigInt(skew);
    this.#onStoreError =
      options.onStoreError ??
      ((error, payer) => console.error(`trickle-channel: the nonce store failed (payer ${payer}):`, error));
  }

  /** Nonces currently remembered by an in-process store (the default or a {@link memoryNonceStore}; else undefined). */
  get rememberedNonces(): number | undefined {
    return this.#memory?.size;
  }

  async getSupported(): Promise<SupportedResponse> {
    const horizon = this.#replayHorizon();
    return {
      kinds: [
        {
          x402Version: 2,
          scheme: TRICKLE_SCHEME,
          network: this.#network,
          extra: {
            hub: this.#hub,
            chainId: this.#chainId.toString(),
            adjudicator: this.#adjudicator,
            // Read by TrickleChannelServerScheme, which turns it into each route's extra.minExpiry.
            ...(horizon === undefined ? {} : { replayHorizon: horizon.toString() }),
          },
        },
      ],
      extensions: [],
      signers: {},
    };
  }

  /** Check a payment without recording it. */
  async verify(payload: PaymentPayload, requirements: PaymentRequirements): Promise<VerifyResponse> {
    await this.#pastFirstSecond();
    let c = this.#check(payload, requirements);
    if (c.ok) {
      const r = c.signed.receipt;
      try {
        const served: unknown = await this.#nonces.served(r.nonce, this.#nowSec());
        if (typeof served !== 'boolean') throw unexpectedAnswer('served', served);
        if (served) c = replayed(r.payer);
      } catch (e) {
        c = this.#storeFailed(e, r.payer);
      }
    }
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
    await this.#pastFirstSecond();
    const c = this.#check(payload, requirements);
    if (c.ok) {
      const r = c.signed.receipt;
      let claim: NonceClaim;
      try {
        const answer: unknown = await this.#nonces.claim(r.nonce, r.expiry, this.#nowSec(), r.payer);
        // Anything but the three answers (a store of the service's own that returns nothing, say) serves nothing: read
        // as 'claimed', a store that never records would serve one receipt any number of times.
        if (answer !== 'claimed' && answer !== 'replayed' && answer !== 'full') throw unexpectedAnswer('claim', answer);
        claim = answer;
      } catch (e) {
        const f = this.#storeFailed(e, r.payer);
        return this.#unsettled(f.reason, f.message, f.payer);
      }
      if (claim === 'full')
        return this.#unsettled(
          TRICKLE_REASONS.busy,
          "too many unexpired receipts remembered (in all, or of this payer: its share of the service's memory)",
          r.payer,
        );
      if (claim === 'replayed') return this.#unsettled(TRICKLE_REASONS.replayed, REPLAYED, r.payer);
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

  async #release(payload: PaymentPayload, requirements: PaymentRequirements): Promise<SettleResponse> {
    const c = this.#check(payload, requirements);
    if (!c.ok) return this.#unsettled(c.reason, c.message, c.payer);
    try {
      await this.#nonces.release(c.signed.receipt.nonce);
    } catch (e) {
      // Not forgotten: the receipt stays served (the payer cannot retry with it), and the service is told why.
      const f = this.#storeFailed(e, c.signed.receipt.payer);
      return this.#unsettled(f.reason, f.message, f.payer);
    }
    return this.#unsettled(
      TRICKLE_REASONS.released,
      'the handler failed: the receipt may be presented again until it expires',
      c.signed.receipt.payer,
    );
  }

  /**
   * Receipts accepted before the nonce store's memory begins expired by this + the route's `maxTimeoutSeconds`
   * (they were accepted at most that far, plus the skew, from their expiry); undefined for a store that never forgets.
   */
  #replayHorizon(): bigint | undefined {
    const since = this.#nonces.rememberedSince;
    return since === undefined ? undefined : since + this.#skew;
  }

  /**
   * In the second the store's memory began, no expiry is acceptable yet: minExpiry lies one second beyond the window
   * (now + maxTimeoutSeconds + skew). A payment that arrives then waits for the next second (less than one) instead of
   * being refused after the payer paid.
   */
  async #pastFirstSecond(): Promise<void> {
    const since = this.#nonces.rememberedSince;
    if (since === undefined) return;
    const wait = Number(since + 1n) * 1000 - this.#now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(wait, 1000)));
  }

  /** The refusal for a store that failed; the cause goes to `onStoreError`, never to the payer. */
  #storeFailed(e: unknown, payer: Address): Refusal {
    try {
      this.#onStoreError(e, payer);
    } catch {
      // a throwing hook does not turn the refusal into a thrown error the stock server would answer 500
    }
    return {
      ok: false,
      reason: TRICKLE_REASONS.storeFailure,
      message: 'the service could not check or record the receipt: nothing was served, retry',
      payer,
    };
  }

  #nowSec(): bigint {
    return BigInt(Math.floor(this.#now() / 1000));
  }

  /** Everything but the replay check (the nonce store's). */
  #check(payload: PaymentPayload, req: PaymentRequirements): Check {
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
    if (!isLifetime(req.maxTimeoutSeconds))
      return fail(TRICKLE_REASONS.badRequirements, 'maxTimeoutSeconds must be a positive integer');
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
    const now = this.#nowSec();
    if (r.expiry <= now) return fail(TRICKLE_REASONS.expired, 'the receipt expired', r.payer);
    const horizon = this.#replayHorizon();
    const least = horizon === undefined ? undefined : minExpiry(horizon, req.maxTimeoutSeconds);
    if (least !== undefined && r.expiry < least)
      return fail(
        TRICKLE_REASONS.expiryTooSoon,
        `the service restarted recently: it accepts receipts expiring from ${least} on`,
        r.payer,
      );
    // Never further than the usual window, even for minExpiry: a window widened after a start would let a run that
    // restarts within it accept expiries its successor could not tell from its own.
    if (r.expiry > now + BigInt(req.maxTimeoutSeconds) + this.#skew)
      return fail(TRICKLE_REASONS.expiryTooFar, 'the receipt lives longer than maxTimeoutSeconds', r.payer);
    return { ok: true, signed };
  }
}

const REPLAYED = 'this receipt was already served';

/** The earliest expiry accepted for a route of `maxTimeoutSeconds` by a facilitator whose memory begins at `horizon`. */
function minExpiry(horizon: bigint, maxTimeoutSeconds: number): bigint {
  return horizon + BigInt(maxTimeoutSeconds) + 1n;
}

function replayed(payer: string): Refusal {
  return { ok: false, reason: TRICKLE_REASONS.replayed, message: REPLAYED, payer };
}

/** A nonce store's answer outside its contract, as the error it is refused with. */
function unexpectedAnswer(method: 'served' | 'claim', answer: unknown): Error {
  const shown = typeof answer === 'string' ? JSON.stringify(answer.slice(0, 40)) : typeof answer;
  return new Error(`the nonce store's ${method}() answered ${shown}`);
}
