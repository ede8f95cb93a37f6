/**
 * A receipt purchase (`payForReceipt`, x402 `trickle-channel`) outlives the device process that made it: the purchase
 * is in the device's file store before the payment leaves, and a new client on the same key and store gets the
 * hub-signed receipt with `receiptFor` — asking the hub with an `outcome` query — whether the route is still pending
 * (the payee answers late), or was finished while the device was away and the hub restarted meanwhile. Only the payer
 * may ask: another device gets UNKNOWN_PAYMENT, as for an id the hub never saw. Real hub (LMDB), chain, clients, and
 * the x402 service with the stock middleware, which serves the receipt once.
 */
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePaymentRequiredHeader, encodePaymentSignatureHeader } from '@x402/core/http';
import type { PaymentRequirements } from '@x402/core/types';
import type { ClientChannel, CreditGuard } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { payForReceipt, receiptFor } from '@trickle/client/receipts';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { resourceHash, signedReceiptToJson, type SignedReceipt } from '@trickle/protocol/receipt';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { startReadingsService, type ReadingsService } from './helpers/x402-service.js';
import { waitFor } from './helpers/wait.js';

const PRICE = 1_000n;
const PAYER = 2;

/** A payee's credit guard the test answers: each credit waits until the test takes it. */
function gate() {
  const waiting: (() => void)[] = [];
  const guard: CreditGuard = () => new Promise<void>((r) => waiting.push(r));
  return { guard, held: () => waiting.length, take: () => waiting.shift()!() };
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'resolved',
    (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
  );

describe('a receipt bought by a device process that is gone', () => {
  let w: World;
  let payee: TrickleClient;
  let payeeChannel: ClientChannel;
  let other: TrickleClient;
  let service: ReadingsService;
  let requirements: PaymentRequirements;
  const g = gate();

  beforeAll(async () => {
    w = await createWorld({ accounts: 6 });
    await w.startHub();
    payee = await w.client(3, { creditGuard: g.guard });
    payeeChannel = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(payeeChannel.channelId, 1_000_000n);
    other = await w.client(4);
    await other.openChannel({ token: w.token, deposit: 1_000n });
    service = await startReadingsService(w, { payTo: payee.address, resource: 'sensor-7/readings', amount: PRICE });
    requirements = decodePaymentRequiredHeader((await fetch(service.url)).headers.get('PAYMENT-REQUIRED')!).accepts[0]!;
  }, 120_000);
  afterAll(async () => {
    await service?.close();
    await w?.close();
  });

  /** The x402 service's answer to a request paying with `signed`. */
  const present = (signed: SignedReceipt) =>
    fetch(service.url, {
      headers: {
        'PAYMENT-SIGNATURE': encodePaymentSignatureHeader({
          x402Version: 2,
          resource: { url: service.url },
          accepted: requirements,
          payload: { receipt: signedReceiptToJson(signed) },
        } as never),
      },
    });

  /**
   * A first process of the payer buys a receipt while the payee holds the hub's credit: its purchase times out and the
   * process goes (disconnect). The payment id its TIMEOUT named, and the channel's spending before.
   */
  async function boughtAndGone(): Promise<{ id: Bytes32; paidBefore: bigint }> {
    const first = await w.client(PAYER, { routeTimeoutMs: 1_000 });
    const channel = first.channels()[0] ?? (await first.openChannel({ token: w.token, deposit: 1_000_000n }));
    const paidBefore = channel.latest.state.paidByDevice;
    const held = g.held();
    const expiry = BigInt(Math.floor(Date.now() / 1000) + 60); // within the service's maxTimeoutSeconds
    const e: unknown = await payForReceipt(first, channel, {
      to: payee.address,
      amount: PRICE,
      resource: service.resource,
      expiry,
    }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isTrickleError(e, 'TIMEOUT')).toBe(true);
    await waitFor(() => g.held() === held + 1); // the hub's credit waits at the payee
    await first.disconnect();
    return { id: (e as TrickleError).details['paymentId'] as Bytes32, paidBefore };
  }

  it('a restarted client asks the hub: pending, then the signed receipt once the payee takes it; served once', async () => {
    const { id, paidBefore } = await boughtAndGone();
    const again = await w.client(PAYER); // same key, same file store
    // The hub says the route is pending: no word within the wait.
    expect(await codeOf(receiptFor(again, id, { timeoutMs: 300 }))).toBe('TIMEOUT');
    const late = receiptFor(again, id);
    g.take();
    const signed = await late; // checked against the hub's key by receiptFor
    expect(signed.receipt).toMatchObject({
      payer: again.address,
      payee: payee.address,
      token: w.token,
      amount: PRICE,
      resource: resourceHash(service.resource),
      paymentId: id,
    });
    expect(again.channels()[0]!.latest.state.paidByDevice - paidBefore).toBe(PRICE);
    const served = service.served();
    expect((await present(signed)).status).toBe(200);
    expect((await present(signed)).status).toBe(402); // a receipt buys one request
    expect(service.served()).toBe(served + 1);
    await again.disconnect();
  });

  it('delivered while the device was away and the hub restarted: the next client still gets the signed receipt', async () => {
    const { id } = await boughtAndGone();
    g.take();
    await waitFor(() => payeeChannel.latest.state.paidByHub >= 2n * PRICE);
    // The hub's note of the outcome for the offline payer lives in its memory: gone with the restart.
    const port = w.hub!.port;
    await w.hub!.close();
    await w.startHub({ more: { port } });
    await waitFor(() => payee.connected && other.connected); // they reconnect by themselves
    const again = await w.client(PAYER);
    const signed = await receiptFor(again, id, { timeoutMs: 10_000 });
    expect(signed.receipt.paymentId).toBe(id);
    const served = service.served();
    expect((await present(signed)).status).toBe(200);
    expect(service.served()).toBe(served + 1);
    // Asked again (a third process would too): the same receipt.
    expect(await receiptFor(again, id, { timeoutMs: 10_000 })).toEqual(signed);
    await again.disconnect();
  });

  it("another device asking for the payer's payment gets UNKNOWN_PAYMENT, as for an unknown id; the payer still can", async () => {
    const { id } = await boughtAndGone();
    const ask = (c: TrickleClient, paymentId: Bytes32) =>
      c
        .request((rid) => ({ t: 'outcome', id: rid, paymentId }))
        .then(
          () => 'answered',
          (e: unknown) => e,
        );
    const refused = await ask(other, id);
    expect(isTrickleError(refused, 'UNKNOWN_PAYMENT')).toBe(true);
    expect((refused as TrickleError).message).toContain(id); // the refusal names the payment
    const unknown = await ask(other, `0x${'ab'.repeat(32)}` as Bytes32);
    expect(isTrickleError(unknown, 'UNKNOWN_PAYMENT')).toBe(true);
    // Nothing leaks: the two refusals read alike but for the id.
    expect((unknown as TrickleError).message.replace(`0x${'ab'.repeat(32)}`, id)).toBe(
      (refused as TrickleError).message,
    );
    // receiptFor on a client with no such purchase refuses before asking.
    expect(await codeOf(receiptFor(other, id, { timeoutMs: 300 }))).toBe('INVALID_ARGUMENT');
    // The refused queries changed nothing: the route is still the payer's and still pending.
    const again = await w.client(PAYER);
    expect(await codeOf(receiptFor(again, id, { timeoutMs: 300 }))).toBe('TIMEOUT');
    g.take();
    expect((await receiptFor(again, id)).receipt.payer).toBe(again.address);
    await again.disconnect();
  });

  it('a purchase whose receipt expired is forgotten at the next purchase; the new one is recorded before it is paid', async () => {
    const client = await w.client(PAYER);
    const purchases = client.store.purchases!;
    const kept = await purchases.listPurchases();
    const old = { ...kept[0]!, paymentId: `0x${'cd'.repeat(32)}` as Bytes32, expiry: 1n };
    await purchases.savePurchase(old);
    const buying = payForReceipt(client, client.channels()[0]!, {
      to: payee.address,
      amount: PRICE,
      resource: service.resource,
      expiry: BigInt(Math.floor(Date.now() / 1000) + 60),
    });
    await waitFor(() => g.held() === 1); // paid, and held at the payee
    const now = await purchases.listPurchases();
    expect(now.map((p) => p.paymentId)).not.toContain(old.paymentId);
    expect(now.length).toBe(kept.length + 1); // the unexpired ones stay, and the new one is in
    g.take();
    const signed = await buying;
    expect(now.map((p) => p.paymentId)).toContain(signed.receipt.paymentId);
    await client.disconnect();
  });

  it('a purchase the store cannot record is not paid (STORE_FAILURE)', async () => {
    const receipts = join(w.dir, `device-${PAYER}`, 'receipts');
    mkdirSync(receipts, { recursive: true }); // the earlier tests' purchases are there (not when run alone)
    renameSync(receipts, `${receipts}.away`);
    writeFileSync(receipts, 'not a directory');
    try {
      const client = await w.client(PAYER);
      const channel = client.channels()[0] ?? (await client.openChannel({ token: w.token, deposit: 1_000_000n }));
      const before = channel.latest.state;
      const buying = payForReceipt(client, channel, {
        to: payee.address,
        amount: PRICE,
        resource: service.resource,
        expiry: BigInt(Math.floor(Date.now() / 1000) + 60),
      });
      expect(await codeOf(buying)).toBe('STORE_FAILURE');
      expect(channel.latest.state).toEqual(before); // nothing signed, nothing sent
      expect(g.held()).toBe(0);
      await client.disconnect();
    } finally {
      rmSync(receipts);
      renameSync(`${receipts}.away`, receipts);
    }
  });
});
