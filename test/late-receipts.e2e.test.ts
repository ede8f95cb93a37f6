/**
 * What a payer learns after its routed payment timed out: the hub had taken it and had not yet said whether the payee
 * took it (here the payee's credit guard holds the hub's credit past the payer's `routeTimeoutMs`, then takes it or
 * refuses it, and the hub delivers or refunds). Real hub, real chain, real clients on both ends.
 * - `receiptFor` gets the signed receipt of a `payForReceipt` that timed out once the hub delivers it (it could not be
 *   fetched again before), or NO_ROUTE once the hub refunds it;
 * - a payment stream's `paid()` gives back a tick refunded after `stop()` (the refund was not taken off before), and
 *   `unconfirmed` says when `paid()` is final.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClientChannel, CreditGuard } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { payForReceipt, receiptFor } from '@trickle/client/receipts';
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { recoverReceiptSigner, resourceHash, type SignedReceipt } from '@trickle/protocol/receipt';
import { nobleVerifier } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { readmeRegion } from './helpers/readme-region.js';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

const ROUTE_TIMEOUT_MS = 1_000;

/** A payee's credit guard the test answers: each credit waits until the test takes or refuses it. */
function gate() {
  const waiting: ((take: boolean) => void)[] = [];
  const guard: CreditGuard = async () => {
    const take = await new Promise<boolean>((r) => waiting.push(r));
    if (!take) throw new TrickleError('INVALID_ARGUMENT', 'refused by the test');
  };
  return {
    guard,
    held: () => waiting.length,
    answer: (take: boolean) => waiting.shift()!(take),
  };
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'resolved',
    (e: unknown) => (isTrickleError(e) ? e.code : String(e)),
  );

describe('a routed payment delivered or refunded after its pay() timed out', () => {
  let w: World;
  let client: TrickleClient;
  let channel: ClientChannel;
  let payee: TrickleClient;
  let payeeChannel: ClientChannel;
  let service: Address;
  const g = gate();
  const expiry = () => BigInt(Math.floor(Date.now() / 1000) + 600);

  beforeAll(async () => {
    w = await createWorld({ accounts: 5 });
    await w.startHub();
    client = await w.client(2, { routeTimeoutMs: ROUTE_TIMEOUT_MS });
    channel = await client.openChannel({ token: w.token, deposit: 1_000_000n });
    payee = await w.client(3, { creditGuard: g.guard });
    payeeChannel = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(payeeChannel.channelId, 1_000_000n);
    service = payee.address;
  }, 120_000);
  afterAll(async () => w?.close());

  /** Buy a receipt while the payee holds the hub's credit: the TIMEOUT error's payment id. */
  async function timedOut(amount: bigint, resource: string): Promise<Bytes32> {
    const e: unknown = await payForReceipt(client, channel, { to: service, amount, resource, expiry: expiry() }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(isTrickleError(e, 'TIMEOUT')).toBe(true);
    await waitFor(() => g.held() === 1); // the hub's credit waits at the payee
    return (e as TrickleError).details['paymentId'] as Bytes32;
  }

  it('receiptFor waits for the late delivery and returns the hub-signed receipt', async () => {
    const paid = channel.latest.state.paidByDevice;
    const id = await timedOut(700n, 'sensor-7/readings');
    const late = receiptFor(client, id);
    // Asked again with a short wait while the hub has not answered: TIMEOUT, and asking again later still works.
    expect(await codeOf(receiptFor(client, id, { timeoutMs: 50 }))).toBe('TIMEOUT');
    g.answer(true);
    const signed = await late;
    expect(signed.receipt).toMatchObject({
      payer: client.address,
      payee: service,
      token: w.token,
      amount: 700n,
      resource: resourceHash('sensor-7/readings'),
      paymentId: id,
    });
    const separator = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    expect(recoverReceiptSigner(nobleVerifier, separator, signed)).toBe(w.hub!.address);
    // The outcome is kept: asked after it arrived, the same receipt at once.
    expect(await receiptFor(client, id)).toEqual(signed);
    expect(channel.latest.state.paidByDevice - paid).toBe(700n);
    await waitFor(() => payeeChannel.latest.state.paidByHub >= 700n);
  });

  it('receiptFor answers NO_ROUTE once the hub refunded the payment, and the money is back', async () => {
    const before = channel.balance().available;
    const id = await timedOut(900n, 'sensor-7/readings');
    g.answer(false);
    expect(await codeOf(receiptFor(client, id))).toBe('NO_ROUTE');
    await waitFor(() => channel.balance().available === before);
  });

  it('receiptFor refuses a payment id of no receipt purchase that timed out (INVALID_ARGUMENT)', async () => {
    expect(await codeOf(receiptFor(client, `0x${'ab'.repeat(32)}` as Bytes32))).toBe('INVALID_ARGUMENT');
  });

  it("the client README's receiptFor snippet: a purchase that timed out still gets its receipt", async () => {
    let signed: SignedReceipt | undefined;
    const buy = async () => {
      // #region readme-receipt-for
      try {
        signed = await payForReceipt(client, channel, {
          to: service,
          amount: 1_000n,
          resource: 'sensor-7/readings',
          expiry: expiry(),
        });
      } catch (e) {
        if (!isTrickleError(e, 'TIMEOUT')) throw e;
        // The hub took the payment and has not said yet whether the payee took it: wait for its word (NO_ROUTE if
        // it refunds it, the money back in the channel).
        signed = await receiptFor(client, e.details['paymentId'] as Bytes32, { timeoutMs: 60_000 });
      }
      // #endregion readme-receipt-for
    };
    const bought = buy();
    // The payee holds the credit until the purchase has timed out (no payment of the channel waits any more).
    await waitFor(() => g.held() === 1 && channel.pendingPayments === 0);
    g.answer(true);
    await bought;
    expect(signed!.receipt).toMatchObject({ payee: service, amount: 1_000n });

    const { region, blocks } = readmeRegion(import.meta.url, 'readme-receipt-for', 6);
    expect(blocks).toContain(region);
  });

  it('a stream tick refunded after stop() is taken off paid(); unconfirmed says when paid() is final', async () => {
    const s = channel.stream({ to: service, ratePerSecond: 10_000n, tickMs: 100 });
    // The first tick waits at the payee: the stream stalls, and the tick's pay() times out.
    await waitFor(() => g.held() === 1 && s.status === 'stalled');
    const total = await s.stop();
    expect(total).toBeGreaterThan(0n);
    expect(s.unconfirmed).toBe(total); // taken by the hub, delivery not confirmed: counted as paid until refunded
    const changes: bigint[] = [];
    s.onChange((c) => changes.push(c.paid));
    const before = channel.balance().available;
    g.answer(false);
    await waitFor(() => s.unconfirmed === 0n);
    expect(s.paid()).toBe(0n);
    expect(changes.at(-1)).toBe(0n);
    await waitFor(() => channel.balance().available === before + total);
  });

  it('a stream tick delivered after stop() stays in paid(), now final', async () => {
    const s = channel.stream({ to: service, ratePerSecond: 10_000n, tickMs: 100 });
    await waitFor(() => g.held() === 1 && s.status === 'stalled');
    const total = await s.stop();
    expect(s.unconfirmed).toBe(total);
    const received = payeeChannel.latest.state.paidByHub;
    g.answer(true);
    await waitFor(() => s.unconfirmed === 0n);
    expect(s.paid()).toBe(total);
    await waitFor(() => payeeChannel.latest.state.paidByHub === received + total);
  });
});
