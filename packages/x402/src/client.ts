import type {
  PaymentPayloadContext,
  PaymentPayloadResult,
  PaymentRequirements,
  SchemeNetworkClient,
} from '@x402/core/types';
import type { ClientChannel, TrickleClient } from '@trickle/client';
import { payForReceipt } from '@trickle/client';
import { TrickleError } from '@trickle/protocol/errors';
import { toAddress } from '@trickle/protocol/hex';
import { signedReceiptToJson } from '@trickle/protocol/receipt';
import type { Verifier } from '@trickle/protocol/signer';
import { MAX_UINT256 } from '@trickle/protocol/types';
import { TRICKLE_SCHEME } from './scheme.js';

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

/**
 * The client half of `trickle-channel` for `x402Client.register(network, …)`: pays the price to the service's
 * `payTo` through the hub (a routed payment on an open channel, no chain transaction) and hands the hub's signed
 * receipt to the service as the payment payload. The receipt expires half the requirement's `maxTimeoutSeconds`
 * (rounded up) from now: the service accepts an expiry from its now to now + `maxTimeoutSeconds` (+ its skew), so an
 * expiry in the middle of that window is accepted whether the payer's clock is ahead or behind the service's by up to
 * half of it (at the end of it, a payer clock a few seconds ahead got its paid receipt refused as too far).
 * @example
 * ```ts
 * const x402 = new x402Client().register('eip155:31337', new TrickleChannelClientScheme({ client }));
 * const paidFetch = wrapFetchWithPayment(fetch, x402);
 * ```
 */
export class TrickleChannelClientScheme implements SchemeNetworkClient {
  readonly scheme = TRICKLE_SCHEME;
  readonly #opts: TrickleChannelClientOptions;

  constructor(options: TrickleChannelClientOptions) {
    this.#opts = options;
  }

  /**
   * @throws TrickleError WRONG_CHANNEL (another hub, another chain or adjudicator than the hub's, no channel in the
   *   token, a pinned `channel` in another token), LIMIT_EXCEEDED (above the x402 client's spend cap),
   *   INVALID_ARGUMENT (requirements without a resource, an amount that is not a positive uint256 in base units, a
   *   `maxTimeoutSeconds` that is not a positive integer),
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
    const now = BigInt(Math.floor((this.#opts.now ?? Date.now)() / 1000));
    const lifetime = BigInt(Math.ceil(req.maxTimeoutSeconds / 2));
    const signed = await payForReceipt(
      client,
      channel,
      { to: toAddress(req.payTo), amount, resource, expiry: now + lifetime },
      this.#opts.verifier,
    );
    return { x402Version, payload: { receipt: signedReceiptToJson(signed) } };
  }
}
