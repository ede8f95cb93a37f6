#!/usr/bin/env node
// A sensor's HTTP API sold per request with x402: the stock @x402/express middleware on the sensor's side, the stock
// @x402/fetch client on the buyer's, and Trickle's `trickle-channel` scheme registered on both, so each request is
// paid through the buyer's channel (routed through the hub) and no request needs a chain transaction.
//   node examples/paid-api.mjs [--json]
import express from 'express';
import { x402ResourceServer } from '@x402/core/server';
import { x402Client } from '@x402/core/client';
import { decodePaymentResponseHeader } from '@x402/core/http';
import { paymentMiddleware } from '@x402/express';
import { wrapFetchWithPayment } from '@x402/fetch';
import {
  TrickleChannelServerScheme,
  TrickleFacilitator,
  paymentHeaderGuard,
  tricklePaymentOption,
} from '@trickle/x402/server';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import { sandbox, usdt, fmt, report } from './lib/sandbox.mjs';

const REQUESTS = 20;

const world = await sandbox({ devices: 2 });
let listening;
try {
  const sensor = await world.device(0);
  const buyer = await world.device(1);
  const sensorChannel = await sensor.openChannel({ token: world.token, deposit: usdt(1) });
  await world.hubFunds(sensorChannel, usdt(5)); // the hub's side of the sensor's channel carries what buyers pay it
  const buyerChannel = await buyer.openChannel({ token: world.token, deposit: usdt(5) });
  const token = world.token;
  let served = 0;

  // #region readme-server
  const { hub, chainId, adjudicator } = sensor.hub; // the hub whose receipts this service trusts
  const network = `eip155:${chainId}`;
  const server = new x402ResourceServer(new TrickleFacilitator({ hub, chainId, adjudicator })) // in process, offline
    .register(network, new TrickleChannelServerScheme());
  const app = express();
  app.use(
    paymentHeaderGuard(), // drops a hostile payment header (deep nesting stalls the stock matcher): read as unpaid
    paymentMiddleware(
      {
        // No verb: every method pays (Express answers HEAD with the GET handler).
        '/reading': {
          accepts: tricklePaymentOption({
            network,
            payTo: sensor.address,
            token,
            amount: 1_000n,
            resource: 'sensor-7/reading',
          }),
        },
      },
      server,
    ),
  );
  app.get('/reading', (_req, res) => res.json({ celsius: 21.5, n: ++served }));
  // #endregion readme-server
  listening = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const url = `http://127.0.0.1:${listening.address().port}/reading`;

  // #region readme-client
  const x402 = new x402Client()
    .register(network, new TrickleChannelClientScheme({ client: buyer })) // pays from buyer's open channel
    .setSpendControls({ allowedAssets: [{ network, asset: token, maxAmountPerPayment: '10000' }] });
  const paidFetch = wrapFetchWithPayment(fetch, x402);
  const res = await paidFetch(url); // 402 → pay 1,000 units through the hub → the hub's receipt → 200
  const reading = await res.json();
  // #endregion readme-client

  const readings = [reading];
  let settled = decodePaymentResponseHeader(res.headers.get('PAYMENT-RESPONSE'));
  for (let i = 1; i < REQUESTS; i++) {
    const r = await paidFetch(url);
    readings.push(await r.json());
    settled = decodePaymentResponseHeader(r.headers.get('PAYMENT-RESPONSE'));
  }
  const unpaid = await fetch(url);
  while (sensorChannel.latest.state.paidByHub < BigInt(REQUESTS) * 1_000n) await new Promise((r) => setTimeout(r, 10));

  report(
    {
      requests: REQUESTS,
      served,
      unpaidStatus: unpaid.status,
      paid: buyerChannel.latest.state.paidByDevice,
      earned: sensorChannel.latest.state.paidByHub,
      lastTransaction: settled.transaction,
    },
    [
      `${served} readings served, ${REQUESTS} paid requests (an unpaid one got ${unpaid.status})`,
      `buyer paid ${fmt(buyerChannel.latest.state.paidByDevice)}; sensor earned ${fmt(sensorChannel.latest.state.paidByHub)}`,
      `no chain transaction per request: PAYMENT-RESPONSE names the routed payment ${settled.transaction.slice(0, 18)}…`,
    ],
  );
} finally {
  await new Promise((r) => (listening ? listening.close(r) : r()));
  await world.close();
}
