/**
 * A real express server selling GET /readings through the stock @x402/express middleware with the trickle-channel
 * scheme, against a test world's hub and chain: the service the x402 end-to-end tests pay; and the world, parties,
 * facilitators and requirements around it.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { x402ResourceServer } from '@x402/core/server';
import type { Network, PaymentRequirements } from '@x402/core/types';
import { paymentMiddleware } from '@x402/express';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import type { Address } from '@trickle/protocol/types';
import {
  TrickleChannelServerScheme,
  TrickleFacilitator,
  memoryNonceStore,
  tricklePaymentOption,
  type NonceStore,
  paymentHeaderGuard,
} from '@trickle/x402/server';
import { createWorld, type World } from './harness.js';

export interface ReadingsService {
  url: string;
  port: number;
  resource: string;
  payTo: Address;
  /** Requests the handler answered with a reading. */
  served: () => number;
  facilitator: TrickleFacilitator;
  /** Make the handler fail on its next call, after the payment was settled: answer 500, or throw. */
  failNext: (how?: 'status' | 'throw') => void;
  close: () => Promise<void>;
}

/**
 * Starts a service on a free loopback port selling GET /readings for `amount` to `payTo`, named `resource`. `nonces`:
 * the facilitator's store; `'default'` for the facilitator's own default (in memory, refusing receipts an earlier run
 * could have served); none for an in-memory store that knows no earlier run.
 */
export async function startReadingsService(
  w: World,
  o: {
    payTo: Address;
    resource: string;
    amount: bigint;
    nonces?: NonceStore | 'default';
    /** How long a receipt may live (the route's `maxTimeoutSeconds`); default tricklePaymentOption's (60). */
    maxTimeoutSeconds?: number;
  },
): Promise<ReadingsService> {
  const network = networkOf(w);
  const facilitator = facilitatorFor(w, {
    // No earlier run of a test's service served receipts: without 'default', the in-memory store is told so, and a
    // receipt a test makes by hand (any expiry within maxTimeoutSeconds) is accepted at once after the start.
    nonces: o.nonces === 'default' ? undefined : (o.nonces ?? memoryNonceStore({ rememberedSince: 0n })),
  });
  const server = new x402ResourceServer(facilitator).register(network, new TrickleChannelServerScheme());
  let served = 0;
  let fail: 'status' | 'throw' | undefined;
  const app = express();
  const option = tricklePaymentOption({
    network,
    payTo: o.payTo,
    token: w.token,
    amount: o.amount,
    resource: o.resource,
    maxTimeoutSeconds: o.maxTimeoutSeconds,
  });
  app.use(paymentHeaderGuard(), paymentMiddleware({ 'GET /readings': { accepts: [option] } }, server));
  app.get('/readings', (_req, res) => {
    const how = fail;
    fail = undefined;
    if (how === 'throw') throw new Error('sensor offline');
    if (how === 'status') {
      res.status(500).json({ error: 'sensor offline' });
      return;
    }
    served++;
    res.json({ celsius: 21.5 });
  });
  const http: Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/readings`,
    port,
    resource: o.resource,
    payTo: o.payTo,
    served: () => served,
    facilitator,
    failNext: (how = 'status') => (fail = how),
    close: () => new Promise((r) => http.close(() => r())),
  };
}

/** The x402 network name of the world's chain. */
export const networkOf = (w: World): Network => `eip155:${w.chain.chainId}` as Network;

/** A client of the world and its channel. */
export interface X402Party {
  client: TrickleClient;
  channel: ClientChannel;
}

/** A client of the world (account `index`) with a channel of `deposit`, into which the hub deposits `inbound`. */
export async function x402Party(w: World, index: number, deposit: bigint, inbound = 0n): Promise<X402Party> {
  const client = await w.client(index);
  const channel = await client.openChannel({ token: w.token, deposit });
  if (inbound > 0n) await w.hubDeposit(channel.channelId, inbound);
  return { client, channel };
}

/** A world with its hub, a buyer and a seller: what every x402 test starts from. */
export interface X402World {
  w: World;
  network: Network;
  /** Account 2, with a channel of `payerDeposit`. */
  payer: TrickleClient;
  payerChannel: ClientChannel;
  /** Account 3, with a channel of 1,000 and the hub's `sellerInbound` in it (it can be paid that much). */
  seller: TrickleClient;
  sellerChannel: ClientChannel;
}

/** Starts a world and its hub and opens the buyer's and the seller's channels (defaults: 10,000,000 and 5,000,000). */
export async function x402World(o: { payerDeposit?: bigint; sellerInbound?: bigint } = {}): Promise<X402World> {
  const w = await createWorld();
  try {
    await w.startHub();
    const payer = await x402Party(w, 2, o.payerDeposit ?? 10_000_000n);
    const seller = await x402Party(w, 3, 1_000n, o.sellerInbound ?? 5_000_000n);
    return {
      w,
      network: networkOf(w),
      payer: payer.client,
      payerChannel: payer.channel,
      seller: seller.client,
      sellerChannel: seller.channel,
    };
  } catch (e) {
    await w.close();
    throw e;
  }
}

/** A facilitator for the world's hub, chain and adjudicator (`nonces` and `now` as TrickleFacilitator takes them). */
export const facilitatorFor = (w: World, o: { nonces?: NonceStore | undefined; now?: () => number } = {}) =>
  new TrickleFacilitator({ hub: w.hub!.address, chainId: w.chain.chainId, adjudicator: w.adjudicator, ...o });

/**
 * The requirements of a trickle-channel route selling `resource` for `amount` to `payTo` with receipts living 60 s, as
 * a route's configuration gives them (`extra` adds to the resource).
 */
export const channelRequirements = (
  w: World,
  o: { payTo: Address; amount: bigint; resource: string; extra?: Record<string, unknown> },
): PaymentRequirements => ({
  scheme: 'trickle-channel',
  network: networkOf(w),
  asset: w.token,
  amount: o.amount.toString(),
  payTo: o.payTo,
  maxTimeoutSeconds: 60,
  extra: { resource: o.resource, ...o.extra },
});

/** `base` as the server scheme completes it with what `facilitator` supports (hub, chain, minExpiry…). */
export const requirementsFrom = async (
  facilitator: TrickleFacilitator,
  base: PaymentRequirements,
): Promise<PaymentRequirements> =>
  new TrickleChannelServerScheme().enhancePaymentRequirements(base, (await facilitator.getSupported()).kinds[0]!);
