import type {
  PaymentPayloadContext,
  PaymentPayloadResult,
  PaymentRequirements,
  SchemeClientHooks,
  SchemeNetworkClient,
} from '@x402/core/types';
import type { ClientChannel, TrickleClient } from '@trickle/client';
import { payForReceipt } from '@trickle/client';
import { receiptFor } from '@trickle/client/receipts';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { toAddress } from '@trickle/protocol/hex';
import { resourceHash, signedReceiptToJson, type SignedReceipt } from '@trickle/protocol/receipt';
import type { Verifier } from '@trickle/protocol/signer';
import { MAX_UINT256, MAX_UINT64, type Address, type Bytes32 } from '@trickle/protocol/types';
import { TRICKLE_REASONS, TRICKLE_SCHEME } from './scheme.js';

export { TRICKLE_SCHEME } from './scheme.js';

/** Options of {@link TrickleChannelClientScheme}. */
export interface TrickleChannelClientOptions {
  /** A connected Trickle client. */
  readonly client: TrickleClient;
  /**
   * Pay from this channel (requirements in another token are refused, WRONG_CHANNEL); by default the first open
   * channel in the asked token with enough available.
   */
  readonly channel?: ClientChannel | undefined;
  /** Checks the hub's receipt signatures (pure JS by default). */
  readonly verifier?: Verifier | undefined;
  /** Unix time in ms (tests). */
  readonly now?: (() => number) | undefined;
}

/** Receipts a scheme remembers at most (the oldest are forgotten first; expired ones as soon as it next pays). */
export const MAX_KEPT_RECEIPTS = 1_000;
/** A receipt is reused only with at least this many seconds left before it expires. */
export const REUSE_MARGIN_SECONDS = 5n;
/**
 * How much further than `maxTimeoutSeconds` from now a service's `extra.minExpiry` may be (its clock skew allowance and
 * the difference of the two clocks); a later one is refused before paying.
 */
export const MAX_MIN_EXPIRY_EXCESS_SECONDS = 300n;

/** The service's reasons for refusing a receipt it will never take again (nothing was served). */
const SPENT: ReadonlySet<string> = new Set([
  TRICKLE_REASONS.replayed,
  TRICKLE_REASONS.expired,
  TRICKLE_REASONS.expiryTooFar,
  TRICKLE_REASONS.expiryTooSoon,
]);

/**
 * The service's answers that leave a receipt unspent: given back after a failed handler, or not recorded (busy, or its
 * nonce store failed).
 */
const UNSPENT: ReadonlySet<string> = new Set([
  TRICKLE_REASONS.released,
  TRICKLE_REASONS.busy,
  TRICKLE_REASONS.storeFailure,
]);

interface Kept {
  readonly signed: SignedReceipt;
  /** Paid for and not spent: the service gave it back, or it was delivered after its purchase timed out. */
  unused: boolean;
  /** Sent again by {@link TrickleChannelClientScheme} in place of a new payment. */
  reused: boolean;
}

/**
 * The client half of `trickle-channel` for `x402Client.register(network, …)`: pays the price to the service's
 * `payTo` through the hub (a routed payment on an open channel, no chain transaction) and hands the hub's signed
 * receipt to the service as the payment payload. The receipt expires half the requirement's `maxTimeoutSeconds`
 * (rounded up) from the next whole second: the service accepts an expiry from its now to now + `maxTimeoutSeconds`
 * (+ its skew), so an expiry in the middle of that window is accepted whether the payer's clock is ahead or behind the
 * service's by up to half of it (at the end of it, a payer clock a few seconds ahead got its paid receipt refused as
 * too far). When the requirements carry `extra.minExpiry` (a service that keeps served nonces in memory, shortly after
 * it started), the receipt expires no earlier than it: the service refuses earlier ones (`trickle_expiry_too_soon`)
 * and accepts it.
 *
 * A receipt paid for and not spent is reused rather than paid for again: one the service gave back because its handler
 * failed (`trickle_released`, seen by the scheme's `onPaymentResponse` hook) or did not record (`trickle_busy`,
 * `trickle_store_failure`), and
 * one whose purchase failed with `TIMEOUT` but that the hub delivered afterwards. It is reused for requirements it
 * satisfies exactly — this client paid, to the same `payTo`, in the same token, the same amount, for the same resource
 * name, through the hub and domain the requirements name (checked before any reuse) — with at least
 * {@link REUSE_MARGIN_SECONDS} left and an expiry within their `maxTimeoutSeconds`; never for another payee, amount,
 * token or resource. The service binds a receipt to exactly these, so the URL or method of the retry does not matter to
 * it. Each is handed out once: if the service then refuses it as spent (`trickle_replayed`, `trickle_expired`,
 * `trickle_expiry_too_far`, nothing served), the hook asks the stock client to retry once with a fresh payment.
 * Receipts live in this object's memory only (at most {@link MAX_KEPT_RECEIPTS}).
 * @example
 * ```ts
 * const x402 = new x402Client().register('eip155:31337', new TrickleChannelClientScheme({ client }));
 * const paidFetch = wrapFetchWithPayment(fetch, x402);
 * ```
 */
