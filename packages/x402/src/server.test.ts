import { describe, expect, it } from 'vitest';
import type { PaymentRequirements } from '@x402/core/types';
import { domainSeparator, trickleDomain } from '@trickle/protocol/eip712';
import { resourceHash, signReceipt, signedReceiptToJson } from '@trickle/protocol/receipt';
import { nobleSigner } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import { TRICKLE_REASONS, TrickleFacilitator, memoryNonceStore, tricklePaymentOption } from './server.js';

const address = (b: string) => `0x${b.repeat(20)}` as Address;
const word = (b: string) => `0x${b.repeat(32)}` as Bytes32;

describe("a careless seller's maxTimeoutSeconds", () => {
  const hub = nobleSigner(`0x${'07'.repeat(32)}`);
  const adjudicator = address('22');
  const payTo = address('33');
  const token = address('44');
  const facilitator = new TrickleFacilitator({
    hub: hub.address,
    chainId: 31337n,
    adjudicator,
    nonces: memoryNonceStore({ rememberedSince: 0n }),
  });
  const receipt = signReceipt(hub, domainSeparator(trickleDomain(31337n, adjudicator)), {
    payer: address('55'),
    payee: payTo,
    token,
    amount: 5n,
    resource: resourceHash('r'),
    nonce: word('66'),
    expiry: BigInt(Math.floor(Date.now() / 1000) + 30),
    paymentId: word('77'),
  });
  const requirements = (maxTimeoutSeconds: number): PaymentRequirements => ({
    scheme: 'trickle-channel',
    network: 'eip155:31337',
    asset: token,
    amount: '5',
    payTo,
    maxTimeoutSeconds,
    extra: { resource: 'r' },
  });

  it('tricklePaymentOption refuses one that is not a positive integer (RangeError at configuration)', () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53])
      expect(
        () =>
          tricklePaymentOption({
            network: 'eip155:31337',
            payTo,
            token,
            amount: 5n,
            resource: 'r',
            maxTimeoutSeconds: bad,
          }),
        String(bad),
      ).toThrow(RangeError);
    expect(tricklePaymentOption({ network: 'eip155:31337', payTo, token, amount: 5n, resource: 'r' })).toMatchObject({
      maxTimeoutSeconds: 60,
    });
  });

  it('a route written by hand with one is refused trickle_bad_requirements at settle and verify, never thrown', async () => {
    for (const bad of [1.5, -1, 0, Number.NaN]) {
      const req = requirements(bad);
      const payload = { x402Version: 2, accepted: req, payload: { receipt: signedReceiptToJson(receipt) } };
      expect((await facilitator.settle(payload, req)).errorReason, String(bad)).toBe(TRICKLE_REASONS.badRequirements);
      expect((await facilitator.verify(payload, req)).invalidReason, String(bad)).toBe(TRICKLE_REASONS.badRequirements);
    }
    const req = requirements(60);
    const payload = { x402Version: 2, accepted: req, payload: { receipt: signedReceiptToJson(receipt) } };
    expect(await facilitator.settle(payload, req)).toMatchObject({ success: true });
  });
});

describe("a nonce store of the service's own that answers outside its contract", () => {
  const hub = nobleSigner(`0x${'07'.repeat(32)}`);
  const adjudicator = address('22');
  const payTo = address('33');
  const token = address('44');
  const req: PaymentRequirements = {
    scheme: 'trickle-channel',
    network: 'eip155:31337',
    asset: token,
    amount: '5',
    payTo,
    maxTimeoutSeconds: 60,
    extra: { resource: 'r' },
  };
  const payload = {
    x402Version: 2,
    accepted: req,
    payload: {
      receipt: signedReceiptToJson(
        signReceipt(hub, domainSeparator(trickleDomain(31337n, adjudicator)), {
          payer: address('55'),
          payee: payTo,
          token,
          amount: 5n,
          resource: resourceHash('r'),
          nonce: word('68'),
          expiry: BigInt(Math.floor(Date.now() / 1000) + 30),
          paymentId: word('77'),
        }),
      ),
    },
  };
  /** A store whose methods answer `answer` (as a careless implementation might: nothing, a boolean, another word). */
  const causes: unknown[] = [];
  const facilitatorAnswering = (answer: unknown) =>
    new TrickleFacilitator({
      hub: hub.address,
      chainId: 31337n,
      adjudicator,
      nonces: {
        served: async () => answer as boolean,
        claim: async () => answer as 'claimed',
        release: async () => {},
      },
      onStoreError: (e) => causes.push(e),
    });

  it('is refused trickle_store_failure at settle and verify: nothing is served on an answer it cannot read', async () => {
    for (const answer of [undefined, null, true, 'Claimed', 1]) {
      const f = facilitatorAnswering(answer);
      const settled = await f.settle(payload, req);
      expect(settled, String(answer)).toMatchObject({ success: false, errorReason: TRICKLE_REASONS.storeFailure });
      expect(String(causes.at(-1))).toMatch(/nonce store's claim\(\) answered/);
      if (typeof answer !== 'boolean')
        expect((await f.verify(payload, req)).invalidReason, String(answer)).toBe(TRICKLE_REASONS.storeFailure);
    }
    // The answers of the contract are read as before.
    expect(await facilitatorAnswering('claimed').settle(payload, req)).toMatchObject({ success: true });
    expect(await facilitatorAnswering('replayed').settle(payload, req)).toMatchObject({
      success: false,
      errorReason: TRICKLE_REASONS.replayed,
    });
    expect(await facilitatorAnswering(false).verify(payload, req)).toMatchObject({ isValid: true });
    expect(await facilitatorAnswering(true).verify(payload, req)).toMatchObject({ isValid: false });
  });

  it("tells the service why its store failed, and the payer only that it did (a database's error text is not the payer's)", async () => {
    const seen: Array<[unknown, string]> = [];
    const secret = new Error('connect ECONNREFUSED 10.1.2.3:5432 (user trickle_svc, table x402_nonces)');
    const f = new TrickleFacilitator({
      hub: hub.address,
      chainId: 31337n,
      adjudicator,
      nonces: {
        served: async () => {
          throw secret;
        },
        claim: async () => {
          throw secret;
        },
        release: async () => {},
      },
      onStoreError: (e, payer) => {
        seen.push([e, payer]);
        throw new Error('a careless hook');
      },
    });
    const settled = await f.settle(payload, req);
    const verified = await f.verify(payload, req);
    expect(settled).toMatchObject({ success: false, errorReason: TRICKLE_REASONS.storeFailure });
    expect(verified).toMatchObject({ isValid: false, invalidReason: TRICKLE_REASONS.storeFailure });
    for (const text of [settled.errorMessage, verified.invalidMessage]) {
      expect(text).toMatch(/could not check or record the receipt/);
      expect(text).not.toMatch(/10\.1\.2\.3|trickle_svc|x402_nonces|ECONNREFUSED/);
    }
    expect(seen).toEqual([
      [secret, address('55')],
      [secret, address('55')],
    ]);
  });
});
