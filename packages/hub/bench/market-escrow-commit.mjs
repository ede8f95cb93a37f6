// Escrow payments committed by the processes of a hub cluster on one PostgreSQL database: each process (a child
// process, its own store, leases and group committer) runs `writers` channels, each committing escrow payments one
// after another (its channel record and the escrow's entry, as the channel table writes them) for `seconds`. Prints
// the escrows and the transactions per second of the cluster, and the commit latency (p50/p99) a writer sees.
// Every escrow is counted in the open round's entries, inside its commit (schema 5: a row per round that every
// escrow commit of the cluster updates); `--plain` commits the same records under another key (no escrow: nothing
// counted), the baseline. The round bound is set far above what the run takes, so nothing is refused.
// Usage: node packages/hub/bench/market-escrow-commit.mjs [processes=2] [writers=64] [seconds=5] [--plain]
import { fork } from 'node:child_process';
import { openPostgresStore } from '@trickle/hub/store/postgres';
import { createCommitter } from '@trickle/hub/committer';
import { percentile } from '../../../bench/lib/util.mjs';
import { startPostgres } from '../../../test/helpers/postgres.mjs';
import { record } from './record.mjs';

const plain = process.argv.includes('--plain');
const args = process.argv.slice(2).filter((a) => !a.startsWith('--'));

if (args[0] === 'child') {
  const [, url, indexArg, writersArg, secondsArg] = args;
  const index = Number(indexArg);
  const writers = Number(writersArg);
  const store = openPostgresStore({ url, cluster: { leaseMs: 5000 } });
  store.market?.limitEntries?.(1_000_000_000);
  let transactions = 0;
  const committer = createCommitter(store, () => transactions++, store.leases);
  const channels = [];
  for (let w = 0; w < writers; w++) {
    const n = index * 100_000 + w;
    const r = record(n, 1n);
    await store.leases.acquire(r.channelId, r.params.device, 0);
    channels.push(n);
  }
  process.send({ ready: true });
  await new Promise((r) => process.once('message', r));
  const until = performance.now() + Number(secondsArg) * 1000;
  const latencies = [];
  let escrows = 0;
  let seq = 0;
  await Promise.all(
    channels.map(async (n) => {
      for (let v = 2n; performance.now() < until; v++) {
        const orderId = `0x${(index * 1e9 + seq++).toString(16).padStart(64, '0')}`;
        const r = record(n, v);
        const escrow = { orderId, device: r.params.device, channelId: r.channelId, amount: '200' };
        const t0 = performance.now();
        await committer.write([
          {
            kind: 'meta',
            key: `${plain ? 'bench/plain/' : 'market/escrow/'}${orderId}`,
            value: JSON.stringify(escrow),
          },
          { kind: 'channel', record: r },
        ]);
        latencies.push(performance.now() - t0);
        escrows++;
      }
    }),
  );
  await store.close();
  process.send({ escrows, transactions, latencies });
  process.exit(0);
}

const processes = Number(args[0] ?? 2);
const writers = Number(args[1] ?? 64);
const seconds = Number(args[2] ?? 5);
const server = await startPostgres();
try {
  const url = await server.createDatabase();
  // Migrate once, before the processes start together.
  const first = openPostgresStore({ url });
  await first.getMeta('x');
  await first.close();
  const children = Array.from({ length: processes }, (_, i) =>
    fork(
      new URL(import.meta.url).pathname,
      ['child', url, String(i), String(writers), String(seconds), ...(plain ? ['--plain'] : [])],
      { stdio: 'inherit' },
    ),
  );
  const next = (c) => new Promise((r) => c.once('message', r));
  await Promise.all(children.map(next));
  const results = children.map(next);
  for (const c of children) c.send({ go: true });
  const out = await Promise.all(results);
  const escrows = out.reduce((a, r) => a + r.escrows, 0);
  const transactions = out.reduce((a, r) => a + r.transactions, 0);
  const latencies = out.flatMap((r) => r.latencies).sort((a, b) => a - b);
  console.log(
    `${plain ? 'plain (nothing counted)' : 'escrows counted'}: ${processes} processes × ${writers} writers, ${seconds} s: ` +
      `${Math.round(escrows / seconds)} escrows/s in ${Math.round(transactions / seconds)} commits/s; ` +
      `write p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms`,
  );
} finally {
  await server.close();
}
