#!/usr/bin/env node
// x402 over channels, against x402 `exact`-style settlement, and concurrent payment streams on one hub.
//   node bench/x402.mjs [--json] [--requests 10000] [--concurrency 2] [--exact-requests 200] [--exact-clients 20]
//                       [--stream-steps 5,10,25,50,100,200,400] [--stream-seconds 3]
// A chain server process (the local EDR chain over JSON-RPC) and a `trickle-hub` process; the HTTP service, the x402
// clients and the devices run in this process. Figures are from whatever machine runs it: read them against each
// other (paid vs unpaid, channel vs exact), not as absolutes.
//
// - Channel scheme: a sensor API behind the stock @x402/express middleware with the `trickle-channel` scheme; payers
//   use the stock @x402/fetch client with the scheme; `--requests` paid requests from `--concurrency` payers (one
//   channel each); the same server's unprotected route gives the unpaid baseline at the same concurrency. Every
//   payment goes to the one service, so they all end as hub credits on its one channel: past two concurrent payers
//   the hub's credits to that channel queue (measured 2026-12-02: ~45 routed payments/s and p50 160 ms at 8 payers
//   against ~200/s at 2), hence the default of 2.
// - `exact`-style: the same service paid as x402 `exact` pays — an ERC20 transfer per request, confirmed on-chain
//   before the request is served — with the chain mining a block every 2 s (interval mining, not one block per
//   transaction). The transfer is a plain ERC20 `transfer` (the test token has no EIP-3009
//   `transferWithAuthorization`, which `exact` uses and which costs more gas): gas per request is a lower bound.
// - Streams: N streams (one channel and one device each, paying the hub) at a 100 ms tick, N doubled until some tick
//   is not answered before the next one is due; `streams.concurrent` is the largest N with every tick acked in time.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import express from 'express';
import { x402ResourceServer } from '@x402/core/server';
import { x402Client } from '@x402/core/client';
import { paymentMiddleware } from '@x402/express';
import { wrapFetchWithPayment } from '@x402/fetch';
import { Contract } from 'ethers';
import { startChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { TrickleClient, adjudicatorClientChain, memoryChannelStore } from '@trickle/client';
import { nativeSigner, bestVerifier } from '@trickle/protocol/native';
import { zeroState } from '@trickle/protocol/channel';
import { TrickleChannelServerScheme, TrickleFacilitator, tricklePaymentOption } from '@trickle/x402/server';
import { TrickleChannelClientScheme } from '@trickle/x402/client';
import { deviceKey, openChannels, startHubProcess } from './lib/world.mjs';
import { percentile, round, sleep } from './lib/util.mjs';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    requests: { type: 'string', default: '10000' },
    concurrency: { type: 'string', default: '2' },
    'exact-requests': { type: 'string', default: '200' },
    'exact-clients': { type: 'string', default: '20' },
    'stream-steps': { type: 'string', default: '5,10,25,50,100,200,400' },
    'stream-seconds': { type: 'string', default: '3' },
    'skip-streams': { type: 'boolean', default: false },
  },
});
const REQUESTS = Number(args.requests);
const CONCURRENCY = Number(args.concurrency);
const EXACT_REQUESTS = Number(args['exact-requests']);
const EXACT_CLIENTS = Number(args['exact-clients']);
const STREAM_STEPS = args['stream-steps'].split(',').map(Number);
const STREAM_SECONDS = Number(args['stream-seconds']);
const PRICE = 1_000n; // 0.001 USDT
const BLOCK_MS = 2_000;
const log = (...a) => process.stderr.write(`[x402] ${a.join(' ')}\n`);

