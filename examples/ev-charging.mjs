#!/usr/bin/env node
// Pay-per-kWh EV charging: the car pays the charger through the hub for every 0.1 kWh delivered, and the charger
// keeps delivering only while payments keep landing.   node examples/ev-charging.mjs [--json]
import { sandbox, usdt, fmt, report } from './lib/sandbox.mjs';

const PRICE_PER_KWH = usdt(0.32);
const STEP_KWH = 0.1;
const SESSION_KWH = 5;

const world = await sandbox({ devices: 2 });
try {
  const car = await world.device(0);
  const charger = await world.device(1);
  const carChannel = await car.openChannel({ token: world.token, deposit: usdt(20) });
  const chargerChannel = await charger.openChannel({ token: world.token, deposit: usdt(1) });
  await world.hubFunds(chargerChannel, usdt(20));

  // The charger delivers the next step of energy once a payment for it has landed (durably) in its channel.
  let deliveredKwh = 0;
  let earned = 0n;
  chargerChannel.onPayment((p) => {
    earned += p.amount;
    deliveredKwh = Math.round((deliveredKwh + STEP_KWH) * 10) / 10;
  });

  const stepPrice = (PRICE_PER_KWH * BigInt(STEP_KWH * 10)) / 10n;
  for (let kwh = 0; kwh < SESSION_KWH; kwh = Math.round((kwh + STEP_KWH) * 10) / 10) {
    await carChannel.pay(stepPrice, { to: charger.address }); // resolves when the charger countersigned it
  }
  while (deliveredKwh < SESSION_KWH) await new Promise((r) => setTimeout(r, 10));

  const carClose = await car.close(carChannel.channelId);
  const chargerClose = await charger.close(chargerChannel.channelId);
  report(
    { kwh: deliveredKwh, paid: carChannel.latest.state.paidByDevice, earned, carClose: carClose.mode, chargerClose: chargerClose.mode },
    [
      `charged ${deliveredKwh} kWh at ${fmt(PRICE_PER_KWH)}/kWh in ${SESSION_KWH / STEP_KWH} payments`,
      `car paid ${fmt(carChannel.latest.state.paidByDevice)}; charger earned ${fmt(earned)}`,
      `channels closed: car ${carClose.mode}, charger ${chargerClose.mode}`,
    ],
  );
} finally {
  await world.close();
}
