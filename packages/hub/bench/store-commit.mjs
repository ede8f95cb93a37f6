// One durable hub-store commit of one channel record at a time, two ways in the same run: through the store
// (`openLmdbStore`: one durable write to its write-ahead log, LMDB later) and, as the baseline, LMDB's own durable
// commit (a transaction, then `flushed`), which the store used before the log. Prints wall time per commit
// (p50/p99), the CPU the process spends per commit (user and system, all threads: LMDB's write thread, the thread
// pool, the kernel's sync work) and the ratios store / LMDB.
// Usage: node packages/hub/bench/store-commit.mjs [commits=2000] [dir=os.tmpdir()] [--overlapping]
// (--overlapping: the baseline uses lmdb-js's overlapping syncs, still awaited to `flushed`)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from 'lmdb';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { encodeChannelRecord } from '@trickle/hub/store/types';
import { percentile } from '../../../bench/lib/util.mjs';
import { record } from './record.mjs';

const overlapping = process.argv.includes('--overlapping');
const [commitsArg, dirArg] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const commits = Number(commitsArg ?? 2000);

/** Runs `commitOne(i)` `commits` times in a fresh directory; wall and CPU per commit. */
async function measure(name, openIn) {
  const dir = mkdtempSync(join(dirArg ?? tmpdir(), 'trickle-store-commit-'));
  try {
    const { commitOne, close } = openIn(dir);
    const wall = [];
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < commits; i++) {
      const t0 = performance.now();
      await commitOne(record(i % 100, BigInt(i + 1)));
      wall.push(performance.now() - t0);
    }
    const cpu = process.cpuUsage(cpu0);
    await close();
    wall.sort((a, b) => a - b);
    return {
      name,
      p50: percentile(wall, 50),
      p99: percentile(wall, 99),
      userUs: cpu.user / commits,
      systemUs: cpu.system / commits,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const store = await measure('store (write-ahead log, then LMDB)', (dir) => {
  const s = openLmdbStore({ path: dir });
  return { commitOne: (r) => s.commit([{ kind: 'channel', record: r }]), close: () => s.close() };
});
const lmdb = await measure(`LMDB durable commit${overlapping ? ' (overlapping syncs)' : ''}`, (dir) => {
  const root = open({ path: dir, compression: false, overlappingSync: overlapping });
  const db = root.openDB({ name: 'channels', encoding: 'binary' });
  return {
    commitOne: async (r) => {
      await root.transaction(() => db.put(r.channelId, encodeChannelRecord(r)));
      await root.flushed;
    },
    close: () => root.close(),
  };
});
for (const r of [store, lmdb]) {
  console.log(
    `${r.name.padEnd(40)} ${commits} commits: wall p50 ${r.p50.toFixed(3)} ms, p99 ${r.p99.toFixed(3)} ms; CPU per commit: user ${Math.round(r.userUs)} µs, system ${Math.round(r.systemUs)} µs`,
  );
}
const cpu = (r) => r.userUs + r.systemUs;
console.log(
  `store / LMDB: wall p50 ${(store.p50 / lmdb.p50).toFixed(2)}, p99 ${(store.p99 / lmdb.p99).toFixed(2)}, CPU ${(cpu(store) / cpu(lmdb)).toFixed(2)}`,
);
