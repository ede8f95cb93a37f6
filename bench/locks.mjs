#!/usr/bin/env node
// Conditional (hashlocked) routed payments against plain routed payments through one hub, in the same run.
//   node bench/locks.mjs [--json] [--count 200]
// A chain server process (the local EDR chain over JSON-RPC), a hub in this process with an LMDB store, and two
// devices with file stores (examples/lib/sandbox.mjs). Device A pays device B through the hub, one payment at a
// time, `--count` times each way:
// - plain: `pay(amount, { to })`, done when the hub's delivery receipt arrives (two channel updates: A's, the hub's);
// - conditional: `pay(amount, { to, lock })` with B claiming at once, done when A's handle settles `claimed` (six
//   updates and a claim frame each way: A's lock, the hub's lock to B, B's claim, the hub's claim state, the hub's
//   claim to A, A's claim state).
// Figures are from whatever machine runs it (on a shared machine, noisy): read the ratio, not the absolutes.
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { hashPreimage } from '@trickle/protocol/locks';
import { toHex } from '@trickle/protocol/hex';
import { sandbox, usdt } from '../examples/lib/sandbox.mjs';

const { values: args } = parseArgs({
  options: { json: { type: 'boolean', default: false }, count: { type: 'string', default: '200' } },
});
const COUNT = Number(args.count);
const round = (x) => Math.round(x * 10) / 10;

const world = await sandbox({ devices: 2 });
try {
  const a = await world.device(0);
  const b = await world.device(1);
  const ach = await a.openChannel({ token: world.token, deposit: usdt(100) });
  const bch = await b.openChannel({ token: world.token, deposit: usdt(1) });
  await world.hubFunds(bch, usdt(100));
  const keys = new Map();
  bch.onConditionalPayment((p) => void p.claim(keys.get(p.hash)));

  // Warm up both paths.
  for (let i = 0; i < 5; i++) await ach.pay(1n, { to: b.address });
  let t = performance.now();
  for (let i = 0; i < COUNT; i++) await ach.pay(1n, { to: b.address });
  const plainSec = (performance.now() - t) / 1000;

  const conditional = async () => {
    const k = toHex(randomBytes(32));
    const hash = hashPreimage(k);
    keys.set(hash, k);
    const r = await ach.pay(1n, { to: b.address, lock: { hash, expiresIn: 7200 } });
    if (r.status !== 'claimed') throw new Error('a conditional payment was not claimed');
  };
  for (let i = 0; i < 5; i++) await conditional();
  t = performance.now();
  for (let i = 0; i < COUNT; i++) await conditional();
  const conditionalSec = (performance.now() - t) / 1000;

  const expected = BigInt(2 * (COUNT + 5));
  if (bch.latest.state.paidByHub !== expected)
    throw new Error(`the payee received ${bch.latest.state.paidByHub}, expected ${expected}`);
  const locks = {
    conditionalPerSec: round(COUNT / conditionalSec),
    plainRoutedPerSec: round(COUNT / plainSec),
    ratio: Math.round((plainSec / conditionalSec) * 1000) / 1000,
    count: COUNT,
    method:
      'one payment at a time from one device to another through one in-process hub (LMDB, durable commits); conditional = lock, lock toward the payee, claims both ways',
  };
  if (args.json) process.stdout.write(`${JSON.stringify({ locks })}\n`);
  else
    process.stdout.write(
      `conditional routed: ${locks.conditionalPerSec}/s, plain routed: ${locks.plainRoutedPerSec}/s, ratio ${locks.ratio}\n`,
    );
} finally {
  await world.close();
}
