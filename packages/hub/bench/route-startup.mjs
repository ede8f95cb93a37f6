// Start-up read of pending routes on an LMDB store holding many finished routes, two ways in one run: what
// `loadPendingRoutes` did before the route index (every route record read and decoded, then the pending ones kept —
// done here on the same database) and what it does now (through the index of pending routes). Also times the one-time
// build of the index when a store from before it is first opened, and one pruner pass over the finished routes
// (batches of `batch`, the event loop's longest delay, and commits made one at a time beside it: their latency).
// Usage: node packages/hub/bench/route-startup.mjs [finished=200000] [pending=100] [batch=1000] [dir=os.tmpdir()]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { open } from 'lmdb';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { decodeRecord } from '@trickle/hub/store/types';

const [finishedArg, pendingArg, batchArg, dirArg] = process.argv.slice(2);
const batch = Number(batchArg ?? 1000);
const finished = Number(finishedArg ?? 200_000);
const pending = Number(pendingArg ?? 100);
const dir = mkdtempSync(join(dirArg ?? tmpdir(), 'trickle-route-startup-'));
const route = (n, status) => ({
  paymentId: `0x${n.toString(16).padStart(64, '0')}`,
  from: `0x${'22'.repeat(20)}`,
  to: `0x${'33'.repeat(20)}`,
  fromChannel: `0x${'44'.repeat(32)}`,
  toChannel: `0x${'55'.repeat(32)}`,
  amount: 1000n + BigInt(n),
  status,
  ...(status === 'pending' ? {} : { finishedAt: 1_000_000 + n }),
});
const ms = (t0) => Number((performance.now() - t0).toFixed(1));

try {
  let s = openLmdbStore({ path: dir });
  for (let k = 0; k < finished; k += 1000) {
    const writes = [];
    for (let n = k; n < Math.min(finished, k + 1000); n++)
      writes.push({ kind: 'route', route: route(n, n % 2 ? 'delivered' : 'refunded') });
    await s.commit(writes);
  }
  await s.commit(Array.from({ length: pending }, (_, i) => ({ kind: 'route', route: route(finished + i, 'pending') })));
  await s.close();

  // Before: every route read and decoded, the pending ones kept (the old `values(ROUTES)` then filter).
  let env = open({ path: dir, readOnly: true });
  let t0 = performance.now();
  const all = [];
  for (const { value } of env.openDB({ name: 'routes', encoding: 'binary' }).getRange()) all.push(decodeRecord(value));
  const before = all.filter((r) => r.status === 'pending');
  const beforeMs = ms(t0);
  await env.close();

  // After: open the store (its replay of the log is bounded by the log's size), then load through the index.
  t0 = performance.now();
  s = openLmdbStore({ path: dir });
  const openMs = ms(t0);
  t0 = performance.now();
  const after = await s.loadPendingRoutes();
  const afterMs = ms(t0);
  await s.close();
  if (before.length !== pending || after.length !== pending) throw new Error('pending routes miscounted');

  // A store from before the index: its first open builds it from every route.
  env = open({ path: dir });
  await env.transaction(() => {
    const index = env.openDB({ name: 'route-index', encoding: 'binary' });
    for (const k of [...index.getKeys()]) index.removeSync(k);
    env.openDB({ name: 'wal', encoding: 'binary' }).removeSync('route-index-epoch');
  });
  await env.close();
  t0 = performance.now();
  s = openLmdbStore({ path: dir });
  const rebuilt = await s.loadPendingRoutes();
  const rebuildMs = ms(t0);

  // One pruner pass: every finished route is past the window; batches of 1,000, as the hub runs them.
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  // Meanwhile one commit at a time (a channel's updates): how long a commit waits while batches run.
  let pruning = true;
  const commitMs = [];
  const committing = (async () => {
    for (let k = 0; pruning; k++) {
      const c0 = performance.now();
      await s.commit([{ kind: 'meta', key: `beside/${k % 100}`, value: String(k) }]);
      commitMs.push(performance.now() - c0);
    }
  })();
  t0 = performance.now();
  let pruned = 0;
  let longest = 0;
  for (;;) {
    const b0 = performance.now();
    const r = await s.pruneRoutes({ before: 2_000_000 + finished, now: 3_000_000 + finished, limit: batch });
    longest = Math.max(longest, performance.now() - b0);
    pruned += r.pruned;
    if (!r.more) break;
  }
  const pruneMs = ms(t0);
  pruning = false;
  await committing;
  commitMs.sort((a, b) => a - b);
  const pct = (q) => Number(commitMs[Math.min(commitMs.length - 1, Math.floor(q * commitMs.length))].toFixed(2));
  loop.disable();
  const left = await s.loadPendingRoutes();
  await s.close();
  console.log(
    JSON.stringify({
      finished,
      pending,
      loadPendingBeforeMs: beforeMs,
      openMs,
      loadPendingAfterMs: afterMs,
      firstOpenBuildingIndexMs: rebuildMs,
      pendingAfterRebuild: rebuilt.length,
      batch,
      pruned,
      pruneAllMs: pruneMs,
      longestBatchMs: Number(longest.toFixed(1)),
      maxEventLoopDelayMs: Number((loop.max / 1e6).toFixed(1)),
      commitsBeside: commitMs.length,
      commitBesideP50Ms: pct(0.5),
      commitBesideP99Ms: pct(0.99),
      commitBesideMaxMs: pct(1),
      pendingAfterPrune: left.length,
    }),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
