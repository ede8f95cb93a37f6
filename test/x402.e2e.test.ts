import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { x402ResourceServer, type FacilitatorClient } from '@x402/core/server';
import { x402Facilitator } from '@x402/core/facilitator';
import { ExactEvmScheme as ExactEvmServerScheme } from '@x402/evm/exact/server';
import { ExactEvmScheme as ExactEvmFacilitatorScheme } from '@x402/evm/exact/facilitator';
import { Contract, verifyTypedData, type Wallet } from 'ethers';
import { x402Client } from '@x402/core/client';
import {
  decodePaymentRequiredHeader,
  decodePaymentResponseHeader,
  encodePaymentSignatureHeader,
} from '@x402/core/http';
import type { Network, PaymentRequirements } from '@x402/core/types';
import { paymentMiddleware } from '@x402/express';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { payForReceipt } from '@trickle/client';
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { signReceipt, signedReceiptToJson, type SignedReceipt } from '@trickle/protocol/receipt';
import { nobleSigner } from '@trickle/protocol/signer';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import {
  TRICKLE_REASONS,
  TRICKLE_SCHEME,
  TrickleChannelServerScheme,
  memoryNonceStore,
  postgresNonceStore,
  tricklePaymentOption,
} from '@trickle/x402/server';
import pg from 'pg';
import { startPostgres } from './helpers/postgres.mjs';
import type { World } from './helpers/harness.js';
import {
  facilitatorFor,
  startReadingsService,
  x402Party,
  x402World,
  type ReadingsService,
} from './helpers/x402-service.js';
import { reasonOf, requirementsOf } from './helpers/x402-headers.js';
import { waitFor } from './helpers/wait.js';

const PRICE = 1_000n;