const dir = mkdtempSync(join(tmpdir(), 'trickle-bench-x402-'));
const accounts = 3 + CONCURRENCY + EXACT_CLIENTS;
const server = await startChainServer({ accounts });
const cleanups = [() => server.stop()];
const result = { x402: {}, streams: {} };
try {
  const deployer = server.wallet(0);
  const adjudicator = await deployAdjudicator(deployer);
  const token = await deployToken(deployer, 'usdt');
  for (let i = 1; i < accounts; i++)
    await mintTestToken(deployer, token.address, server.addresses[i], 1_000_000_000_000n);
  const hub = await startHubProcess({
    rpc: server.url,
    adjudicator: adjudicator.address,
    hubKey: server.accounts[1],
    dir,
  });
  cleanups.unshift(() => hub.stop());
  const verifier = bestVerifier();
  const receiptGas = async (hash) => BigInt((await server.provider.getTransactionReceipt(hash)).gasUsed);
  const device = (i) =>
    TrickleClient.connect({
      url: hub.url,
      signer: nativeSigner(server.accounts[i]),
      verifier,
      store: memoryChannelStore(),
      chain: adjudicatorClientChain({
        wallet: server.wallet(i),
        chainId: server.chainId,
        adjudicator: adjudicator.address,
      }),
    });
  const clients = [];
  cleanups.unshift(() => Promise.all(clients.map((c) => c.disconnect())));

  // ---- the service and its payers ----
  let onChainGas = 0n; // every transaction the channel scheme needs, over all its paid requests
  const countGas = async (fn) => {
    const before = await server.provider.getBlockNumber();
    const out = await fn();
    const after = await server.provider.getBlockNumber();
    for (let b = before + 1; b <= after; b++) {
      const block = await server.provider.getBlock(b);
      for (const h of block.transactions) onChainGas += await receiptGas(h);
    }
    return out;
  };
  const sensor = await device(2);
  clients.push(sensor);
  const sensorChannel = await countGas(() => sensor.openChannel({ token: token.address, deposit: 1_000n }));
  const needed = PRICE * BigInt(REQUESTS + 1_000);
  await countGas(async () => {
    const hubWallet = server.wallet(1);
    await approve(hubWallet, token.address, adjudicator.address, needed);
    await new Adjudicator(adjudicator.address, hubWallet).deposit(sensorChannel.channelId, needed);
  });
  const payers = [];
  for (let p = 0; p < CONCURRENCY; p++) {
    const c = await device(3 + p);
    clients.push(c);
    const ch = await countGas(() =>
      c.openChannel({ token: token.address, deposit: needed / BigInt(CONCURRENCY) + PRICE * 1_000n }),
    );
    payers.push({ client: c, channel: ch });
  }
  await sleep(2_500); // the hub process polls the chain every second: let it see its deposit on the sensor's channel

  const network = `eip155:${server.chainId}`;
  const facilitator = new TrickleFacilitator({
    hub: sensor.hub.hub,
    chainId: sensor.hub.chainId,
    adjudicator: sensor.hub.adjudicator,
    verifier,
    maxNonces: 1_000_000,
  });
  const resourceServer = new x402ResourceServer(facilitator).register(network, new TrickleChannelServerScheme());
  const app = express();
  app.use(
    paymentMiddleware(
      {
        'GET /reading': {
          accepts: tricklePaymentOption({
            network,
            payTo: sensor.address,
            token: token.address,
            amount: PRICE,
            resource: 'bench/reading',
          }),
        },
      },
      resourceServer,
    ),
  );
  app.get('/reading', (_q, res) => res.json({ celsius: 21.5 }));
  app.get('/free', (_q, res) => res.json({ celsius: 21.5 }));
  // `exact`-style: a transfer per request, checked on-chain before serving (see the header).
  const usedTx = new Set();
  const transferTopic = token.contract.interface.getEvent('Transfer').topicHash;
  app.get('/exact', async (req, res) => {
    const hash = req.get('X-Payment-Tx');
    if (!hash)
      return res
        .status(402)
        .json({ scheme: 'exact', payTo: sensor.address, asset: token.address, amount: PRICE.toString() });
    if (usedTx.has(hash)) return res.status(402).json({ error: 'replayed' });
    const r = await server.provider.getTransactionReceipt(hash);
    const paid =
      r?.status === 1 &&
      r.logs.some(
        (l) =>
          l.address === token.address &&
          l.topics[0] === transferTopic &&
          BigInt(l.topics[2]) === BigInt(sensor.address) &&
          BigInt(l.data) >= PRICE,
      );
    if (!paid) return res.status(402).json({ error: 'not paid' });
    usedTx.add(hash);
    res.json({ celsius: 21.5 });
  });
  const http = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  cleanups.unshift(() => new Promise((r) => http.close(r)));
  const base = `http://127.0.0.1:${http.address().port}`;

  /** `total` requests from `n` loops; latencies in ms, sorted. */
  const load = async (total, n, request) => {
    const lat = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: n }, async (_, loop) => {
        while (next < total) {
          next++;
          const t = performance.now();
          const res = await request(loop);
          if (res.status !== 200) throw new Error(`status ${res.status}`);
          await res.arrayBuffer();
          lat.push(performance.now() - t);
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    lat.sort((a, b) => a - b);
    return { perSec: lat.length / seconds, p50: percentile(lat, 50), p99: percentile(lat, 99), count: lat.length };
  };

  // ---- channel scheme: paid vs unpaid ----
  const paidFetches = payers.map(({ client }) => {
    const x = new x402Client()
      .register(network, new TrickleChannelClientScheme({ client, verifier }))
      .setSpendControls({ allowedAssets: [{ network, asset: token.address, maxAmountPerPayment: PRICE.toString() }] });
    return wrapFetchWithPayment(fetch, x);
  });
  log(`warm-up, then ${REQUESTS} paid requests from ${CONCURRENCY} payers`);
  await load(200, CONCURRENCY, (i) => paidFetches[i](`${base}/reading`));
  await load(500, CONCURRENCY, () => fetch(`${base}/free`));
  const paid = await load(REQUESTS, CONCURRENCY, (i) => paidFetches[i](`${base}/reading`));
  log(`paid: ${round(paid.perSec, 0)}/s p50 ${round(paid.p50, 2)} ms p99 ${round(paid.p99, 2)} ms`);
  const unpaid = await load(3_000, CONCURRENCY, () => fetch(`${base}/free`));
  log(`unpaid: ${round(unpaid.perSec, 0)}/s p50 ${round(unpaid.p50, 2)} ms p99 ${round(unpaid.p99, 2)} ms`);
  const paidRequests = REQUESTS + 200;
  // Close every channel the scheme used: their close transactions are part of its cost.
  await countGas(async () => {
    for (const { client, channel } of payers) await client.close(channel.channelId);
    await sensor.close(sensorChannel.channelId);
  });

  // ---- exact-style: one ERC20 transfer per request, blocks every 2 s ----
  await server.provider.send('evm_setAutomine', [false]);
  await server.provider.send('evm_setIntervalMining', [BLOCK_MS]);
  const exactGas = [];
  const erc20 = Array.from(
    { length: EXACT_CLIENTS },
    (_, k) => new Contract(token.address, token.contract.interface, server.wallet(3 + CONCURRENCY + k)),
  );
  log(`exact-style: ${EXACT_REQUESTS} requests from ${EXACT_CLIENTS} clients, a block every ${BLOCK_MS} ms`);
  const exact = await load(EXACT_REQUESTS, EXACT_CLIENTS, async (k) => {
    const required = await fetch(`${base}/exact`);
    const { payTo, amount } = await required.json();
    const tx = await erc20[k].transfer(payTo, BigInt(amount));
    let r = null;
    while (!r) {
      await sleep(50);
      r = await server.provider.getTransactionReceipt(tx.hash);
    }
    exactGas.push(BigInt(r.gasUsed));
    return fetch(`${base}/exact`, { headers: { 'X-Payment-Tx': tx.hash } });
  });
  await server.provider.send('evm_setIntervalMining', [0]);
  await server.provider.send('evm_setAutomine', [true]);
  log(`exact: p50 ${round(exact.p50, 0)} ms`);

  result.x402 = {
    paidRequestsPerSec: round(paid.perSec, 0),
    unpaidRequestsPerSec: round(unpaid.perSec, 0),
    paidOverUnpaid: round(paid.perSec / unpaid.perSec, 3),
    addedP99Ms: round(paid.p99 - unpaid.p99, 2),
    channelP50Ms: round(paid.p50, 2),
    channelP99Ms: round(paid.p99, 2),
    exactP50Ms: round(exact.p50, 0),
    channelGasPerRequest: round(Number(onChainGas) / paidRequests, 1),
    exactGasPerRequest: round(Number(exactGas.reduce((a, b) => a + b, 0n)) / exactGas.length, 0),
    method: `stock @x402/express + @x402/fetch 2.27.0 with trickle-channel; ${paidRequests} paid requests (${REQUESTS} measured) from ${CONCURRENCY} payers, one channel each, through a trickle-hub process; unpaid = the same server's unprotected route at the same concurrency; channel gas = every transaction of the scheme (opens with approvals, the hub's deposit, cooperative closes) over all paid requests; exact-style = an ERC20 transfer confirmed before serving, ${EXACT_REQUESTS} requests from ${EXACT_CLIENTS} clients, interval mining every ${BLOCK_MS} ms (plain transfer, not EIP-3009: gas is a lower bound)`,
  };

  // ---- streams: how many at a 100 ms tick, every tick acked before the next is due ----
  if (!args['skip-streams']) {
    const max = Math.max(...STREAM_STEPS);
    const keys = Array.from({ length: max }, (_, i) => deviceKey('streams', i));
    log(`opening ${max} stream channels`);
    const devices = await openChannels(server, adjudicator, keys, { deposit: 10n ** 18n, group: 'streams' });
    const streamClients = [];
    cleanups.unshift(() => Promise.all(streamClients.map((c) => c.disconnect())));
    const channels = [];
    for (const d of devices) {
      const c = await TrickleClient.connect({
        url: hub.url,
        signer: nativeSigner(d.key),
        verifier,
        store: memoryChannelStore(),
      });
      streamClients.push(c);
      const record = {
        params: d.params,
        channelId: d.channelId,
        funding: { device: 10n ** 18n, hub: 0n },
        latest: { state: zeroState(d.channelId) },
        signedVersion: 0n,
      };
      channels.push(await c.attachChannel(record));
    }
    const steps = [];
    let sustained = 0;
    for (const n of STREAM_STEPS) {
      const streams = channels
        .slice(0, n)
        .map((ch) => ch.stream({ ratePerSecond: 10n ** 12n, tickMs: 100, stallMs: 1_000 }));
      await sleep(500);
      const lateBefore = streams.reduce((a, s) => a + s.lateTicks, 0);
      const paidBefore = streams.reduce((a, s) => a + s.paid(), 0n);
      await sleep(STREAM_SECONDS * 1000);
      const late = streams.reduce((a, s) => a + s.lateTicks, 0) - lateBefore;
      const stalled = streams.filter((s) => s.status !== 'running').length;
      const ticks = Number((streams.reduce((a, s) => a + s.paid(), 0n) - paidBefore) / 10n ** 11n); // 1e11 wei per 100 ms tick
      await Promise.all(streams.map((s) => s.stop()));
      const ok = late === 0 && stalled === 0;
      steps.push({ streams: n, ticksPaid: ticks, lateTicks: late, stalled, allAckedInTime: ok });
      log(`${n} streams: ${late} late ticks, ${stalled} stalled`);
      if (late > 0.05 * ticks || stalled > 0) break;
      if (ok) sustained = n;
    }
    // On a shared machine one scheduling hiccup makes a tick late; also report the largest step within 1 % late ticks.
    const within1Pct = steps.filter((x) => x.stalled === 0 && x.lateTicks <= 0.01 * x.ticksPaid).map((x) => x.streams);
    result.streams = {
      concurrent: sustained,
      concurrentWithin1PctLate: within1Pct.length ? Math.max(...within1Pct) : 0,
      steps,
      method: `streams paying the hub at tickMs 100 (one device and channel each, native crypto, all devices in one process next to the hub process on the same cores), ${STREAM_SECONDS} s per step after 0.5 s; a step passes when no tick found the previous one unanswered and no stream stalled, and the ramp ends past 5 % late ticks or at a stall; concurrent = the largest passing step of ${STREAM_STEPS.join(', ')}`,
    };
  }
} finally {
  for (const c of cleanups) await c().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}

if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
