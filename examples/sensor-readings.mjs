#!/usr/bin/env node
// A sensor sells readings pay-per-message: a building controller pays the sensor (through the hub) for each
// reading, and the sensor publishes a reading only after that payment is durable in its channel.
//   node examples/sensor-readings.mjs [--json]
import { sandbox, usdt, fmt, report } from './lib/sandbox.mjs';

const PRICE = usdt(0.0005);
const READINGS = 40;

const world = await sandbox({ devices: 2 });
try {
  const buyer = await world.device(0);
  const sensor = await world.device(1);
  const buyerChannel = await buyer.openChannel({ token: world.token, deposit: usdt(5) });
  const sensorChannel = await sensor.openChannel({ token: world.token, deposit: usdt(0.5) });
  await world.hubFunds(sensorChannel, usdt(5));

  // The sensor's side: one reading per payment received.
  const published = [];
  sensorChannel.onPayment((p) => {
    published.push({ paymentId: p.paymentId, celsius: 20 + Math.round(Math.sin(published.length / 5) * 30) / 10 });
  });

  // The buyer's side: pay, then read.
  for (let k = 0; k < READINGS; k++) await buyerChannel.pay(PRICE, { to: sensor.address });
  while (published.length < READINGS) await new Promise((r) => setTimeout(r, 10));

  const received = sensorChannel.latest.state.paidByHub;
  await buyer.close(buyerChannel.channelId);
  await sensor.close(sensorChannel.channelId);
  report({ readings: published.length, paid: buyerChannel.latest.state.paidByDevice, received }, [
    `${published.length} readings sold at ${fmt(PRICE)} each; last: ${published.at(-1).celsius} °C`,
    `buyer paid ${fmt(buyerChannel.latest.state.paidByDevice)}; sensor received ${fmt(received)}`,
  ]);
} finally {
  await world.close();
}