describe('x402 over channels: stock @x402 packages with the trickle-channel scheme', () => {
  let w: World;
  let network: Network;
  let payer: TrickleClient;
  let payerChannel: ClientChannel;
  let seller: TrickleClient;
  let sellerChannel: ClientChannel;
  let other: TrickleClient;
  let a: ReadingsService;
  let b: ReadingsService;
  let requirements: PaymentRequirements;

  beforeAll(async () => {
    ({ w, network, payer, payerChannel, seller, sellerChannel } = await x402World());
    other = (await x402Party(w, 4, 1_000n, 5_000_000n)).client;
    a = await startReadingsService(w, { payTo: seller.address, resource: 'sensor-7/readings', amount: PRICE });
    b = await startReadingsService(w, { payTo: other.address, resource: 'sensor-8/readings', amount: PRICE });
    requirements = await requirementsOf(a.url);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await w?.close();
  });

  /** Present a payment payload to a service by hand (what a hostile or buggy client would send). */
  async function present(
    service: ReadingsService,
    receipt: SignedReceipt,
    accepted: PaymentRequirements = requirements,
  ): Promise<Response> {
    const header = encodePaymentSignatureHeader({
      x402Version: 2,
      resource: { url: service.url },
      accepted,
      payload: { receipt: signedReceiptToJson(receipt) },
    });
    return fetch(service.url, { headers: { 'PAYMENT-SIGNATURE': header } });
  }

  const expiry = (seconds = 60) => BigInt(Math.floor(Date.now() / 1000) + seconds);

  it('an unpaid request gets 402 listing the channel scheme, with the hub and the resource', async () => {
    const res = await fetch(a.url);
    expect(res.status).toBe(402);
    const required = decodePaymentRequiredHeader(res.headers.get('PAYMENT-REQUIRED')!);
    expect(required.accepts).toHaveLength(1);
    const req = required.accepts[0]!;
    expect(req.scheme).toBe(TRICKLE_SCHEME);
    expect(req.amount).toBe(PRICE.toString());
    expect(req.payTo).toBe(seller.address);
    expect(req.asset).toBe(w.token);
    expect(req.extra).toMatchObject({ resource: 'sensor-7/readings', hub: w.hub!.address, adjudicator: w.adjudicator });
    expect(a.served()).toBe(0);
  });

  it('the stock @x402/fetch client pays the stock @x402/express middleware through the channel, no chain transaction', async () => {
    // Channel tokens are not x402's default assets: allow this one, capped per payment in base units.
    const client = new x402Client()
      .register(network, new TrickleChannelClientScheme({ client: payer }))
      .setSpendControls({
        allowedAssets: [{ network, asset: w.token, maxAmountPerPayment: (10n * PRICE).toString() }],
      });
    const paidFetch = wrapFetchWithPayment(fetch, client);
    const paidBefore = payerChannel.latest.state.paidByDevice;
    const receivedBefore = sellerChannel.latest.state.paidByHub;
    const blockBefore = await w.chain.provider.getBlockNumber();
    for (let i = 1; i <= 3; i++) {
      const res = await paidFetch(a.url);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ celsius: 21.5 });
      const settled = decodePaymentResponseHeader(res.headers.get('PAYMENT-RESPONSE')!);
      expect(settled.success).toBe(true);
      expect(settled.payer).toBe(payer.address);
      expect(settled.transaction).toMatch(/^0x[0-9a-f]{64}$/); // the routed payment id
      expect(a.served()).toBe(i);
    }
    expect(payerChannel.latest.state.paidByDevice - paidBefore).toBe(3n * PRICE);
    await waitFor(() => sellerChannel.latest.state.paidByHub - receivedBefore === 3n * PRICE);
    expect(await w.chain.provider.getBlockNumber()).toBe(blockBefore);
    expect(a.facilitator.rememberedNonces).toBe(3);
  });

  it('a replayed payment header gets 402 trickle_replayed and nothing is served twice', async () => {
    const receipt = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(),
    });
    const served = a.served();
    const first = await present(a, receipt);
    expect(first.status).toBe(200);
    const again = await present(a, receipt);
    expect(again.status).toBe(402);
    expect(reasonOf(again)).toBe(TRICKLE_REASONS.replayed);
    expect(a.served()).toBe(served + 1);
  });

  it('a receipt for another resource, amount or payee gets 402 with its code', async () => {
    const served = a.served();
    const otherResource = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: 'sensor-7/history',
      expiry: expiry(),
    });
    expect(reasonOf(await present(a, otherResource))).toBe(TRICKLE_REASONS.wrongResource);
    const otherAmount = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE - 1n,
      resource: a.resource,
      expiry: expiry(),
    });
    const res = await present(a, otherAmount);
    expect(res.status).toBe(402);
    expect(reasonOf(res)).toBe(TRICKLE_REASONS.wrongAmount);
    const otherPayee = await payForReceipt(payer, payerChannel, {
      to: b.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(),
    });
    expect(reasonOf(await present(a, otherPayee))).toBe(TRICKLE_REASONS.wrongPayee);
    expect(a.served()).toBe(served);
  });

  it('an expired receipt, or one living longer than maxTimeoutSeconds, gets 402', async () => {
    const served = a.served();
    const expired = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(-1),
    });
    expect(reasonOf(await present(a, expired))).toBe(TRICKLE_REASONS.expired);
    const tooLong = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(3600),
    });
    expect(reasonOf(await present(a, tooLong))).toBe(TRICKLE_REASONS.expiryTooFar);
    expect(a.served()).toBe(served);
  });

  it('a receipt not signed by the hub gets 402 trickle_not_signed_by_hub', async () => {
    const served = a.served();
    const genuine = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(),
    });
    const separator = domainSeparator(trickleDomain(w.chain.chainId, w.adjudicator));
    // Same fields, signed by the payer's own key instead of the hub's.
    const forged = signReceipt(nobleSigner(w.chain.accounts[2]!), separator, {
      ...genuine.receipt,
      nonce: `0x${'77'.repeat(32)}` as never,
    });
    expect(reasonOf(await present(a, forged))).toBe(TRICKLE_REASONS.notSignedByHub);
    // A genuine receipt whose amount was edited no longer recovers to the hub.
    expect(reasonOf(await present(a, { ...genuine, receipt: { ...genuine.receipt, amount: PRICE * 2n } }))).toBe(
      TRICKLE_REASONS.notSignedByHub,
    );
    expect(a.served()).toBe(served);
  });

  it('one receipt presented to two services is served by the one it pays only', async () => {
    const receipt = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(),
    });
    const servedA = a.served();
    const servedB = b.served();
    const reqB = await requirementsOf(b.url);
    const atB = await present(b, receipt, reqB);
    expect(atB.status).toBe(402);
    expect(reasonOf(atB)).toBe(TRICKLE_REASONS.wrongPayee);
    // Same payee, another resource: a second service of the same seller refuses it too.
    const sameSeller = await startReadingsService(w, { payTo: a.payTo, resource: 'sensor-7/video', amount: PRICE });
    try {
      const reqC = await requirementsOf(sameSeller.url);
      expect(reasonOf(await present(sameSeller, receipt, reqC))).toBe(TRICKLE_REASONS.wrongResource);
      expect(sameSeller.served()).toBe(0);
    } finally {
      await sameSeller.close();
    }
    expect((await present(a, receipt)).status).toBe(200);
    expect(a.served()).toBe(servedA + 1);
    expect(b.served()).toBe(servedB);
  });

  it('a payer offline when its payment is delivered gets the signed receipt when it reconnects', async () => {
    // The payee holds its countersignature until the payer has dropped, so the hub finishes the route while the payer
    // is offline; the payer reconnects 1.5 s later.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let holding = false;
    const payee = await w.client(6, {
      creditGuard: async () => {
        holding = true;
        await held;
      },
    });
    const payeeChannel = await payee.openChannel({ token: w.token, deposit: 1_000n });
    await w.hubDeposit(payeeChannel.channelId, 1_000_000n);
    const offline = await w.client(5, { reconnect: { initialDelayMs: 1_500, maxDelayMs: 1_500 } });
    const channel = await offline.openChannel({ token: w.token, deposit: 1_000_000n });
    const paying = payForReceipt(offline, channel, {
      to: payee.address,
      amount: PRICE,
      resource: 'sensor-6/readings',
      expiry: expiry(),
    });
    await waitFor(() => holding);
    offline.dropConnectionForTest();
    release();
    await waitFor(() => payeeChannel.latest.state.paidByHub === PRICE);
    expect(offline.connected).toBe(false);
    const signed = await paying; // resolves after the reconnect, with the hub's signature (checked by payForReceipt)
    expect(signed.receipt).toMatchObject({ payer: offline.address, payee: payee.address, amount: PRICE });
    expect(channel.latest.state.paidByDevice).toBe(PRICE);
  });

  it('a service of two processes (or restarted) on one PostgreSQL nonce store serves a receipt once; a failed store serves nothing and records nothing', async () => {
    const server = await startPostgres();
    const url = await server.createDatabase();
    // Each "process" has its own pool, as separate processes would.
    const pools = [0, 1, 2].map(() => new pg.Pool({ connectionString: url, max: 2 }));
    pools.forEach((p) => p.on('error', () => undefined)); // idle clients dropped by the restart below
    const [p1, p2] = [0, 1].map((k) =>
      startReadingsService(w, {
        payTo: seller.address,
        resource: 'sensor-7/readings',
        amount: PRICE,
        nonces: postgresNonceStore(pools[k]!),
      }),
    );
    const s1 = await p1!;
    const s2 = await p2!;
    try {
      const buy = () =>
        payForReceipt(payer, payerChannel, { to: s1.payTo, amount: PRICE, resource: s1.resource, expiry: expiry(30) });
      // Served by one process, refused by the other: the nonce is in the shared table.
      const r1 = await buy();
      expect((await present(s1, r1)).status).toBe(200);
      const again = await present(s2, r1);
      expect([again.status, reasonOf(again)]).toEqual([402, TRICKLE_REASONS.replayed]);
      // Presented to both at the same instant: served once.
      const r2 = await buy();
      const both = await Promise.all([present(s1, r2), present(s2, r2)]);
      expect(both.map((r) => r.status).sort()).toEqual([200, 402]);
      expect(both.map(reasonOf).filter((x) => x !== undefined && x !== '')).toContain(TRICKLE_REASONS.replayed);
      expect(s1.served() + s2.served()).toBe(2);
      // A process started later (a restart) remembers both.
      const s3 = await startReadingsService(w, {
        payTo: seller.address,
        resource: 'sensor-7/readings',
        amount: PRICE,
        nonces: postgresNonceStore(pools[2]!),
      });
      try {
        for (const r of [r1, r2]) expect(reasonOf(await present(s3, r))).toBe(TRICKLE_REASONS.replayed);
        expect(s3.served()).toBe(0);
        // The database down: refused with trickle_store_failure, nothing served; back up, the same receipt is served.
        const r3 = await buy();
        await server.stop();
        const down = await present(s3, r3);
        expect([down.status, reasonOf(down)]).toEqual([402, TRICKLE_REASONS.storeFailure]);
        expect(s3.served()).toBe(0);
        await server.start();
        expect((await present(s3, r3)).status).toBe(200);
        expect(reasonOf(await present(s1, r3))).toBe(TRICKLE_REASONS.replayed);
        expect(s1.served() + s2.served() + s3.served()).toBe(3);
      } finally {
        await s3.close();
      }
    } finally {
      await s1.close();
      await s2.close();
      await Promise.all(pools.map((p) => p.end()));
      await server.close();
    }
  });

  it('the facilitator keeps nonces until they expire, bounded: when full of unexpired ones it refuses (trickle_busy)', async () => {
    let now = Date.now();
    const small = facilitatorFor(w, {
      // Bounded to one; no earlier run (the default store would refuse these hand-made receipts as too soon).
      nonces: memoryNonceStore({ maxNonces: 1, rememberedSince: 0n }),
      now: () => now,
    });
    const r1 = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(30),
    });
    const r2 = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(30),
    });
    const payload = (r: SignedReceipt) => ({
      x402Version: 2,
      accepted: requirements,
      payload: { receipt: signedReceiptToJson(r) },
    });
    expect((await small.settle(payload(r1), requirements)).success).toBe(true);
    const busy = await small.settle(payload(r2), requirements);
    expect(busy.errorReason).toBe(TRICKLE_REASONS.busy);
    now += 31_000; // r1 has expired: its nonce is forgotten to make room (r2, as old, is refused as expired)
    expect((await small.settle(payload(r2), requirements)).errorReason).toBe(TRICKLE_REASONS.expired);
    const r3 = await payForReceipt(payer, payerChannel, {
      to: a.payTo,
      amount: PRICE,
      resource: a.resource,
      expiry: expiry(90),
    });
    expect((await small.settle(payload(r3), requirements)).success).toBe(true);
    expect(small.rememberedNonces).toBe(1);
    expect((await small.settle(payload(r3), requirements)).errorReason).toBe(TRICKLE_REASONS.replayed);
  });
});

