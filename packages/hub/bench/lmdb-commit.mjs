// LMDB's own durable commit, for comparison with `store-commit.mjs` (the hub's store, which makes a commit durable
// with one write to its write-ahead log and hands the writes to LMDB later): one commit of one small record at a
// time, synchronous commits then `flushed`, as the hub's store did before the log. Prints wall time per commit
// (p50/p99) and the CPU the process spends per commit (user and system, all threads: LMDB's write thread and the
// kernel's sync work).
// Usage: node packages/hub/bench/lmdb-commit.mjs [commits=1000] [dir=os.tmpdir()] [--overlapping]
// (--overlapping: lmdb-js's default overlapping syncs instead, for comparison; the commit is awaited to `flushed` too)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from 'lmdb';

const overlapping = process.argv.includes('--overlapping');
const [commitsArg, dirArg] = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const commits = Number(commitsArg ?? 1000);
const dir = mkdtempSync(join(dirArg ?? tmpdir(), 'trickle-lmdb-commit-'));
try {
  const root = open({ path: dir, compression: false, overlappingSync: overlapping });
  const db = root.openDB({ name: 'channels', encoding: 'binary' });
  const value = Buffer.alloc(1000, 1); // about one encoded channel record
  const wall = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < commits; i++) {
    const t0 = performance.now();
    await root.transaction(() => db.put(`channel-${i % 100}`, value));
    await root.flushed;
    wall.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  wall.sort((a, b) => a - b);
  const pct = (p) => wall[Math.min(wall.length - 1, Math.floor(p * wall.length))].toFixed(3);
  console.log(`${commits} commits${overlapping ? ' (overlapping syncs)' : ''}: wall p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms; CPU per commit: user ${Math.round(cpu.user / commits)} µs, system ${Math.round(cpu.system / commits)} µs`);
  await root.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
