// Times clearRound on 100,000 seeded random orders across a few markets.
// Run after building: `npx tsc -b packages/market && node packages/market/bench/clear.mjs`.
// Prints one JSON line. `clear100kMs` is the median of 5 runs after 3 warm-ups on the hub's path: orders validated
// and folded into the orders digest on receipt (`validated: true`, `ordersDigest` given). `clear100kRevalidatingMs`
// is the same with every order re-validated at round end (the default); `digestOrders100kMs` is what computing the
// digest at round end would add; `hashClearingMs` is hashing the record for the hub's signature.
// `trades` and `tradesPerRound` count fills (one per order that trades). Optional argument: the number of
// participants (default 2,000).
import { toAddress } from '@trickle/protocol/hex';
import { clearRound, digestOrders, EMPTY_ORDERS_DIGEST, hashClearing } from '../dist/index.js';

const ORDERS = 100_000;
const PARTICIPANTS = Number(process.argv[2] ?? 2_000);
const MARKETS = ['compute.gpu-s', 'energy.kwh', 'storage.gb-h', 'bandwidth.gb'];
const ROUND = 42n;

// mulberry32: small, seeded, good enough to spread prices and sizes.
let seed = 0x7121c4e5;
function random() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
const hex = (bytes) => Array.from({ length: bytes }, () => int(0, 255).toString(16).padStart(2, '0')).join('');

const participants = Array.from({ length: PARTICIPANTS }, () => toAddress(`0x${hex(20)}`));
const orders = [];
for (let k = 0; k < ORDERS; k++) {
  const m = int(0, MARKETS.length - 1);
  const centre = 1_000 * (m + 1);
  orders.push({
    id: `0x${hex(32)}`,
    participant: participants[int(0, PARTICIPANTS - 1)],
    market: MARKETS[m],
    side: random() < 0.5 ? 'bid' : 'ask',
    quantity: BigInt(int(1, 100)),
    price: BigInt(centre + int(-100, 100)) * 1_000_000n, // base units: 6-decimal token
    round: ROUND,
    arrival: BigInt(1_000_000 + k),
  });
}

const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
function time(f) {
  const t = performance.now();
  const r = f();
  return [performance.now() - t, r];
}

// The digest's value does not change the clearing work; it is computed (and timed) last, so that the garbage its
// 300,000-odd keccak calls leave behind does not land in the clearing runs' collections.
const placeholder = EMPTY_ORDERS_DIGEST;
// The hub's path: orders validated and folded into the digest on receipt.
const hub = { feeBps: 25n, ordersDigest: placeholder, validated: true };
// Re-validating every order at round end (the default).
const checked = { feeBps: 25n, ordersDigest: placeholder };
function medianOf(options) {
  for (let k = 0; k < 3; k++) clearRound(ROUND, orders, options);
  const runs = [];
  for (let k = 0; k < 5; k++) runs.push(time(() => clearRound(ROUND, orders, options))[0]);
  return [median(runs), runs];
}
const [hubMs, runs] = medianOf(hub);
const [checkedMs] = medianOf(checked);
const [digestMs, ordersDigest] = time(() => digestOrders(orders));
const record = clearRound(ROUND, orders, { ...hub, ordersDigest });
const [hashMs] = time(() => hashClearing(record));
const fills = record.markets.reduce((n, m) => n + m.fills.length, 0);
const volume = record.markets.reduce((v, m) => v + m.volume, 0n);

console.log(
  JSON.stringify({
    clear100kMs: Number(hubMs.toFixed(1)),
    orders: ORDERS,
    trades: fills,
    participants: record.credits.length,
    updatesPerRound: record.credits.length,
    tradesPerRound: fills,
    markets: record.markets.length,
    volume: volume.toString(),
    runsMs: runs.map((ms) => Number(ms.toFixed(1))),
    clear100kRevalidatingMs: Number(checkedMs.toFixed(1)),
    digestOrders100kMs: Number(digestMs.toFixed(0)),
    hashClearingMs: Number(hashMs.toFixed(0)),
  }),
);