/**
 * The FacilitatorEvmSigner @x402/evm's `exact` facilitator needs, on an ethers wallet of the local chain (x402 ships
 * a viem adapter; the repository uses ethers).
 */
function ethersFacilitatorSigner(wallet: Wallet) {
  const provider = wallet.provider!;
  return {
    getAddresses: () => [wallet.address as `0x${string}`],
    readContract: ({
      address,
      abi,
      functionName,
      args = [],
    }: {
      address: string;
      abi: readonly unknown[];
      functionName: string;
      args?: readonly unknown[];
    }) => new Contract(address, abi as never, provider).getFunction(functionName)(...args),
    verifyTypedData: async ({
      address,
      domain,
      types,
      message,
      signature,
    }: {
      address: string;
      domain: Record<string, unknown>;
      types: Record<string, unknown>;
      primaryType: string;
      message: Record<string, unknown>;
      signature: string;
    }) => {
      const { EIP712Domain: _domain, ...rest } = types as Record<string, never>;
      return verifyTypedData(domain, rest, message, signature).toLowerCase() === address.toLowerCase();
    },
    writeContract: async ({
      address,
      abi,
      functionName,
      args,
    }: {
      address: string;
      abi: readonly unknown[];
      functionName: string;
      args: readonly unknown[];
    }) => (await new Contract(address, abi as never, wallet).getFunction(functionName)(...args)).hash as `0x${string}`,
    sendTransaction: async ({ to, data }: { to: string; data: string }) =>
      (await wallet.sendTransaction({ to, data })).hash as `0x${string}`,
    waitForTransactionReceipt: async ({ hash }: { hash: string }) => {
      const r = await provider.waitForTransaction(hash);
      return { status: r?.status === 1 ? 'success' : 'reverted' };
    },
    getCode: async ({ address }: { address: string }) => (await provider.getCode(address)) as `0x${string}`,
  };
}

