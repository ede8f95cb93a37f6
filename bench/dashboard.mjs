#!/usr/bin/env node
// Dashboard channel pages at 10,000 channels: the server-side sort and page behind /api/channels
// (`node bench/dashboard.mjs`; after `npm run build`). Prints the median and p99 time of one page request's work
// (sort 10,000 records by a column, build 50 rows) per sort key. A shared, noisy machine: orders of magnitude.
import { pageChannels, parseChannelQuery, SORT_KEYS } from '../packages/hub/dist/dashboard/channels-view.js';

const hex = (n, bytes) => `0x${n.toString(16).padStart(bytes * 2, '0')}`;
const records = Array.from({ length: 10_000 }, (_, i) => {
  const channelId = hex(i + 1, 32);
  return {
    params: { device: hex(0x100000 + i, 20), hub: hex(1, 20), token: hex(0xabc, 20) },
    channelId,
    funding: { device: 10n ** 12n + BigInt(i * 31), hub: BigInt(i % 10) * 10n ** 9n },
    status: 'open',
    latest: {
      state: {
        channelId,
        version: BigInt((i * 7919) % 10_007),
        paidByDevice: BigInt(i) * 1_000n,
        paidByHub: 0n,
        round: 0n,
        isFinal: false,
      },
    },
    hubSignedVersion: 0n,
  };
});
const view = { connected: () => true, lastActivity: (r) => Number(BigInt(r.channelId) % 100_000n) };
const out = {};
for (const sort of SORT_KEYS) {
  const q = parseChannelQuery(new URLSearchParams(`sort=${sort}&order=desc&page=7`));
  const ms = [];
  for (let k = 0; k < 60; k++) {
    const t = performance.now();
    pageChannels(records, q, view);
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  out[sort] = { p50Ms: +ms[30].toFixed(2), p99Ms: +ms[59].toFixed(2) };
}
console.log(JSON.stringify({ bench: 'dashboard-channels', channels: records.length, pageSize: 50, bySort: out }));
