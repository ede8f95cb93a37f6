/**
 * The stock @x402/fetch client retrying a request it already paid for, with the trickle-channel scheme: a receipt paid
 * for and not spent — the service gave it back because its handler failed (`trickle_released`), or its purchase timed
 * out and the hub delivered it afterwards — buys the retry instead of a second payment; never a request of another
 * payee, amount or resource. Real express servers with the stock middleware, a real hub, chain and clients.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { x402Client } from '@x402/core/client';
import { decodePaymentResponseHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import type { Network, PaymentPayload } from '@x402/core/types';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { ClientChannel, CreditGuard } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { receiptFor } from '@trickle/client/receipts';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import { TRICKLE_REASONS, memoryNonceStore, type NonceStore } from '@trickle/x402/server';
import { createWorld, type World } from './helpers/harness.js';
import { startReadingsService, type ReadingsService } from './helpers/x402-service.js';
import { waitFor } from './helpers/wait.js';

const PRICE = 1_000n;

/** The stock fetch wrapper over the trickle-channel scheme of `client`; `payloads` gets every payload it sends. */
function paidFetchOf(w: World, client: TrickleClient, payloads: PaymentPayload[] = [], failures: unknown[] = []) {
  const network = `eip155:${w.chain.chainId}` as Network;
  const x402 = new x402Client()
    .register(network, new TrickleChannelClientScheme({ client }))
    .setSpendControls({ allowedAssets: [{ network, asset: w.token, maxAmountPerPayment: (10n * PRICE).toString() }] })
    .onAfterPaymentCreation(async (ctx) => void payloads.push(ctx.paymentPayload))
    .onPaymentCreationFailure(async (ctx) => void failures.push(ctx.error));
  return wrapFetchWithPayment(fetch, x402);
}

const reasonOf = (res: Response) => {
  const h = res.headers.get('PAYMENT-RESPONSE');
  return h ? decodePaymentResponseHeader(h).errorReason : undefined;
};

