#!/usr/bin/env node
// EV charging paid by the second: the car pays the charger through a payment stream routed by the hub. The charger
// buys the energy it delivers on the hub's kWh market (one round a second, a solar home sells) and passes the
// clearing price on as its tariff; the car's stream follows it (rate = price per kWh × 11 kW / 3600 s).
//   node examples/ev-charging.mjs [--json]
import { onStream } from '@trickle/client';
import { sandbox, usdt, fmt, report } from './lib/sandbox.mjs';

const CHARGER_KW = 11n;
const ROUNDS = 3;
const POSTED_TARIFF = usdt(0.32); // per kWh, until the first clearing
const ratePerSecond = (pricePerKwh) => (pricePerKwh * CHARGER_KW) / 3600n;

const world = await sandbox({ devices: 3, market: { roundMs: 1000, feeBps: 0n } });
try {
  const car = await world.device(0);
  const charger = await world.device(1);
  const solar = await world.device(2);
  const carChannel = await car.openChannel({ token: world.token, deposit: usdt(20) });
  const chargerChannel = await charger.openChannel({ token: world.token, deposit: usdt(5) });
  const solarChannel = await solar.openChannel({ token: world.token, deposit: usdt(1) });
  await world.hubFunds(chargerChannel, usdt(20)); // the hub's side carries the stream's ticks and market proceeds
  await world.hubFunds(solarChannel, usdt(5));

  // The charger follows the stream as it is paid: opened, rate changes, running total, end.
  const seen = [];
  onStream(charger, (e) => seen.push(e));

  const session = carChannel.stream({ to: charger.address, ratePerSecond: ratePerSecond(POSTED_TARIFF), tickMs: 100 });
  const tariffs = [POSTED_TARIFF];
  // The charger's tariff is the kWh market's clearing price; here the car hears it straight from the charger's client.
  charger.market.onClearing((c) => {
    const kwh = c.record.markets.find((m) => m.market === 'kwh');
    if (!kwh?.price || session.status !== 'running') return;
    tariffs.push(kwh.price);
    session.adjust(ratePerSecond(kwh.price));
  });

  for (let n = 0; n < ROUNDS; n++) {
    const round = await charger.market.nextRound();
    await Promise.all([
      charger.market.submitOrder(chargerChannel, { market: 'kwh', side: 'bid', quantity: 1n, price: usdt(0.4), round }),
      solar.market.submitOrder(solarChannel, {
        market: 'kwh',
        side: 'ask',
        quantity: 1n,
        price: usdt(0.22 + 0.04 * n),
        round,
      }),
    ]);
    while (chargerChannel.latest.state.round < round || solarChannel.latest.state.round < round)
      await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((r) => setTimeout(r, 300)); // charge a little at the last tariff
  const paid = await session.stop();
  while (seen.at(-1)?.type !== 'end') await new Promise((r) => setTimeout(r, 10));

  const received = seen.at(-1).received;
  const rates = seen.filter((e) => e.type === 'open' || e.type === 'rate').map((e) => e.ratePerSecond);
  const carClose = await car.close(carChannel.channelId);
  const chargerClose = await charger.close(chargerChannel.channelId);
  report(
    {
      ticks: seen.length,
      tariffs,
      rates,
      paid,
      received,
      carPaid: carChannel.latest.state.paidByDevice,
      carClose: carClose.mode,
      chargerClose: chargerClose.mode,
    },
    [
      `tariffs per kWh: ${tariffs.map(fmt).join(' → ')} (posted, then each round's clearing price)`,
      `stream rates per second at ${CHARGER_KW} kW: ${rates.map(fmt).join(' → ')}`,
      `car paid ${fmt(paid)} in ${seen.length} ticks; the charger saw ${fmt(received)}`,
      `channels closed: car ${carClose.mode}, charger ${chargerClose.mode}`,
    ],
  );
} finally {
  await world.close();
}
