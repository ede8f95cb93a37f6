#!/usr/bin/env node
// The Trickle demo: a fleet of machines paying each other over payment channels on a local chain.
//   npm run demo            live progress, then a summary table
//   npm run demo -- --json  one JSON object (reconciled, channels, payments, rounds, payoutsTotal, depositsTotal…)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { startChainServer } from '@trickle/devchain/chainServer';
import { deployAdjudicator, deployToken } from '@trickle/chain/deploy';
import { approve, mintTestToken } from '@trickle/chain/erc20';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { queryEvents } from '@trickle/chain/events';
import { nobleSigner } from '@trickle/protocol/signer';
import { nativeSigner } from '@trickle/protocol/native';
import { createHub, openLmdbStore, adjudicatorHubChain } from '@trickle/hub';
import { TrickleClient, fileChannelStore, adjudicatorClientChain } from '@trickle/client';
import { createWatchtower } from '@trickle/cli/watch/watchtower';

const { values: args } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    devices: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '6' },
  },
});
const N = Number(args.devices);
const STREAM_SECONDS = Number(args.seconds);
const USDT = (x) => BigInt(Math.round(x * 1e6));
const fmt = (v) => (Number(v) / 1e6).toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 6 });
const t0 = performance.now();
const elapsed = () => ((performance.now() - t0) / 1000).toFixed(1);

// ---- progress on the terminal (one refreshing status line), silent with --json ----
const tty = !args.json && process.stderr.isTTY;
let phase = 'starting';
const stats = { payments: 0, routed: 0, rounds: 0, trades: 0, orders: 0, lateOrders: 0, closed: 0 };
const statusLine = () =>
  `[${elapsed()}s] ${phase.padEnd(28)} payments ${stats.payments.toLocaleString()}  routed ${stats.routed}  rounds ${stats.rounds}  trades ${stats.trades}  closed ${stats.closed}/${N}`;
const ticker = tty ? setInterval(() => process.stderr.write(`\r${statusLine()}\x1b[K`), 200) : undefined;
const step = (name) => {
  phase = name;
  if (!args.json && !tty) process.stderr.write(`${statusLine()}\n`);
};

