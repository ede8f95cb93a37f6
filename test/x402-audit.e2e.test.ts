/**
 * Audit of the seller's in-memory nonce store across a restart that changes a route's `maxTimeoutSeconds`.
 *
 * The store forgets served nonces at a restart; the facilitator refuses every receipt expiring by the store's start +
 * the route's `maxTimeoutSeconds` + skew (`trickle_expiry_too_soon`). That bound covers what an earlier run accepted
 * only when the earlier run's route allowed no longer lifetime: a run restarted with a shorter `maxTimeoutSeconds`
 * serves again a receipt the earlier one served under the longer lifetime (the README says so, and what to do).
 *
 * A real hub, chain and routed payments; the facilitator is what the stock middleware settles with before the handler.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PaymentRequirements } from '@x402/core/types';
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import { payForReceipt } from '@trickle/client';
import { signedReceiptToJson, type SignedReceipt } from '@trickle/protocol/receipt';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import { TRICKLE_REASONS, memoryNonceStore, type TrickleFacilitator } from '@trickle/x402/server';
import {
  channelRequirements,
  facilitatorFor,
  requirementsFrom,
  startReadingsService,
  x402World,
} from './helpers/x402-service.js';
import type { X402World } from './helpers/x402-service.js';
import { reasonOf, requirementsOf } from './helpers/x402-headers.js';

const PRICE = 1_000n;

// One chain, hub, seller and payer for the file: each case measures what it paid as a difference.
let x: X402World;
beforeAll(async () => {
  x = await x402World();
}, 120_000);
afterAll(async () => {
  await x?.w.close();
});

describe("x402 audit: a restart that lowers a route's maxTimeoutSeconds", () => {
  const route = (maxTimeoutSeconds: number): PaymentRequirements => ({
    ...channelRequirements(x.w, { payTo: x.seller.address, amount: PRICE, resource: 'sensor-7/readings' }),
    maxTimeoutSeconds,
  });
  const settle = async (facilitator: TrickleFacilitator, req: PaymentRequirements, r: SignedReceipt) => {
    const s = await facilitator.settle(
      { x402Version: 2, accepted: req, payload: { receipt: signedReceiptToJson(r) } },
      req,
    );
    return s.success ? 'served' : s.errorReason;
  };

  it('a receipt served under the longer lifetime is served again by a run restarted with a shorter one; with the same lifetime it is refused', async () => {
    const t0 = Math.floor(Date.now() / 1000);
    // Run 1: receipts live up to an hour; the client scheme buys one expiring half of that from now.
    const run1 = facilitatorFor(x.w, { nonces: memoryNonceStore({ rememberedSince: 0n }) });
    const long1 = await requirementsFrom(run1, route(3600));
    const signed = await payForReceipt(x.payer, x.payerChannel, {
      to: x.seller.address,
      amount: PRICE,
      resource: 'sensor-7/readings',
      expiry: BigInt(t0 + 1800),
    });
    expect(await settle(run1, long1, signed)).toBe('served');
    expect(await settle(run1, long1, signed)).toBe(TRICKLE_REASONS.replayed);

    // The service restarts at t0 + 1700 (default store: its memory begins then); the header is presented again at
    // t0 + 1740, within 65 s of its expiry.
    const restartedAt = (t0 + 1700) * 1000;
    const presentedAt = (t0 + 1740) * 1000;
    const sameLifetime = facilitatorFor(x.w, {
      nonces: memoryNonceStore({ now: () => restartedAt }),
      now: () => presentedAt,
    });
    expect(await settle(sameLifetime, await requirementsFrom(sameLifetime, route(3600)), signed)).toBe(
      TRICKLE_REASONS.expiryTooSoon,
    );
    const shorter = facilitatorFor(x.w, {
      nonces: memoryNonceStore({ now: () => restartedAt }),
      now: () => presentedAt,
    });
    const short2 = await requirementsFrom(shorter, route(60));
    expect(short2.extra['minExpiry']).toBe(String(t0 + 1700 + 66));
    // Served a second time: the bound of the new run (its start + 60 + 5) is below what run 1 accepted.
    expect(await settle(shorter, short2, signed)).toBe('served');
  });

  it('a payment header nested 2,000 deep (which the stock matcher takes seconds over) is dropped by paymentHeaderGuard: a plain 402, and the next buyer is served', async () => {
    const service = await startReadingsService(x.w, { payTo: x.seller.address, resource: 'sensor-7/g', amount: PRICE });
    try {
      const unpaid = await fetch(service.url);
      expect(unpaid.status).toBe(402);
      const accepted = decodePaymentRequiredHeader(unpaid.headers.get('PAYMENT-REQUIRED')!).accepts[0]!;
      const junk = JSON.parse(`${'['.repeat(2_000)}${']'.repeat(2_000)}`) as unknown;
      const hostile = encodePaymentSignatureHeader({
        x402Version: 2,
        resource: { url: service.url },
        accepted: { ...accepted, extra: { ...accepted.extra, junk } },
        payload: {},
      } as never);
      const refused = await fetch(service.url, { headers: { 'PAYMENT-SIGNATURE': hostile } });
      expect(refused.status).toBe(402);
      expect(decodePaymentRequiredHeader(refused.headers.get('PAYMENT-REQUIRED')!).accepts).toHaveLength(1);
      const signed = await payForReceipt(x.payer, x.payerChannel, {
        to: x.seller.address,
        amount: PRICE,
        resource: 'sensor-7/g',
        expiry: BigInt(Math.floor(Date.now() / 1000) + 50),
      });
      const paid = await fetch(service.url, {
        headers: {
          'PAYMENT-SIGNATURE': encodePaymentSignatureHeader({
            x402Version: 2,
            resource: { url: service.url },
            accepted,
            payload: { receipt: signedReceiptToJson(signed) },
          } as never),
        },
      });
      expect(paid.status).toBe(200);
      expect(service.served()).toBe(1);
    } finally {
      await service.close();
    }
  });
});

describe('x402 audit: the client scheme on a route whose receipts live two seconds', () => {
  it('a receipt bought late in a second lives ⌈maxTimeoutSeconds / 2⌉ s from its purchase, and the stock middleware serves it', async () => {
    const service = await startReadingsService(x.w, {
      payTo: x.seller.address,
      resource: 'sensor-7/short',
      amount: PRICE,
      maxTimeoutSeconds: 2,
    });
    try {
      const accepted = await requirementsOf(service.url);
      const scheme = new TrickleChannelClientScheme({ client: x.payer });
      const paid = x.payerChannel.latest.state.paidByDevice;
      // Late in a second: an expiry counted from the second's start (rounded down) leaves the receipt a few ms.
      while (Date.now() % 1_000 < 960) await new Promise((r) => setTimeout(r, 5));
      const boughtAt = Date.now();
      const { payload } = await scheme.createPaymentPayload(2, accepted);
      const expiry = Number((payload['receipt'] as { expiry: string }).expiry);
      // Presented after a slow link's round trip: well within the second the route lets it live.
      await new Promise((r) => setTimeout(r, 150));
      const res = await fetch(service.url, {
        headers: {
          'PAYMENT-SIGNATURE': encodePaymentSignatureHeader({
            x402Version: 2,
            resource: { url: service.url },
            accepted,
            payload,
          } as never),
        },
      });
      expect(reasonOf(res)).not.toBe(TRICKLE_REASONS.expired);
      expect(res.status).toBe(200);
      expect(service.served()).toBe(1);
      expect(x.payerChannel.latest.state.paidByDevice - paid).toBe(PRICE);
      expect(expiry * 1_000 - boughtAt).toBeGreaterThanOrEqual(1_000);
    } finally {
      await service.close();
    }
  });
});
