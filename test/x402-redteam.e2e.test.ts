// Attacks on the paid-HTTP surface: the stock @x402/express middleware with the trickle-channel scheme, a real hub,
// a real chain and real routed payments. Every refusal must be a 402 (never a 500, never the content) and must leave
// the service's state unchanged: the nonce is not consumed, so the same genuine receipt still buys the content once.
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { request as httpRequest } from 'node:http';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { x402Client } from '@x402/core/client';
import { x402ResourceServer } from '@x402/core/server';
import { encodePaymentSignatureHeader } from '@x402/core/http';
import type { Network, PaymentRequirements } from '@x402/core/types';
import { paymentMiddleware } from '@x402/express';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { payForReceipt } from '@trickle/client';
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { isTrickleError, type ErrorCode } from '@trickle/protocol/errors';
import { signReceipt, signedReceiptToJson, type SignedReceipt } from '@trickle/protocol/receipt';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import {
  TRICKLE_REASONS,
  TrickleChannelServerScheme,
  TrickleFacilitator,
  memoryNonceStore,
  tricklePaymentOption,
} from '@trickle/x402/server';
import type { World } from './helpers/harness.js';
import {
  channelRequirements,
  facilitatorFor,
  requirementsFrom,
  startReadingsService,
  x402World,
  type ReadingsService,
} from './helpers/x402-service.js';
import { reasonOf, requirementsOf } from './helpers/x402-headers.js';

const PRICE = 1_000n;
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

