/**
 * A real express server selling GET /readings through the stock @x402/express middleware with the trickle-channel
 * scheme, against a test world's hub and chain: the service the x402 end-to-end tests pay.
 */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { x402ResourceServer } from '@x402/core/server';
import type { Network } from '@x402/core/types';
import { paymentMiddleware } from '@x402/express';
import type { Address } from '@trickle/protocol/types';
import {
  TrickleChannelServerScheme,
  TrickleFacilitator,
  memoryNonceStore,
  tricklePaymentOption,
  type NonceStore,
} from '@trickle/x402/server';
import type { World } from './harness.js';

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
  const network = `eip155:${w.chain.chainId}` as Network;
  const facilitator = new TrickleFacilitator({
    hub: w.hub!.address,
    chainId: w.chain.chainId,
    adjudicator: w.adjudicator,
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
  app.use(paymentMiddleware({ 'GET /readings': { accepts: [option] } }, server));
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
