/**
 * The seller's memory of served receipts (the default in-memory nonce store) under attack.
 *
 * Restarts: the receipts the previous run served are gone from memory, so a buyer that kept one could be served again.
 * The facilitator refuses every receipt an earlier run could have served (it expires by the store's start +
 * maxTimeoutSeconds + skew: `trickle_expiry_too_soon`), and tells buyers the earliest expiry it accepts
 * (`extra.minExpiry`), which the client scheme buys at once after the start.
 *
 * Its bound: one buyer paying for receipts faster than they expire gets `trickle_busy` past its share of the memory,
 * and other buyers are still served.
 *
 * Real express servers with the stock middleware, the stock @x402/fetch client, a real hub, chain and clients.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { x402Client } from '@x402/core/client';
import { encodePaymentSignatureHeader } from '@x402/core/http';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { payForReceipt } from '@trickle/client';
import { isTrickleError } from '@trickle/protocol/errors';
import { signedReceiptFromJson, signedReceiptToJson, type SignedReceipt } from '@trickle/protocol/receipt';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import { TRICKLE_REASONS, memoryNonceStore, type TrickleFacilitator } from '@trickle/x402/server';
import {
  channelRequirements,
  facilitatorFor,
  requirementsFrom,
  startReadingsService,
  x402Party,
  x402World,
} from './helpers/x402-service.js';
import type { ReadingsService, X402Party, X402World } from './helpers/x402-service.js';
import { reasonOf, requirementsOf } from './helpers/x402-headers.js';

const PRICE = 1_000n;

describe("x402: the seller's in-memory nonce store — restarts and its bound", () => {
  /** The world, the buyer (`payer`) and the seller. */
  let x: X402World;
  /** Another buyer. */
  let other: X402Party;
  const services: ReadingsService[] = [];

  beforeAll(async () => {
    x = await x402World();
    other = await x402Party(x.w, 4, 1_000_000n);
  }, 120_000);
  afterAll(async () => {
    for (const s of services) await s.close();
    await x?.w.close();
  });

  /** A run of the seller's service with the facilitator's default store. */
  async function run(): Promise<ReadingsService> {
    const s = await startReadingsService(x.w, {
      payTo: x.seller.address,
      resource: 'sensor-7/readings',
      amount: PRICE,
      nonces: 'default',
    });
    services.push(s);
    return s;
  }
  const spent = () => x.payerChannel.latest.state.paidByDevice;
  const sensor7 = () =>
    channelRequirements(x.w, { payTo: x.seller.address, amount: PRICE, resource: 'sensor-7/readings' });
  /** Settles receipt `r` at `facilitator` under `req`: 'served', or the reason it is refused. */
  const settle = async (facilitator: TrickleFacilitator, req: PaymentRequirements, r: SignedReceipt) => {
    const s = await facilitator.settle(
      { x402Version: 2, accepted: req, payload: { receipt: signedReceiptToJson(r) } },
      req,
    );
    return s.success ? 'served' : s.errorReason;
  };

  it('a receipt served before the restart is refused after it (trickle_expiry_too_soon); a new buyer is served at once', async () => {
    const payloads: PaymentPayload[] = [];
    const x402 = new x402Client()
      .register(x.network, new TrickleChannelClientScheme({ client: x.payer }))
      .setSpendControls({
        allowedAssets: [{ network: x.network, asset: x.w.token, maxAmountPerPayment: PRICE.toString() }],
      })
      .onAfterPaymentCreation(async (ctx) => void payloads.push(ctx.paymentPayload));
    const paidFetch = wrapFetchWithPayment(fetch, x402);

    // The first run, just started: the stock client buys a receipt expiring at its minExpiry and is served.
    const first = await run();
    const before = spent();
    const res1 = await paidFetch(first.url);
    expect(res1.status).toBe(200);
    expect(first.served()).toBe(1);
    expect(spent() - before).toBe(PRICE);
    const old = payloads[0]!;
    const receipt = signedReceiptFromJson(old.payload['receipt']).receipt;
    expect(receipt.expiry.toString()).toBe((await requirementsOf(first.url)).extra['minExpiry']);
    await first.close();

    // The restart: a new process, an empty memory. The kept receipt, under the new run's requirements (what a hostile
    // buyer would copy from its 402), is refused and serves nothing.
    const second = await run();
    const accepted = await requirementsOf(second.url);
    for (const attempt of [1, 2]) {
      const replay = await fetch(second.url, {
        headers: { 'PAYMENT-SIGNATURE': encodePaymentSignatureHeader({ ...old, accepted }) },
      });
      expect(replay.status, `replay ${attempt}`).toBe(402);
      expect(reasonOf(replay), `replay ${attempt}`).toBe(TRICKLE_REASONS.expiryTooSoon);
    }
    expect(second.served()).toBe(0);
    expect(second.facilitator.rememberedNonces).toBe(0);

    // A buyer right after the restart is not held back: its receipt expires at the new minExpiry, paid once.
    const mid = spent();
    const res2 = await paidFetch(second.url);
    expect(res2.status).toBe(200);
    expect(second.served()).toBe(1);
    expect(spent() - mid).toBe(PRICE);
  });

  it("a payment built on one process's 402 is served by another process of the service (each has its own minExpiry)", async () => {
    const nextSecond = () => new Promise((r) => setTimeout(r, 1_000 - (Date.now() % 1_000) + 20));
    const a = await run();
    await nextSecond();
    const b = await run(); // started a second later: a later minExpiry
    await nextSecond(); // b's minExpiry is within a's window from the second after b's start on
    const reqA = await requirementsOf(a.url);
    const reqB = await requirementsOf(b.url);
    expect(BigInt(reqB.extra['minExpiry'] as string)).toBeGreaterThan(BigInt(reqA.extra['minExpiry'] as string));
    const scheme = new TrickleChannelClientScheme({ client: x.payer });
    const before = spent();
    const out = await scheme.createPaymentPayload(2, reqB);
    // Behind a balancer the payment reaches the other process.
    const res = await fetch(a.url, {
      headers: {
        'PAYMENT-SIGNATURE': encodePaymentSignatureHeader({ x402Version: 2, accepted: reqB, payload: out.payload }),
      },
    });
    expect(res.status).toBe(200);
    expect(a.served()).toBe(1);
    expect(spent() - before).toBe(PRICE);
  });

  it('the expiry window after a start and after the warm-up, to the second (a facilitator on an injected clock)', async () => {
    const start = Math.floor(Date.now() / 1000);
    let now = start * 1000;
    const facilitator = facilitatorFor(x.w, { now: () => now });
    const req = await requirementsFrom(facilitator, sensor7());
    // Skew 5 s: a receipt the previous run took at its last second expires by start + 60 + 5.
    const least = BigInt(start) + 66n;
    expect(req.extra['minExpiry']).toBe(least.toString());
    const buy = (expiry: bigint) =>
      payForReceipt(x.payer, x.payerChannel, {
        to: x.seller.address,
        amount: PRICE,
        resource: 'sensor-7/readings',
        expiry,
      });
    const outcome = async (expiry: bigint) => settle(facilitator, req, await buy(expiry));

    // In the start's second nothing is acceptable (this clock stands still: the facilitator's wait for the next
    // second ends, the clock has not moved): minExpiry is one second beyond now + 60 + 5.
    const S = BigInt(start);
    expect(await outcome(least)).toBe(TRICKLE_REASONS.expiryTooFar);
    // From the next second on, from minExpiry to now + 60 + 5; before minExpiry an earlier run could have served it.
    now += 1_000;
    expect(await outcome(S + 31n), 'an old client’s mid-window receipt').toBe(TRICKLE_REASONS.expiryTooSoon);
    expect(await outcome(least - 1n)).toBe(TRICKLE_REASONS.expiryTooSoon);
    const atLeast = await buy(least);
    expect(await settle(facilitator, req, atLeast)).toBe('served');
    expect(await outcome(least + 1n)).toBe(TRICKLE_REASONS.expiryTooFar);
    now += 4_000;
    expect(await outcome(least + 4n)).toBe('served');
    expect(await outcome(least + 5n)).toBe(TRICKLE_REASONS.expiryTooFar);
    expect(facilitator.rememberedNonces).toBe(2);

    // 70 s later the memory covers every receipt it could be shown: the usual window, now < expiry ≤ now + 60 + 5.
    now = (start + 70) * 1000;
    const N = S + 70n;
    expect(await outcome(N), 'expiring this second').toBe(TRICKLE_REASONS.expired);
    expect(await outcome(N + 1n)).toBe('served');
    const last = await buy(N + 65n);
    expect(await settle(facilitator, req, last)).toBe('served');
    expect(await outcome(N + 66n)).toBe(TRICKLE_REASONS.expiryTooFar);
    expect(await settle(facilitator, req, last)).toBe(TRICKLE_REASONS.replayed);
    expect(await settle(facilitator, req, atLeast), 'expired since').toBe(TRICKLE_REASONS.expired);
  });

  it('a service’s minExpiry that is not a uint64, or further than it could need, is refused before paying', async () => {
    const now = BigInt(Math.floor(Date.now() / 1000));
    const req = (minExpiry: unknown): PaymentRequirements => {
      const base = sensor7();
      const extra = {
        hub: x.w.hub!.address,
        chainId: x.w.chain.chainId.toString(),
        adjudicator: x.w.adjudicator,
        minExpiry,
      };
      return { ...base, extra: { ...base.extra, ...extra } };
    };
    const scheme = new TrickleChannelClientScheme({ client: x.payer });
    const before = spent();
    for (const bad of ['abc', '-1', '1.5', '', 12, (1n << 64n).toString(), (now + 60n + 301n).toString()]) {
      const err = await scheme.createPaymentPayload(2, req(bad)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isTrickleError(err, 'INVALID_ARGUMENT'), `minExpiry ${String(bad)}: ${String(err)}`).toBe(true);
    }
    expect(spent()).toBe(before);
    // Within the bound: the receipt expires at minExpiry, further than maxTimeoutSeconds as the service asked.
    const out = await scheme.createPaymentPayload(2, req((now + 100n).toString()));
    expect(signedReceiptFromJson(out.payload['receipt']).receipt.expiry).toBe(now + 100n);
    expect(spent() - before).toBe(PRICE);
  });

  it('one buyer filling the memory gets trickle_busy past its share; another buyer is still served', async () => {
    let now = Date.now();
    const facilitator = facilitatorFor(x.w, {
      nonces: memoryNonceStore({ maxNonces: 4, maxPerPayer: 2, rememberedSince: 0n }),
      now: () => now,
    });
    const req = await requirementsFrom(facilitator, sensor7());
    const expiry = BigInt(Math.floor(now / 1000) + 30);
    const buy = (client: TrickleClient, channel: ClientChannel) =>
      payForReceipt(client, channel, { to: x.seller.address, amount: PRICE, resource: 'sensor-7/readings', expiry });
    const served = (r: SignedReceipt) => settle(facilitator, req, r);
    // The hostile buyer pays for four receipts at once: two are served, two are refused unrecorded.
    const hostile = [];
    for (let i = 0; i < 4; i++) hostile.push(await buy(x.payer, x.payerChannel));
    const outcomes = [];
    for (const r of hostile) outcomes.push(await served(r));
    expect(outcomes).toEqual(['served', 'served', TRICKLE_REASONS.busy, TRICKLE_REASONS.busy]);
    // The other buyer takes the rest of the memory, then is held to its own share.
    const mine = [
      await buy(other.client, other.channel),
      await buy(other.client, other.channel),
      await buy(other.client, other.channel),
    ];
    expect([await served(mine[0]!), await served(mine[1]!), await served(mine[2]!)]).toEqual([
      'served',
      'served',
      TRICKLE_REASONS.busy,
    ]);
    expect(facilitator.rememberedNonces).toBe(4);
    // Once its first receipts expired, the hostile buyer has room again: a fresh receipt is served, once.
    now += 31_000;
    const later = BigInt(Math.floor(now / 1000) + 30);
    const fresh = await payForReceipt(x.payer, x.payerChannel, {
      to: x.seller.address,
      amount: PRICE,
      resource: 'sensor-7/readings',
      expiry: later,
    });
    expect(await served(fresh)).toBe('served');
    expect(await served(fresh)).toBe(TRICKLE_REASONS.replayed);
  });
});