describe('x402 red team: hostile payment headers against the stock middleware', () => {
  let w: World;
  let network: Network;
  let payer: TrickleClient;
  let payerChannel: ClientChannel;
  let seller: TrickleClient;
  let a: ReadingsService;
  let requirements: PaymentRequirements;

  beforeAll(async () => {
    ({ w, network, payer, payerChannel, seller } = await x402World());
    a = await startReadingsService(w, { payTo: seller.address, resource: 'sensor-7/readings', amount: PRICE });
    requirements = await requirementsOf(a.url);
  });
  afterAll(async () => {
    await a?.close();
    await w?.close();
  });

  const expiry = (seconds = 60) => BigInt(Math.floor(Date.now() / 1000) + seconds);
  const buy = (resource = a.resource, amount = PRICE) =>
    payForReceipt(payer, payerChannel, { to: a.payTo, amount, resource, expiry: expiry() });

  function header(receipt: unknown, over: Record<string, unknown> = {}): string {
    return encodePaymentSignatureHeader({
      x402Version: 2,
      resource: { url: a.url },
      accepted: requirements,
      payload: { receipt },
      ...over,
    } as never);
  }
  const send = (h: string) => fetch(a.url, { headers: { 'PAYMENT-SIGNATURE': h } });

  /** Refused with 402 (never 500, never the content), nothing served, no nonce consumed. */
  async function refused(res: Response, reason?: string): Promise<void> {
    expect(res.status).toBe(402);
    const body = await res.text();
    expect(body).not.toContain('celsius');
    if (reason !== undefined) expect(reasonOf(res)).toBe(reason);
  }

  /** The genuine receipt still buys the content exactly once: the refusals before changed nothing. */
  async function stillGood(receipt: SignedReceipt): Promise<void> {
    const served = a.served();
    const ok = await send(header(signedReceiptToJson(receipt)));
    expect(ok.status).toBe(200);
    expect(a.served()).toBe(served + 1);
    await refused(await send(header(signedReceiptToJson(receipt))), TRICKLE_REASONS.replayed);
  }

  it('malformed headers (not base64, not JSON, wrong shapes) get 402, never 500, and change nothing', async () => {
    const served = a.served();
    const nonces = a.facilitator.rememberedNonces;
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    for (const h of [
      '%%%not-base64%%%',
      b64('not json'),
      b64('[]'),
      b64('null'),
      b64('{"x402Version":2}'),
      b64(JSON.stringify({ x402Version: 2, accepted: requirements })),
      b64(JSON.stringify({ x402Version: 2, accepted: requirements, payload: null })),
      b64(JSON.stringify({ x402Version: 2, accepted: requirements, payload: 'x' })),
      b64(JSON.stringify({ x402Version: 2, accepted: requirements, payload: { receipt: 'x' } })),
      b64(JSON.stringify({ x402Version: 2, accepted: requirements, payload: { receipt: { __proto__: { a: 1 } } } })),
    ]) {
      const res = await send(h);
      expect(res.status, h).toBe(402);
      expect(await res.text()).not.toContain('celsius');
    }
    expect(a.served()).toBe(served);
    expect(a.facilitator.rememberedNonces).toBe(nonces);
  });

  it('a receipt with negative, decimal, exponent, padded or above-uint256 amounts is trickle_malformed', async () => {
    const genuine = signedReceiptToJson(await buy());
    for (const amount of ['-1000', '1000.0', '1e3', '01000', ' 1000', '0x3e8', (1n << 256n).toString(), '0', '']) {
      await refused(await send(header({ ...genuine, amount })), TRICKLE_REASONS.malformed);
    }
    for (const expiry of ['-1', (1n << 64n).toString(), '1.5'])
      await refused(await send(header({ ...genuine, expiry })), TRICKLE_REASONS.malformed);
    await stillGood(await buy());
  });

  it('a forged, truncated, extended, zeroed or malleated signature is refused; the genuine receipt still works', async () => {
    const signed = await buy();
    const json = signedReceiptToJson(signed);
    const sig = json.sig;
    const r = sig.slice(2, 66);
    const s = BigInt(`0x${sig.slice(66, 130)}`);
    const v = parseInt(sig.slice(130, 132), 16);
    const highS = (SECP256K1_N - s).toString(16).padStart(64, '0');
    const flippedV = (v === 27 ? 28 : v === 28 ? 27 : v ^ 1).toString(16).padStart(2, '0');
    for (const bad of [
      sig.slice(0, -2),
      `${sig}00`,
      `0x${'00'.repeat(65)}`,
      `0x${r}${sig.slice(66, 130)}${(v ^ 1).toString(16).padStart(2, '0')}`,
      `0x${r}${'ff'.repeat(32)}${sig.slice(130)}`,
    ]) {
      const res = await send(header({ ...json, sig: bad }));
      await refused(res);
      expect([TRICKLE_REASONS.malformed, TRICKLE_REASONS.notSignedByHub]).toContain(reasonOf(res));
    }
    // The malleated twin (r, n − s, v flipped) recovers to the same key on lax verifiers: it is refused (low-s only),
    // and the genuine receipt is unaffected.
    const twin = { ...json, sig: `0x${r}${highS}${flippedV}` };
    await refused(await send(header(twin)), TRICKLE_REASONS.notSignedByHub);
    await stillGood(signed);
  });

  it("the hub's own signature under another chain's or adjudicator's domain is trickle_not_signed_by_hub", async () => {
    const genuine = (await buy()).receipt;
    const hub = nobleSigner(w.hubKey);
    for (const separator of [
      domainSeparator(trickleDomain(w.chain.chainId + 1n, w.adjudicator)),
      domainSeparator(trickleDomain(w.chain.chainId, `0x${'11'.repeat(20)}` as Address)),
    ]) {
      const other = signReceipt(hub, separator, { ...genuine, nonce: `0x${'ab'.repeat(32)}` as never });
      await refused(await send(header(signedReceiptToJson(other))), TRICKLE_REASONS.notSignedByHub);
    }
  });

  it('a payload whose `accepted` was edited (lower price, other payee, asset, scheme, network) is refused', async () => {
    const signed = await buy();
    const json = signedReceiptToJson(signed);
    for (const accepted of [
      { ...requirements, amount: '1' },
      { ...requirements, payTo: payer.address },
      { ...requirements, asset: `0x${'22'.repeat(20)}` },
      { ...requirements, scheme: 'exact' },
      { ...requirements, network: 'eip155:1' },
      { ...requirements, maxTimeoutSeconds: 1_000_000 },
      { ...requirements, extra: { ...requirements.extra, resource: 'sensor-7/other' } },
    ]) {
      await refused(await send(header(json, { accepted })));
    }
    expect(a.served()).toBeGreaterThanOrEqual(0);
    await stillGood(signed);
  });

  it('a payment header of another x402 version is refused and does not consume the receipt', async () => {
    const signed = await buy();
    const json = signedReceiptToJson(signed);
    const served = a.served();
    const nonces = a.facilitator.rememberedNonces;
    // Version 1 reaches the facilitator (the stock server matches a v1 payload by scheme and network only): it says why.
    await refused(await send(header(json, { x402Version: 1 })), TRICKLE_REASONS.unsupportedVersion);
    // Other versions are refused by the stock server before any facilitator sees them.
    for (const x402Version of [3, 0, '2', null]) await refused(await send(header(json, { x402Version })));
    expect(a.served()).toBe(served);
    expect(a.facilitator.rememberedNonces).toBe(nonces);
    await stillGood(signed);
  });

  it('an oversized payment header is refused by the server (431), not served, not a 500', async () => {
    const served = a.served();
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        { host: '127.0.0.1', port: a.port, path: '/readings', headers: { 'PAYMENT-SIGNATURE': 'A'.repeat(64 * 1024) } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(431);
    expect(a.served()).toBe(served);
  });

  it('one receipt sent on 16 requests at once is served exactly once; the others are trickle_replayed', async () => {
    const signed = await buy();
    const h = header(signedReceiptToJson(signed));
    const served = a.served();
    const nonces = a.facilitator.rememberedNonces;
    const results = await Promise.all(Array.from({ length: 16 }, () => send(h)));
    const ok = results.filter((r) => r.status === 200);
    expect(ok).toHaveLength(1);
    for (const r of results.filter((x) => x.status !== 200)) await refused(r, TRICKLE_REASONS.replayed);
    expect(a.served()).toBe(served + 1);
    expect(a.facilitator.rememberedNonces).toBe(nonces! + 1);
  });

  it('a receipt of an overpayment or an underpayment is trickle_wrong_amount and stays unconsumed', async () => {
    const over = await buy(a.resource, PRICE + 1n);
    await refused(await send(header(signedReceiptToJson(over))), TRICKLE_REASONS.wrongAmount);
    const under = await buy(a.resource, 1n);
    await refused(await send(header(signedReceiptToJson(under))), TRICKLE_REASONS.wrongAmount);
    expect(a.facilitator.rememberedNonces).toBeGreaterThanOrEqual(0);
  });

  it('a unicode resource name is bought by its exact UTF-8 bytes: its NFD twin, case or trimmed forms are other resources', async () => {
    const name = 'capteur-7/relevés °C 🌡';
    const u = await startReadingsService(w, { payTo: seller.address, resource: name, amount: PRICE });
    try {
      const x402 = new x402Client()
        .register(network, new TrickleChannelClientScheme({ client: payer }))
        .setSpendControls({ allowedAssets: [{ network, asset: w.token, maxAmountPerPayment: PRICE.toString() }] });
      const res = await wrapFetchWithPayment(fetch, x402)(u.url);
      expect(res.status).toBe(200);
      expect(u.served()).toBe(1);
      const accepted = await requirementsOf(u.url);
      expect(accepted.extra['resource']).toBe(name);
      for (const twin of [name.normalize('NFD'), name.toUpperCase(), ` ${name}`, name.replace('🌡', '\uFFFD')]) {
        const r = await payForReceipt(payer, payerChannel, {
          to: u.payTo,
          amount: PRICE,
          resource: twin,
          expiry: expiry(),
        });
        const h = encodePaymentSignatureHeader({
          x402Version: 2,
          resource: { url: u.url },
          accepted,
          payload: { receipt: signedReceiptToJson(r) },
        } as never);
        const refusedRes = await fetch(u.url, { headers: { 'PAYMENT-SIGNATURE': h } });
        expect(refusedRes.status, JSON.stringify(twin)).toBe(402);
        expect(reasonOf(refusedRes), JSON.stringify(twin)).toBe(TRICKLE_REASONS.wrongResource);
      }
      expect(u.served()).toBe(1);
    } finally {
      await u.close();
    }
  });

  it('when the handler fails after the receipt was settled, the same receipt buys the content on a retry', async () => {
    const signed = await buy();
    const h = header(signedReceiptToJson(signed));
    const served = a.served();
    const nonces = a.facilitator.rememberedNonces;
    a.failNext();
    const failed = await send(h);
    expect(failed.status).toBe(500);
    expect(reasonOf(failed)).toBe(TRICKLE_REASONS.released);
    expect(a.served()).toBe(served);
    expect(a.facilitator.rememberedNonces).toBe(nonces); // the nonce was given back
    const retry = await send(h);
    expect(retry.status).toBe(200);
    expect(a.served()).toBe(served + 1);
    await refused(await send(h), TRICKLE_REASONS.replayed);
  });

  it('a handler that throws gives the nonce back too; a receipt refused as a replay is never released by it', async () => {
    const signed = await buy();
    const h = header(signedReceiptToJson(signed));
    const served = a.served();
    a.failNext('throw');
    const failed = await send(h);
    expect(failed.status).toBe(500);
    expect(reasonOf(failed)).toBe(TRICKLE_REASONS.released);
    expect(a.served()).toBe(served);
    // Served now; a second request with it is a replay (refused before the handler, so nothing to give back).
    expect((await send(h)).status).toBe(200);
    a.failNext('throw');
    await refused(await send(h), TRICKLE_REASONS.replayed);
    await refused(await send(h), TRICKLE_REASONS.replayed);
    expect(a.served()).toBe(served + 1);
  });
});

describe('x402 red team: a hostile or misconfigured service against the client scheme (nothing paid before a refusal)', () => {
  let w: World;
  let payer: TrickleClient;
  let payerChannel: ClientChannel;
  let seller: TrickleClient;
  let base: PaymentRequirements;

  beforeAll(async () => {
    ({ w, payer, payerChannel, seller } = await x402World({
      payerDeposit: 1_000_000n,
      sellerInbound: 1_000_000n,
    }));
    base = channelRequirements(w, {
      payTo: seller.address,
      amount: PRICE,
      resource: 'sensor-7/readings',
      extra: { hub: w.hub!.address, chainId: w.chain.chainId.toString(), adjudicator: w.adjudicator },
    });
  });
  afterAll(async () => w?.close());

  it('a sane requirement is paid (control)', async () => {
    const scheme = new TrickleChannelClientScheme({ client: payer });
    const before = payerChannel.latest.state.paidByDevice;
    const out = await scheme.createPaymentPayload(2, base);
    expect(out.payload['receipt']).toBeDefined();
    expect(payerChannel.latest.state.paidByDevice - before).toBe(PRICE);
  });

  it('requirements the client could only pay for and then have refused are refused before paying, with a code', async () => {
    const scheme = new TrickleChannelClientScheme({ client: payer });
    const cases: [string, PaymentRequirements][] = [
      ['another adjudicator', { ...base, extra: { ...base.extra, adjudicator: `0x${'11'.repeat(20)}` } }],
      ['another chain id', { ...base, extra: { ...base.extra, chainId: '1' } }],
      ['another network', { ...base, network: 'eip155:1' }],
      ['negative maxTimeoutSeconds', { ...base, maxTimeoutSeconds: -60 }],
      ['zero maxTimeoutSeconds', { ...base, maxTimeoutSeconds: 0 }],
      ['fractional maxTimeoutSeconds', { ...base, maxTimeoutSeconds: 1.5 }],
      ['huge maxTimeoutSeconds', { ...base, maxTimeoutSeconds: 1e300 }],
      ['decimal amount', { ...base, amount: '1000.5' }],
      ['negative amount', { ...base, amount: '-1000' }],
      ['exponent amount', { ...base, amount: '1e3' }],
      ['zero amount', { ...base, amount: '0' }],
      ['above uint256', { ...base, amount: (1n << 256n).toString() }],
      ['not an address payTo', { ...base, payTo: 'seller' }],
    ];
    for (const [name, req] of cases) {
      const before = payerChannel.latest.state.paidByDevice;
      const err = await scheme.createPaymentPayload(2, req).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isTrickleError(err), `${name}: ${String(err)}`).toBe(true);
      expect(payerChannel.latest.state.paidByDevice, name).toBe(before);
    }
  });
  it('with a pinned channel, requirements in another token, or above its balance, are refused before paying', async () => {
    const scheme = new TrickleChannelClientScheme({ client: payer, channel: payerChannel });
    const cases: [string, PaymentRequirements, ErrorCode][] = [
      // Paid in the pinned channel's token, the receipt would be trickle_wrong_token: money gone, nothing served.
      ['another token', { ...base, asset: `0x${'77'.repeat(20)}` }, 'WRONG_CHANNEL'],
      [
        'above the balance',
        { ...base, amount: (payerChannel.balance().available + 1n).toString() },
        'INSUFFICIENT_FUNDS',
      ],
    ];
    for (const [name, req, code] of cases) {
      const before = payerChannel.latest.state.paidByDevice;
      const err = await scheme.createPaymentPayload(2, req).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isTrickleError(err, code), `${name}: ${String(err)}`).toBe(true);
      expect(payerChannel.latest.state.paidByDevice, name).toBe(before);
    }
    // Another client's channel: paid through that client's connection, the hub's receipt went there, and this
    // client answered RECEIPT_MISSING after the money left (a receipt naming this client as payer would not verify).
    const other = await w.client(4);
    const otherChannel = await other.openChannel({ token: w.token, deposit: 10_000n });
    for (const [name, pay] of [
      [
        'scheme',
        () => new TrickleChannelClientScheme({ client: payer, channel: otherChannel }).createPaymentPayload(2, base),
      ],
      [
        'payForReceipt',
        () =>
          payForReceipt(payer, otherChannel, {
            to: seller.address,
            amount: PRICE,
            resource: 'sensor-7/readings',
            expiry: BigInt(Math.floor(Date.now() / 1000) + 30),
          }),
      ],
    ] as const) {
      const err = await (pay as () => Promise<unknown>)().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isTrickleError(err, 'WRONG_CHANNEL'), `${name}: ${String(err)}`).toBe(true);
      expect(otherChannel.latest.state.paidByDevice, name).toBe(0n);
    }
    // The pinned channel in the asked token pays as before.
    const out = await scheme.createPaymentPayload(2, base);
    expect(out.payload['receipt']).toBeDefined();
  });

  it('payForReceipt with an expiry that is not a uint64 or a nonce that is not 32 bytes is refused; the client lives on', async () => {
    const expiry = BigInt(Math.floor(Date.now() / 1000) + 60);
    const args = { to: seller.address, amount: PRICE, resource: 'sensor-7/readings', expiry };
    const cases: [string, Parameters<typeof payForReceipt>[2]][] = [
      ['expiry 2^64', { ...args, expiry: 1n << 64n }],
      ['negative expiry', { ...args, expiry: -1n }],
      ['short nonce', { ...args, nonce: '0x1234' as Bytes32 }],
      ['not hex nonce', { ...args, nonce: `0x${'zz'.repeat(32)}` as Bytes32 }],
    ];
    for (const [name, a] of cases) {
      const before = payerChannel.latest.state.paidByDevice;
      // Before: the route could not be encoded after the payment was queued, the error escaped unhandled and the
      // client was left disconnected (every later payment DISCONNECTED or waiting forever).
      const err = await payForReceipt(payer, payerChannel, a).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isTrickleError(err, 'INVALID_ARGUMENT'), `${name}: ${String(err)}`).toBe(true);
      expect(payerChannel.latest.state.paidByDevice, name).toBe(before);
    }
    const signed = await payForReceipt(payer, payerChannel, args);
    expect(signed.receipt.amount).toBe(PRICE);
  });

  it("a payer whose clock is 20 s ahead or behind the service's still buys (the receipt's expiry sits mid-window)", async () => {
    // A service that knows no earlier run, and one just started with the default in-memory store (its requirements
    // carry extra.minExpiry, and the client's receipt expires then).
    for (const nonces of [memoryNonceStore({ rememberedSince: 0n }), undefined]) {
      const facilitator = facilitatorFor(w, { nonces });
      const req = await requirementsFrom(facilitator, base);
      expect(req.extra['minExpiry'] === undefined, 'minExpiry only from a store that forgets').toBe(!!nonces);
      for (const skewMs of [20_000, -20_000]) {
        const scheme = new TrickleChannelClientScheme({ client: payer, now: () => Date.now() + skewMs });
        const out = await scheme.createPaymentPayload(2, req);
        const settled = await facilitator.settle({ x402Version: 2, accepted: req, payload: out.payload }, req);
        expect(settled, `clock ${skewMs} ms, ${nonces ? 'no earlier run' : 'default store'}`).toMatchObject({
          success: true,
        });
      }
    }
  });
});