export class TrickleChannelClientScheme implements SchemeNetworkClient {
  readonly scheme = TRICKLE_SCHEME;
  readonly #opts: TrickleChannelClientOptions;
  /** Receipts this scheme bought, by nonce, oldest first (bounded). */
  readonly #kept = new Map<Bytes32, Kept>();
  /** Read by `x402Client.register`: the hook that learns which receipts the service gave back. */
  readonly schemeHooks: SchemeClientHooks = {
    onPaymentResponse: async (ctx) => {
      const nonce = (ctx.paymentPayload.payload?.['receipt'] as { nonce?: unknown } | undefined)?.nonce;
      const kept = typeof nonce === 'string' ? this.#kept.get(nonce as Bytes32) : undefined;
      if (!kept) return;
      const settled = ctx.settleResponse;
      const reused = kept.reused;
      kept.reused = false;
      if (settled?.success === false && UNSPENT.has(settled.errorReason ?? '')) kept.unused = true;
      // A reused receipt the service would not take (served elsewhere meanwhile, or expired on the way): nothing was
      // served, so a fresh payment is worth one retry.
      else if (reused && settled?.success === false && SPENT.has(settled.errorReason ?? '')) return { recovered: true };
    },
  };

  constructor(options: TrickleChannelClientOptions) {
    this.#opts = options;
  }

  /** Remember a receipt this scheme bought (`unused`: paid for and not yet presented). */
  #keep(signed: SignedReceipt, unused: boolean): void {
    this.#kept.delete(signed.receipt.nonce);
    if (this.#kept.size >= MAX_KEPT_RECEIPTS) this.#kept.delete(this.#kept.keys().next().value!);
    this.#kept.set(signed.receipt.nonce, { signed, unused, reused: false });
  }