describe('x402: a retry reuses a receipt paid for and not spent', () => {
  let w: World;
  let payer: TrickleClient;
  let payerChannel: ClientChannel;
  let seller: TrickleClient;
  let other: TrickleClient;
  const services: ReadingsService[] = [];

  beforeAll(async () => {
    w = await createWorld({ accounts: 10 });
    await w.startHub();
    payer = await w.client(2);
    payerChannel = await payer.openChannel({ token: w.token, deposit: 10_000_000n });
    seller = await w.client(3);
    other = await w.client(4);
    for (const c of [seller, other]) {
      const ch = await c.openChannel({ token: w.token, deposit: 1_000n });
      await w.hubDeposit(ch.channelId, 5_000_000n);
    }
  }, 120_000);
  afterAll(async () => {
    for (const s of services) await s.close();
    await w?.close();
  });

  async function service(payTo: Address, resource: string, amount = PRICE): Promise<ReadingsService> {
    const s = await startReadingsService(w, { payTo, resource, amount });
    services.push(s);
    return s;
  }
  const spent = () => payerChannel.latest.state.paidByDevice;

  it('after the handler failed, the retry is served with the same receipt: paid once', async () => {
    const a = await service(seller.address, 'sensor-7/readings');
    const paidFetch = paidFetchOf(w, payer);
    const before = spent();
    a.failNext();
    const failed = await paidFetch(a.url);
    expect(failed.status).toBe(500);
    expect(reasonOf(failed)).toBe(TRICKLE_REASONS.released);
    expect(spent() - before).toBe(PRICE);
    const retry = await paidFetch(a.url);
    expect(retry.status).toBe(200);
    expect(a.served()).toBe(1);
    expect(spent() - before).toBe(PRICE); // not paid again
    // The receipt is spent now: the next request pays.
    expect((await paidFetch(a.url)).status).toBe(200);
    expect(a.served()).toBe(2);
    expect(spent() - before).toBe(2n * PRICE);
  });

  it("after the service's nonce store failed (nothing recorded), the retry is served with the same receipt: paid once", async () => {
    // The store a service gives its facilitator, over a database that is unreachable for one claim.
    const memory = memoryNonceStore({ rememberedSince: 0n });
    let down = false;
    const store: NonceStore = {
      served: (nonce, now) => memory.served(nonce, now),
      claim: async (nonce, expiry, now, payer) => {
        if (down) throw new Error('database unreachable');
        return memory.claim(nonce, expiry, now, payer);
      },
      release: (nonce) => memory.release(nonce),
    };
    const a = await startReadingsService(w, {
      payTo: seller.address,
      resource: 'sensor-12/readings',
      amount: PRICE,
      nonces: store,
    });
    services.push(a);
    const paidFetch = paidFetchOf(w, payer);
    const before = spent();
    down = true;
    const failed = await paidFetch(a.url);
    expect(failed.status).toBe(402);
    expect(reasonOf(failed)).toBe(TRICKLE_REASONS.storeFailure);
    expect(a.served()).toBe(0);
    expect(spent() - before).toBe(PRICE);
    down = false;
    const retry = await paidFetch(a.url);
    expect(retry.status).toBe(200);
    expect(a.served()).toBe(1);
    expect(spent() - before).toBe(PRICE); // not paid again
  });

  it('a given-back receipt is never reused for another resource, amount or payee', async () => {
    const a = await service(seller.address, 'sensor-9/readings');
    const otherResource = await service(seller.address, 'sensor-10/readings');
    const otherAmount = await service(seller.address, 'sensor-9/readings', 2n * PRICE);
    const otherPayee = await service(other.address, 'sensor-9/readings');
    const paidFetch = paidFetchOf(w, payer);
    const before = spent();
    a.failNext();
    expect((await paidFetch(a.url)).status).toBe(500);
    expect(spent() - before).toBe(PRICE);
    for (const [s, price] of [
      [otherResource, PRICE],
      [otherAmount, 2n * PRICE],
      [otherPayee, PRICE],
    ] as const) {
      const paid = spent();
      expect((await paidFetch(s.url)).status).toBe(200);
      expect(s.served()).toBe(1);
      expect(spent() - paid).toBe(price); // paid for, not served with the given-back receipt
    }
    const paid = spent();
    expect((await paidFetch(a.url)).status).toBe(200); // still kept for its own terms
    expect(a.served()).toBe(1);
    expect(spent()).toBe(paid);
  });

  it('a reused receipt the service refuses as spent is replaced by one fresh payment', async () => {
    const a = await service(seller.address, 'sensor-11/readings');
    const payloads: PaymentPayload[] = [];
    const paidFetch = paidFetchOf(w, payer, payloads);
    const before = spent();
    a.failNext();
    expect((await paidFetch(a.url)).status).toBe(500);
    // The given-back receipt is spent meanwhile (sent by hand, as another copy of the payer might).
    const byHand = await fetch(a.url, { headers: { 'PAYMENT-SIGNATURE': encodePaymentSignatureHeader(payloads[0]!) } });
    expect(byHand.status).toBe(200);
    expect(a.served()).toBe(1);
    const res = await paidFetch(a.url);
    expect(res.status).toBe(200);
    expect(a.served()).toBe(2);
    expect(spent() - before).toBe(2n * PRICE); // the first receipt, then one fresh payment for the refused reuse
  });

  /**
   * A payment whose pay() timed out (the payee held the credit), delivered afterwards: the retry is served with its
   * receipt, paid once. `maxTimeoutSeconds`: the route's, so the scheme waits for the late receipt that long.
   */
  async function lateDelivery(payeeIndex: number, payerIndex: number, resource: string, maxTimeoutSeconds?: number) {
    const waiting: ((take: boolean) => void)[] = [];
    const guard: CreditGuard = async () => {
      if (!(await new Promise<boolean>((r) => waiting.push(r))))
        throw new TrickleError('INVALID_ARGUMENT', 'refused by the test');
    };
    const slow = await w.client(payeeIndex, { creditGuard: guard });
    const slowChannel = await slow.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(slowChannel.channelId, 1_000_000n);
    const late = await w.client(payerIndex, { routeTimeoutMs: 1_000 });
    const lateChannel = await late.openChannel({ token: w.token, deposit: 1_000_000n });
    const s = await startReadingsService(w, { payTo: slow.address, resource, amount: PRICE, maxTimeoutSeconds });
    services.push(s);
    const failures: unknown[] = [];
    const paidFetch = paidFetchOf(w, late, [], failures);
    await expect(paidFetch(s.url)).rejects.toThrow(/TIMEOUT|no receipt yet/);
    const timedOut = failures[0];
    expect(isTrickleError(timedOut, 'TIMEOUT')).toBe(true);
    expect(lateChannel.latest.state.paidByDevice).toBe(PRICE);
    await waitFor(() => waiting.length === 1);
    waiting.shift()!(true); // the payee takes it now: the hub delivers it and signs the receipt
    await receiptFor(late, (timedOut as TrickleError).details['paymentId'] as Bytes32);
    await new Promise((r) => setTimeout(r, 0)); // the scheme's own wait for it has filed it
    const res = await paidFetch(s.url);
    expect(res.status).toBe(200);
    expect(s.served()).toBe(1);
    expect(lateChannel.latest.state.paidByDevice).toBe(PRICE); // not paid again
    await waitFor(() => slowChannel.latest.state.paidByHub === PRICE);
  }

  it('a purchase that timed out and was delivered afterwards buys the retry', async () => {
    await lateDelivery(5, 6, 'sensor-12/readings');
  });

  it('… also on a route whose receipts live 30 days (maxTimeoutSeconds 60 days): a wait longer than a timer holds (2^31 − 1 ms)', async () => {
    await lateDelivery(7, 8, 'sensor-13/archive', 60 * 24 * 3600);
  });
});