const dir = mkdtempSync(join(tmpdir(), 'trickle-demo-'));
let server;
let hub;
let watchtower;
const clients = [];
try {
  // ---- chain, contracts, tokens ----
  step('starting local chain');
  server = await startChainServer({ accounts: N + 3 }); // 0 deployer, 1 hub, 2 watchtower, 3.. devices
  const deployer = server.wallet(0);
  const hubWallet = server.wallet(1);
  step('deploying adjudicator + USDT');
  const adjudicator = await deployAdjudicator(deployer);
  const usdt = await deployToken(deployer, 'usdt');
  const roles = Array.from({ length: N }, (_, i) => {
    const f = i / N;
    return f < 0.4 ? 'car' : f < 0.6 ? 'charger' : f < 0.84 ? 'meter' : 'sensor';
  });
  const deposits = { car: USDT(50), charger: USDT(10), meter: USDT(20), sensor: USDT(5) };
  step('minting USDT');
  for (let i = 0; i < N; i++) await mintTestToken(deployer, usdt.address, server.addresses[i + 3], deposits[roles[i]]);
  await mintTestToken(deployer, usdt.address, hubWallet.address, USDT(100_000));

  // ---- the hub: embedded LMDB store, market rounds every second ----
  step('starting hub');
  hub = await createHub({
    signer: nativeSigner(server.accounts[1]),
    store: openLmdbStore({ path: join(dir, 'hub') }),
    chain: adjudicatorHubChain({
      provider: server.provider,
      chainId: server.chainId,
      adjudicator: adjudicator.address,
      runner: hubWallet,
    }),
    logger: pino({ level: 'silent' }),
    chainPollMs: 200,
    market: { token: usdt.address, roundMs: 1000, feeBps: 0n },
  });

  // ---- devices open channels (deposit on-chain, wait for the hub to see it) ----
  step(`opening ${N} channels`);
  const fleet = await Promise.all(
    roles.map(async (role, i) => {
      const key = server.accounts[i + 3];
      const client = await TrickleClient.connect({
        url: hub.url,
        signer: nobleSigner(key),
        store: fileChannelStore(join(dir, `device-${i}`)),
        chain: adjudicatorClientChain({
          wallet: server.wallet(i + 3),
          chainId: server.chainId,
          adjudicator: adjudicator.address,
        }),
      });
      clients.push(client);
      const channel = await client.openChannel({
        token: usdt.address,
        deposit: deposits[role],
        challengeDuration: 600n,
      });
      return { role, i, client, channel };
    }),
  );
  // The hub funds its side of the channels of machines that get paid (routed payments, market proceeds).
  step('hub funds receiving channels');
  const receivers = fleet.filter((d) => d.role !== 'car');
  await approve(hubWallet, usdt.address, adjudicator.address, USDT(20) * BigInt(receivers.length));
  const hubAdj = new Adjudicator(adjudicator.address, hubWallet);
  for (const d of receivers) await hubAdj.deposit(d.channel.channelId, USDT(20));
  await waitFor(() => receivers.every((d) => hub.channels.get(d.channel.channelId).funding.hub === USDT(20)), 10_000);

  // ---- streaming: cars pay chargers per Wh (routed) and the hub per second of service; meters buy sensor readings ----
  step(`streaming for ${STREAM_SECONDS}s`);
  const cars = fleet.filter((d) => d.role === 'car');
  const chargers = fleet.filter((d) => d.role === 'charger');
  const meters = fleet.filter((d) => d.role === 'meter');
  const sensors = fleet.filter((d) => d.role === 'sensor');
  const victim = sensors[0];
  let stale; // an early fully signed state of the victim's channel, which the hub will later try to close on
  victim.channel.onPayment(() => {
    if (!stale && victim.channel.latest.state.version >= 1n) stale = victim.channel.latest;
  });
  const until = performance.now() + STREAM_SECONDS * 1000;
  const running = () => performance.now() < until;
  const loops = [];
  for (const car of cars) {
    loops.push(
      (async () => {
        const inflight = [];
        while (running()) {
          inflight.push(car.channel.pay(25n).then(() => stats.payments++)); // 0.000025 USDT per Wh
          if (inflight.length >= 64) await Promise.all(inflight.splice(0));
        }
        await Promise.all(inflight);
      })(),
    );
    loops.push(
      (async () => {
        let k = 0;
        while (running()) {
          const charger = chargers[(car.i + k++) % chargers.length];
          await car.channel.pay(USDT(0.05), { to: charger.client.address }).then(
            () => stats.routed++,
            () => {},
          );
          await sleep(400);
        }
      })(),
    );
  }
  for (const meter of meters) {
    loops.push(
      (async () => {
        let k = 0;
        while (running()) {
          const sensor = sensors[(meter.i + k++) % sensors.length];
          await meter.channel.pay(USDT(0.001), { to: sensor.client.address }).then(
            () => stats.routed++,
            () => {},
          );
          await sleep(250);
        }
      })(),
    );
    // the household electricity market: meters with solar surplus sell, the others buy (kWh, price per kWh)
    loops.push(
      (async () => {
        let lastRound = 0n;
        while (running()) {
          await meter.client.market.ready();
          const round = meter.client.market.round;
          if (round !== lastRound) {
            lastRound = round;
            const sells = (meter.i + Number(round)) % 2 === 0;
            const price = USDT(sells ? 0.1 + (meter.i % 5) * 0.01 : 0.12 + (meter.i % 4) * 0.01);
            await meter.client.market
              .submitOrder(meter.channel, {
                market: 'kwh',
                side: sells ? 'ask' : 'bid',
                quantity: BigInt(1 + (meter.i % 3)),
                price,
                round,
              })
              .then(
                () => stats.orders++,
                () => stats.lateOrders++,
              );
          }
          await sleep(100);
        }
      })(),
    );
  }
  const roundsSeen = new Set();
  meters[0].client.market.onClearing((p) => {
    if (roundsSeen.has(p.record.round)) return;
    roundsSeen.add(p.record.round);
    stats.rounds++;
    stats.trades += p.record.markets.reduce((n, m) => n + m.fills.length, 0);
  });
  await Promise.all(loops);
  // let the last round clear and its credits land, then stop the market
  step('settling last market round');
  const lastRound = hub.market.round;
  await waitFor(() => hub.market.round > lastRound, 5000);
  await waitFor(() => fleet.every((d) => d.channel.pendingPayments === 0), 10_000).catch(() => {});
  await hub.market.stop();
  await sleep(300);

  // ---- a watchtower keeps the victim's latest state; the hub tries to close on a stale one while it is offline ----
  step('stale force close vs watchtower');
  const towerLog = [];
  watchtower = createWatchtower({
    provider: server.provider,
    adjudicator: adjudicator.address,
    sender: server.wallet(2), // any funded account: challenge is open to anyone
    dbPath: join(dir, 'watchtower'),
    confirmations: 0,
    pollMs: 100,
    log: (level, event, fields) => towerLog.push({ level, event, ...fields }),
  });
  await watchtower.start();
  await watchtower.addState(victim.channel.record);
  victim.client.disconnect();
  const staleState = stale ?? {
    state: { ...victim.channel.latest.state, version: 0n, paidByDevice: 0n, paidByHub: 0n, round: 0n },
  };
  const forced = await hubAdj.forceClose(staleState);
  await waitFor(
    async () =>
      (await adjudicator.getChannel(victim.channel.channelId)).version === victim.channel.latest.state.version,
    15_000,
  );
  const [challenged] = await queryEvents(server.provider, adjudicator.address, forced.blockNumber, 'latest', {
    channelId: victim.channel.channelId,
    names: ['Challenged'],
  });
  const challenger = (await server.provider.getTransaction(challenged.log.transactionHash)).from;
  await server.increaseTime(601);
  await server.mine();
  await new Adjudicator(adjudicator.address, server.wallet(2)).settle(victim.channel.channelId);
  stats.closed++;

  // ---- everyone else closes cooperatively ----
  step('cooperative closes');
  await Promise.all(
    fleet
      .filter((d) => d !== victim)
      .map(async (d) => {
        await d.client.close(d.channel.channelId);
        stats.closed++;
      }),
  );

  // ---- reconciliation: every on-chain payout equals the last off-chain state; paid out = deposited ----
  step('reconciling');
  const events = await queryEvents(server.provider, adjudicator.address, 0, 'latest');
  const closedBy = new Map(events.filter((e) => e.name === 'Closed').map((e) => [e.channelId, e]));
  let depositsTotal = 0n;
  for (const e of events) if (e.name === 'ChannelOpened') depositsTotal += e.deposit;
  for (const e of events) if (e.name === 'Deposited') depositsTotal += e.amount;
  let payoutsTotal = 0n;
  const mismatches = [];
  for (const d of fleet) {
    const closed = closedBy.get(d.channel.channelId);
    const rec = d.channel.record;
    const s = rec.latest.state;
    const onChain = await adjudicator.getChannel(d.channel.channelId);
    const hubFunding = hub.channels.get(d.channel.channelId).funding.hub;
    const expectDevice = rec.funding.device - s.paidByDevice + s.paidByHub;
    const expectHub = hubFunding - s.paidByHub + s.paidByDevice;
    if (
      !closed ||
      closed.devicePayout !== expectDevice ||
      closed.hubPayout !== expectHub ||
      onChain.status !== 'closed'
    ) {
      mismatches.push({
        channelId: d.channel.channelId,
        expectDevice,
        expectHub,
        got: closed ? [closed.devicePayout, closed.hubPayout] : null,
      });
    }
    if (closed) payoutsTotal += closed.devicePayout + closed.hubPayout;
  }
  const reconciled = mismatches.length === 0 && payoutsTotal === depositsTotal && challenger === server.addresses[2];
  const totalPaymentsOffChain = fleet.reduce((a, d) => a + d.channel.record.latest.state.paidByDevice, 0n);
  const summary = {
    reconciled,
    channels: N,
    payments: stats.payments + stats.routed,
    streamedPayments: stats.payments,
    routedPayments: stats.routed,
    rounds: stats.rounds,
    trades: stats.trades,
    orders: stats.orders,
    payoutsTotal: payoutsTotal.toString(),
    depositsTotal: depositsTotal.toString(),
    paidByDevicesTotal: totalPaymentsOffChain.toString(),
    staleForceClose: {
      registeredVersion: forced.forceClosed.version.toString(),
      challengedTo: challenged.version.toString(),
      challengedByWatchtower: challenger === server.addresses[2],
    },
    seconds: Number(elapsed()),
    mismatches: mismatches.map((m) => ({
      ...m,
      expectDevice: String(m.expectDevice),
      expectHub: String(m.expectHub),
      got: m.got?.map(String) ?? null,
    })),
  };
  if (ticker) {
    clearInterval(ticker);
    process.stderr.write(`\r${statusLine()}\x1b[K\n`);
  }
  if (args.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } else {
    const rows = [
      [
        'machines / channels',
        `${N} (${cars.length} cars, ${chargers.length} chargers, ${meters.length} meters, ${sensors.length} sensors)`,
      ],
      [
        'payments (streamed + routed)',
        `${summary.payments.toLocaleString()} (${stats.payments.toLocaleString()} + ${stats.routed.toLocaleString()})`,
      ],
      ['market rounds / trades', `${stats.rounds} / ${stats.trades} (${stats.orders} orders)`],
      [
        'stale force close',
        `hub registered v${summary.staleForceClose.registeredVersion}; ${summary.staleForceClose.challengedByWatchtower ? 'watchtower' : 'someone else'} challenged with v${summary.staleForceClose.challengedTo}`,
      ],
      ['deposited on-chain', `${fmt(depositsTotal)} USDT`],
      ['paid out on-chain', `${fmt(payoutsTotal)} USDT`],
      ['every payout = last signed state', mismatches.length === 0 ? 'yes' : `NO (${mismatches.length} mismatches)`],
      ['reconciled', reconciled ? 'yes' : 'NO'],
      ['time', `${summary.seconds}s`],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    process.stdout.write(`\nTrickle demo\n${rows.map(([k, v]) => `  ${k.padEnd(w)}  ${v}`).join('\n')}\n`);
  }
  process.exitCode = reconciled ? 0 : 1;
} catch (e) {
  if (ticker) clearInterval(ticker);
  process.stderr.write(`\ndemo failed during "${phase}": ${e?.stack ?? e}\n`);
  process.exitCode = 1;
} finally {
  if (ticker) clearInterval(ticker);
  await Promise.all(clients.map((c) => c.disconnect()));
  await watchtower?.stop().catch(() => {});
  await hub?.close().catch(() => {});
  await server?.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
async function waitFor(cond, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await sleep(50);
  }
}
