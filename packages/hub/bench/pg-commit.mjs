// A cluster hub's commits on PostgreSQL, one at a time: batches of plain channel records (a device's payments),
// fenced by the channel leases this process holds, against a real server (Debian's, as in the tests). Prints wall
// time per commit (p50/p99) and the CPU per commit of this process and of the server's processes together (both
// sides of every round trip). With --stores A,B (paths of `store/postgres.js` from two builds of the hub) the two
// take turns on the same server: an A/B.
// Usage: node packages/hub/bench/pg-commit.mjs [--commits 2000] [--batch 10] [--rounds 3] [--stores A,B]
import { readdirSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { startPostgres } from '../../../test/helpers/postgres.mjs';
import { cpuSecondsOf, percentile, round } from '../../../bench/lib/util.mjs';
import { record } from './record.mjs';

const { values: a } = parseArgs({
  options: {
    commits: { type: 'string', default: '2000' },
    batch: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '3' },
    stores: { type: 'string', default: '' },
  },
});
const COMMITS = Number(a.commits);
const BATCH = Number(a.batch);
const stores = a.stores
  ? a.stores.split(',').map((p) => ({ name: p, url: pathToFileURL(resolve(p)).href }))
  : [{ name: '@trickle/hub/store/postgres', url: '@trickle/hub/store/postgres' }];

/** CPU seconds of every process named postgres (the server and its backends). */
const serverCpu = () => {
  let sum = 0;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'postgres') continue;
    } catch {
      continue;
    }
    sum += cpuSecondsOf(pid) ?? 0;
  }
  return sum;
};

const server = await startPostgres();
const results = new Map(stores.map((s) => [s.name, []]));
try {
  for (let round_ = 0; round_ < Number(a.rounds); round_++) {
    for (const s of stores) {
      const { openPostgresStore } = await import(s.url);
      const store = openPostgresStore({ url: await server.createDatabase(), cluster: { leaseMs: 5000 } });
      for (let n = 0; n < BATCH; n++) {
        const r = record(n, 1n);
        await store.leases.acquire(r.channelId, r.params.device, 0);
      }
      const commitOne = (i) =>
        store.commit(Array.from({ length: BATCH }, (_, n) => ({ kind: 'channel', record: record(n, BigInt(i + 2)) })));
      for (let i = 0; i < 200; i++) await commitOne(i); // warm-up: connections, prepared statements, JIT
      const walls = [];
      const cpu0 = process.cpuUsage();
      const server0 = serverCpu();
      const t0 = performance.now();
      for (let i = 0; i < COMMITS; i++) {
        const t = performance.now();
        await commitOne(200 + i);
        walls.push(performance.now() - t);
      }
      const wallS = (performance.now() - t0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const serverS = serverCpu() - server0;
      await store.close();
      walls.sort((x, y) => x - y);
      results.get(s.name).push({
        commitsPerSec: round(COMMITS / wallS, 0),
        p50Ms: round(percentile(walls, 50), 3),
        p99Ms: round(percentile(walls, 99), 3),
        cpuUsPerCommit: {
          hub: round(((cpu.user + cpu.system) / COMMITS) * 1, 0),
          server: round((serverS / COMMITS) * 1e6, 0),
        },
      });
    }
  }
} finally {
  await server.stop();
}
const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
for (const [name, runs] of results) {
  process.stdout.write(
    `${name}: ${COMMITS} commits of ${BATCH} channel records, median of ${runs.length} runs: ` +
      `${median(runs.map((r) => r.commitsPerSec))} commits/s, p50 ${median(runs.map((r) => r.p50Ms))} ms, ` +
      `p99 ${median(runs.map((r) => r.p99Ms))} ms, CPU per commit: hub ${median(runs.map((r) => r.cpuUsPerCommit.hub))} µs + ` +
      `server ${median(runs.map((r) => r.cpuUsPerCommit.server))} µs\n`,
  );
}
