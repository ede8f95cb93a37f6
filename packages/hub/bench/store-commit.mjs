// One durable hub-store commit of one channel record at a time, through the store's own API (`openLmdbStore`: the
// write-ahead log's one durable write, then LMDB in the background). Prints wall time per commit (p50/p99) and the
// CPU the process spends per commit (user and system, all threads). Compare `lmdb-commit.mjs`, LMDB's own durable
// commit, which the store used before the log.
// Usage: node packages/hub/bench/store-commit.mjs [commits=2000] [dir=os.tmpdir()]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openLmdbStore } from '@trickle/hub/store/lmdb';

const [commitsArg, dirArg] = process.argv.slice(2);
const commits = Number(commitsArg ?? 2000);
const dir = mkdtempSync(join(dirArg ?? tmpdir(), 'trickle-store-commit-'));
const record = (n, version) => ({
  params: { chainId: 31337n, adjudicator: `0x${'11'.repeat(20)}`, device: `0x${'22'.repeat(20)}`, hub: `0x${'33'.repeat(20)}`, token: `0x${'00'.repeat(20)}`, challengeDuration: 3600n, salt: `0x${n.toString(16).padStart(64, '0')}` },
  channelId: `0x${(n + 1).toString(16).padStart(64, '0')}`,
  funding: { device: 10n ** 18n, hub: 0n },
  status: 'open',
  latest: { state: { channelId: `0x${(n + 1).toString(16).padStart(64, '0')}`, version, paidByDevice: version, paidByHub: 0n, round: 0n, isFinal: false }, deviceSig: `0x${'aa'.repeat(65)}`, hubSig: `0x${'bb'.repeat(65)}` },
  hubSignedVersion: version,
});
try {
  const store = openLmdbStore({ path: dir });
  const wall = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < commits; i++) {
    const t0 = performance.now();
    await store.commit([{ kind: 'channel', record: record(i % 100, BigInt(i + 1)) }]);
    wall.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  await store.close();
  wall.sort((a, b) => a - b);
  const pct = (p) => wall[Math.min(wall.length - 1, Math.floor(p * wall.length))].toFixed(3);
  console.log(`${commits} store commits: wall p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms; CPU per commit: user ${Math.round(cpu.user / commits)} µs, system ${Math.round(cpu.system / commits)} µs`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