  /** An unused receipt that satisfies exactly these terms and lives long enough, taken (handed out once). */
  #take(
    payTo: Address,
    token: Address,
    amount: bigint,
    resource: string,
    now: bigint,
    maxSeconds: number,
    minExpiry: bigint,
  ) {
    const hash = resourceHash(resource);
    for (const [nonce, k] of this.#kept) {
      const r = k.signed.receipt;
      if (r.expiry <= now) this.#kept.delete(nonce);
      else if (
        k.unused &&
        r.payer === this.#opts.client.address &&
        r.payee === payTo &&
        r.token === token &&
        r.amount === amount &&
        r.resource === hash &&
        r.expiry > now + REUSE_MARGIN_SECONDS &&
        r.expiry >= minExpiry &&
        (r.expiry <= now + BigInt(maxSeconds) || r.expiry === minExpiry)
      ) {
        k.unused = false;
        k.reused = true;
        return k.signed;
      }
    }
    return undefined;
  }

  /**
   * @throws TrickleError WRONG_CHANNEL (another hub, another chain or adjudicator than the hub's, no channel in the
   *   token, a pinned `channel` in another token), LIMIT_EXCEEDED (above the x402 client's spend cap),
   *   INVALID_ARGUMENT (requirements without a resource, an amount that is not a positive uint256 in base units, a
   *   `maxTimeoutSeconds` that is not a positive integer, an `extra.minExpiry` that is not a decimal uint64 or is more
   *   than {@link MAX_MIN_EXPIRY_EXCESS_SECONDS} beyond `maxTimeoutSeconds` from now),
   *   MALFORMED (`payTo` or `asset` not an address) — each before anything is paid — and what `payForReceipt` throws
   */
  async createPaymentPayload(
    x402Version: number,
    req: PaymentRequirements,
    context?: PaymentPayloadContext,
  ): Promise<PaymentPayloadResult> {
    const { client } = this.#opts;
    const resource = req.extra?.['resource'];
    if (typeof resource !== 'string' || resource.length === 0)
      throw new TrickleError('INVALID_ARGUMENT', 'trickle-channel requirements name no resource');
    const hub = req.extra?.['hub'];
    if (typeof hub !== 'string' || toAddress(hub) !== client.hub.hub) {
      throw new TrickleError(
        'WRONG_CHANNEL',
        'the service trusts another hub than the one this client is connected to',
        { details: { hub } },
      );
    }
    // The receipt is signed under the hub's domain (chain id, adjudicator): a service that checks it under another
    // domain refuses it, and the money would already be paid. Refuse such requirements before paying.
    const { chainId, adjudicator } = client.hub;
    const extraChainId = req.extra?.['chainId'];
    const extraAdjudicator = req.extra?.['adjudicator'];
    if (
      req.network !== `eip155:${chainId}` ||
      (extraChainId !== undefined && extraChainId !== chainId.toString()) ||
      (extraAdjudicator !== undefined &&
        (typeof extraAdjudicator !== 'string' || extraAdjudicator.toLowerCase() !== adjudicator.toLowerCase()))
    ) {
      throw new TrickleError(
        'WRONG_CHANNEL',
        "the service checks receipts on another chain or adjudicator than the hub's",
        {
          details: { network: req.network, chainId: extraChainId, adjudicator: extraAdjudicator },
        },
      );
    }
    // A receipt that cannot live (expiry not after now, or not a uint64) would be refused after paying.
    if (!Number.isSafeInteger(req.maxTimeoutSeconds) || req.maxTimeoutSeconds < 1)
      throw new TrickleError('INVALID_ARGUMENT', 'maxTimeoutSeconds must be a positive integer', {
        details: { maxTimeoutSeconds: req.maxTimeoutSeconds },
      });
    if (typeof req.amount !== 'string' || !/^[1-9][0-9]{0,77}$/.test(req.amount) || BigInt(req.amount) > MAX_UINT256)
      throw new TrickleError('INVALID_ARGUMENT', 'amount must be a positive integer in base units', {
        details: { amount: req.amount },
      });
    const amount = BigInt(req.amount);
    const nowMs = (this.#opts.now ?? Date.now)();
    const now = BigInt(Math.floor(nowMs / 1000));
    // A service that forgets served nonces at restarts accepts, for a while after it started, only receipts expiring
    // after extra.minExpiry (TrickleExtra.minExpiry); it then accepts that expiry though it is further away than
    // maxTimeoutSeconds.
    const minExpiry = req.extra?.['minExpiry'];
    if (
      minExpiry !== undefined &&
      (typeof minExpiry !== 'string' || !/^[0-9]{1,20}$/.test(minExpiry) || BigInt(minExpiry) > MAX_UINT64)
    )
      throw new TrickleError('INVALID_ARGUMENT', 'extra.minExpiry must be unix seconds (a uint64, decimal)', {
        details: { minExpiry },
      });
    const least = minExpiry === undefined ? 0n : BigInt(minExpiry);
    if (least > now + BigInt(req.maxTimeoutSeconds) + MAX_MIN_EXPIRY_EXCESS_SECONDS)
      throw new TrickleError('INVALID_ARGUMENT', 'extra.minExpiry is further away than the service could need', {
        details: { minExpiry, maxTimeoutSeconds: req.maxTimeoutSeconds },
      });
    if (context?.maxAmountPerPayment !== undefined && amount > BigInt(context.maxAmountPerPayment)) {
      throw new TrickleError('LIMIT_EXCEEDED', 'price above the spend cap', {
        details: { amount, cap: context.maxAmountPerPayment },
      });
    }
    const token = toAddress(req.asset);
    // A pinned channel pays in its own token: a receipt in another token than the asked one would be refused after
    // paying (trickle_wrong_token).
    const pinned = this.#opts.channel;
    if (pinned && pinned.record.params.token !== token)
      throw new TrickleError('WRONG_CHANNEL', "the service asks for another token than the pinned channel's", {
        details: { token, channelToken: pinned.record.params.token },
      });
    const payTo = toAddress(req.payTo);
    const unused = this.#take(payTo, token, amount, resource, now, req.maxTimeoutSeconds, least);
    if (unused) return { x402Version, payload: { receipt: signedReceiptToJson(unused) } };
    const channel =
      pinned ??
      client
        .channels()
        .find(
          (c) =>
            c.record.params.token === token &&
            !c.record.closing &&
            !c.latest.state.isFinal &&
            c.balance().available >= amount,
        );
    if (!channel)
      throw new TrickleError('WRONG_CHANNEL', 'no open channel in this token with enough balance', {
        details: { token, amount },
      });
    // From the next whole second: counted from `now` (rounded down), a receipt bought late in a second lived up to a
    // second less than half the window, next to nothing on a route of one or two seconds (refused as expired, paid).
    let expiry = BigInt(Math.ceil(nowMs / 1000)) + BigInt(Math.ceil(req.maxTimeoutSeconds / 2));
    if (expiry < least) expiry = least;
    const lifetime = expiry - now;
    let signed: SignedReceipt;
    try {
      signed = await payForReceipt(client, channel, { to: payTo, amount, resource, expiry }, this.#opts.verifier);
    } catch (e) {
      // Taken by the hub, outcome not heard in time: if it is delivered after all, a retry reuses its receipt. Waited
      // for while the receipt lives (it is of no use after).
      const paymentId = isTrickleError(e, 'TIMEOUT') ? (e.details['paymentId'] as Bytes32 | undefined) : undefined;
      if (paymentId)
        receiptFor(client, paymentId, {
          verifier: this.#opts.verifier,
          // (past what a timer holds, ~24.8 days, receiptFor waits without bound)
          timeoutMs: Number(lifetime) * 1000,
        }).then(
          (late) => this.#keep(late, true),
          // Refunded (NO_ROUTE: the money is back in the channel) or not delivered while it lived: nothing to keep.
          () => undefined,
        );
      throw e;
    }
    this.#keep(signed, false);
    return { x402Version, payload: { receipt: signedReceiptToJson(signed) } };
  }
}
