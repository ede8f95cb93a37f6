#!/usr/bin/env node
// A household electricity market: homes with solar surplus sell kWh, the others buy, in rounds the hub clears
// every 1.5 s at one uniform price. Each round ends with one channel update per household that nets everything.
//   node examples/household-market.mjs [--json]
import { sandbox, usdt, fmt, report } from './lib/sandbox.mjs';

const HOMES = 4;
const ROUNDS = 3;

const world = await sandbox({ devices: HOMES, market: { roundMs: 1500, feeBps: 0n } });
try {
  const homes = [];
  for (let i = 0; i < HOMES; i++) {
    const client = await world.device(i);
    const channel = await client.openChannel({ token: world.token, deposit: usdt(10) });
    await world.hubFunds(channel, usdt(10));
    homes.push({ client, channel, solar: i % 2 === 0 });
  }
  const prices = [];
  homes[0].client.market.onClearing((c) => {
    const kwh = c.record.markets.find((m) => m.market === 'kwh');
    if (kwh?.price) prices.push({ round: c.record.round, price: kwh.price, volume: kwh.volume });
  });

  for (let n = 0; n < ROUNDS; n++) {
    // Place this round's orders right after it opens, so they all land in it.
    const round = await homes[0].client.market.nextRound();
    await Promise.all(
      homes.map((h, i) =>
        h.client.market.submitOrder(h.channel, {
          market: 'kwh',
          side: h.solar ? 'ask' : 'bid',
          quantity: BigInt(2 + i),
          price: h.solar ? usdt(0.1 + i * 0.01) : usdt(0.2 - i * 0.01),
          round,
        }),
      ),
    );
    // wait until every home's channel has netted this round
    while (!homes.every((h) => h.channel.latest.state.round >= round)) await new Promise((r) => setTimeout(r, 20));
  }
  const nets = homes.map((h) => h.channel.latest.state.paidByHub - h.channel.latest.state.paidByDevice);
  for (const h of homes) await h.client.close(h.channel.channelId);
  report({ rounds: prices.length, prices, nets }, [
    ...prices.map((p) => `round ${p.round}: ${p.volume} kWh cleared at ${fmt(p.price)}/kWh`),
    ...homes.map(
      (h, i) => `home ${i} (${h.solar ? 'solar' : 'buyer'}): net ${nets[i] >= 0n ? '+' : ''}${fmt(nets[i])}`,
    ),
  ]);
} finally {
  await world.close();
}