describe('x402 with exact offered next to the channel scheme', () => {
  let w: World;
  afterAll(async () => w?.close());

  it('lists both where the operator configures exact too; a client with a channel pays with trickle-channel', async () => {
    const parties = await x402World({ payerDeposit: 1_000_000n, sellerInbound: 1_000_000n });
    w = parties.w;
    const { network, payer, payerChannel, seller } = parties;
    // The stock exact facilitator from @x402/evm, in process, next to Trickle's.
    const exact = new x402Facilitator().register(
      network,
      new ExactEvmFacilitatorScheme(ethersFacilitatorSigner(w.chain.wallet(5)) as never),
    );
    const exactClient: FacilitatorClient = {
      verify: (p, r) => exact.verify(p, r),
      settle: (p, r) => exact.settle(p, r),
      getSupported: async () => exact.getSupported() as never,
    };
    const trickle = facilitatorFor(w);
    const server = new x402ResourceServer([trickle, exactClient])
      .register(network, new TrickleChannelServerScheme())
      .register(network, new ExactEvmServerScheme());
    const app = express();
    app.use(
      paymentMiddleware(
        {
          'GET /readings': {
            accepts: [
              tricklePaymentOption({
                network,
                payTo: seller.address,
                token: w.token,
                amount: PRICE,
                resource: 'sensor-9/readings',
              }),
              {
                scheme: 'exact',
                network,
                payTo: seller.address,
                price: { asset: w.token, amount: PRICE.toString(), extra: { name: 'Tether USD', version: '1' } },
                maxTimeoutSeconds: 60,
              },
            ],
          },
        },
        server,
      ),
    );
    let served = 0;
    app.get('/readings', (_req, res) => {
      served++;
      res.json({ celsius: 19 });
    });
    const http: Server = await new Promise((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    try {
      const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/readings`;
      const unpaid = await fetch(url);
      expect(unpaid.status).toBe(402);
      const accepts = decodePaymentRequiredHeader(unpaid.headers.get('PAYMENT-REQUIRED')!).accepts;
      expect(accepts.map((a) => a.scheme)).toEqual([TRICKLE_SCHEME, 'exact']);
      expect(accepts[1]).toMatchObject({ payTo: seller.address, asset: w.token, amount: PRICE.toString() });
      const client = new x402Client()
        .register(network, new TrickleChannelClientScheme({ client: payer }))
        .setSpendControls({ allowedAssets: [{ network, asset: w.token, maxAmountPerPayment: PRICE.toString() }] });
      const res = await wrapFetchWithPayment(fetch, client)(url);
      expect(res.status).toBe(200);
      expect(decodePaymentResponseHeader(res.headers.get('PAYMENT-RESPONSE')!).success).toBe(true);
      expect(served).toBe(1);
      expect(payerChannel.latest.state.paidByDevice).toBe(PRICE);
    } finally {
      await new Promise((r) => http.close(() => r(undefined)));
    }
  });
});

describe('the README x402 section', () => {
  it('shows examples/paid-api.mjs between its readme markers, word for word (the examples test runs it)', () => {
    const read = (path: string) => readFileSync(new URL(`../${path}`, import.meta.url), 'utf8');
    const example = read('examples/paid-api.mjs');
    const region = (name: string) => {
      const body = example.slice(
        example.indexOf(`// #region ${name}\n`) + `// #region ${name}\n`.length,
        example.lastIndexOf('\n', example.indexOf(`// #endregion ${name}`)) + 1,
      );
      return body.replace(/^ {2}/gm, ''); // the example indents it inside try { }
    };
    const readme = read('README.md');
    const start = readme.indexOf('## Paying per request (x402)');
    const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
    const blocks = [...section.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
    expect(blocks).toEqual([region('readme-server'), region('readme-client')]);
  });
});
