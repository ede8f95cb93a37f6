#!/usr/bin/env node
// Data for payment, atomically: a sensor sells one signed reading for a routed conditional payment.
//   1. the sensor signs a reading, encrypts it with a fresh 32-byte key k (AES-256-GCM) and hands the buyer the
//      ciphertext and keccak256(k);
//   2. the buyer pays through the hub with a lock on keccak256(k): the hub locks the same amount toward the sensor;
//   3. the sensor claims by revealing k, which is exactly what the buyer needs: its payment settles as `claimed`
//      with the preimage k, and it decrypts the reading and checks the sensor's signature.
// The key-for-money exchange is atomic: the sensor is paid if and only if k becomes known to the buyer (off-chain
// through the claim; on-chain through the adjudicator's preimage registry if anyone stops cooperating).
//   node examples/data-market.mjs [--json]
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { hashPreimage } from '@trickle/protocol/locks';
import { toHex } from '@trickle/protocol/hex';
import { Wallet, verifyMessage } from 'ethers';
import { sandbox, usdt, fmt, report } from './lib/sandbox.mjs';

const PRICE = usdt(0.25);

const world = await sandbox({ devices: 2 });
try {
  const buyer = await world.device(0);
  const sensor = await world.device(1);
  const buyerChannel = await buyer.openChannel({ token: world.token, deposit: usdt(5) });
  const sensorChannel = await sensor.openChannel({ token: world.token, deposit: usdt(0.5) });
  await world.hubFunds(sensorChannel, usdt(5));

  // The sensor: sign a reading with its own key, encrypt it with a fresh key k, offer ciphertext + keccak256(k).
  // (An application signature, EIP-191: a Trickle Signer signs only Trickle's own typed messages.)
  const sensorKey = Wallet.createRandom();
  const reading = JSON.stringify({ sensor: sensorKey.address, celsius: 21.4, at: new Date(0).toISOString() });
  const signature = await sensorKey.signMessage(reading);
  const k = randomBytes(32);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', k, iv);
  const ciphertext = Buffer.concat([cipher.update(JSON.stringify({ reading, signature })), cipher.final()]);
  const offer = { ciphertext, iv, tag: cipher.getAuthTag(), hash: hashPreimage(toHex(k)), price: PRICE };
  // It reveals k to whoever pays a lock on its hash (and only to claim that lock).
  sensorChannel.onConditionalPayment((p) => {
    if (p.hash === offer.hash && p.amount >= offer.price) void p.claim(toHex(k));
  });

  // The buyer: pay a routed conditional transfer locked on the offered hash; the outcome carries k.
  const outcome = await buyerChannel.pay(offer.price, {
    to: sensor.address,
    lock: { hash: offer.hash, expiresIn: 7200 },
  });
  if (outcome.status !== 'claimed') throw new Error('the sensor did not claim: the buyer was refunded');
  const decipher = createDecipheriv('aes-256-gcm', Buffer.from(outcome.preimage.slice(2), 'hex'), offer.iv);
  decipher.setAuthTag(offer.tag);
  const opened = JSON.parse(Buffer.concat([decipher.update(offer.ciphertext), decipher.final()]).toString('utf8'));
  const signer = verifyMessage(opened.reading, opened.signature);
  const signedBySensor = signer === JSON.parse(opened.reading).sensor;

  while (sensorChannel.latest.state.paidByHub < PRICE) await new Promise((r) => setTimeout(r, 10));
  const paid = buyerChannel.latest.state.paidByDevice;
  const received = sensorChannel.latest.state.paidByHub;
  await buyer.close(buyerChannel.channelId);
  await sensor.close(sensorChannel.channelId);
  report(
    {
      celsius: JSON.parse(opened.reading).celsius,
      signedBySensor,
      paid,
      received,
      keyRevealed: outcome.preimage === toHex(k),
    },
    [
      `the buyer paid ${fmt(paid)} for one reading; the sensor received ${fmt(received)} by revealing the key`,
      `decrypted with the revealed key: ${JSON.parse(opened.reading).celsius} °C, signed by the sensor: ${signedBySensor}`,
    ],
  );
} finally {
  await world.close();
}
