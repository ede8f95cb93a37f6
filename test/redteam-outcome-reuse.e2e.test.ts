/**
 * A routed payment's id is the key of its route record, which the `outcome` query answers a restarted payer from: a
 * device that learnt another's payment id (the payee and the x402 service see it in every receipt) must not be able to
 * route a payment of its own under it and so take the record over — the payer, restarted, would be answered
 * UNKNOWN_PAYMENT for a receipt it paid for. Real hub (LMDB, restarted: its memory of recent ids is gone), chain,
 * clients.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TrickleClient } from '@trickle/client/client';
import { payForReceipt, receiptFor } from '@trickle/client/receipts';
import { isTrickleError } from '@trickle/protocol/errors';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

const PAYER = 2;

describe('a payment id reused by another device', () => {
  let w: World;
  let payee: TrickleClient;
  let thief: TrickleClient;

  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub();
    payee = await w.client(3);
    const payeeChannel = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(payeeChannel.channelId, 1_000_000n);
    thief = await w.client(4);
    await thief.openChannel({ token: w.token, deposit: 1_000_000n });
  }, 120_000);
  afterAll(async () => {
    await w?.close();
  });

  it('after a hub restart, is refused NO_ROUTE; the payer still gets its receipt', async () => {
    const first = await w.client(PAYER);
    const channel = await first.openChannel({ token: w.token, deposit: 1_000_000n });
    const expiry = BigInt(Math.floor(Date.now() / 1000) + 600);
    const bought = await payForReceipt(first, channel, { to: payee.address, amount: 1_000n, resource: 'r', expiry });
    const id = bought.receipt.paymentId;
    await first.disconnect();
    // The hub restarts: its bounded memory of recent payment ids is empty.
    const port = w.hub!.port;
    await w.hub!.close();
    await w.startHub({ more: { port } });
    await waitFor(() => payee.connected && thief.connected);
    const stolen = await thief
      .channels()[0]!
      .pay(1n, { to: payee.address, paymentId: id })
      .then(
        () => 'paid',
        (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
      );
    expect(stolen).toBe('NO_ROUTE');
    const again = await w.client(PAYER); // same key, same file store
    const signed = await receiptFor(again, id, { timeoutMs: 10_000 });
    expect(signed).toEqual(bought);
    await again.disconnect();
  });
});