describe('x402 red team: routes the middleware does not match', () => {
  // Express runs a GET handler for HEAD, but the stock middleware matches a route key's verb exactly: with the key
  // 'GET /readings' an unpaid HEAD request runs the handler (its side effects, its headers) without any payment.
  // A key without a verb covers every method; this is what @trickle/x402's README recommends.
  async function serve(key: string) {
    const network = 'eip155:31337' as Network;
    const address = (b: string) => `0x${b.repeat(20)}` as Address;
    const facilitator = new TrickleFacilitator({ hub: address('11'), chainId: 31337n, adjudicator: address('22') });
    const server = new x402ResourceServer(facilitator).register(network, new TrickleChannelServerScheme());
    let served = 0;
    const app = express();
    const option = tricklePaymentOption({
      network,
      payTo: address('33'),
      token: address('44'),
      amount: 5n,
      resource: 'r',
    });
    app.use(paymentMiddleware({ [key]: { accepts: [option] } }, server));
    app.get('/readings', (_req, res) => {
      served++;
      res.json({ celsius: 1 });
    });
    const http: Server = await new Promise((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
    return { base, served: () => served, close: () => new Promise<void>((r) => http.close(() => r())) };
  }

  it('with a verb-less route key, unpaid HEAD, odd paths and cases get 402 and never run the handler', async () => {
    const s = await serve('/readings');
    try {
      for (const [method, path] of [
        ['GET', '/readings'],
        ['HEAD', '/readings'],
        ['POST', '/readings'],
        ['GET', '/readings/'],
        ['GET', '/READINGS'],
        ['GET', '//readings'],
        ['GET', '/%72eadings'],
        ['GET', '/x/../readings'],
        ['GET', '/readings?free=1'],
      ] as const) {
        const res = await fetch(`${s.base}${path}`, { method });
        expect(res.status, `${method} ${path}`).toBe(402);
      }
      expect(s.served()).toBe(0);
    } finally {
      await s.close();
    }
  });

  it("with 'GET /readings' an unpaid HEAD runs the handler (the stock middleware's verb match; why the README warns)", async () => {
    const s = await serve('GET /readings');
    try {
      expect((await fetch(`${s.base}/readings`)).status).toBe(402);
      expect(s.served()).toBe(0);
      const head = await fetch(`${s.base}/readings`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(s.served()).toBe(1);
    } finally {
      await s.close();
    }
  });
});
