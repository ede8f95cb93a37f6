import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open as openLmdb } from 'lmdb';
import { isLmdbCommitEcho, openLmdbStore } from './lmdb.js';
import type { Bytes32 } from '@trickle/protocol/types';
import { encodeRecord, type RouteRecord, type StoreWrite } from './types.js';
import { expectedKeys, expectSurvivesKills, testRoute } from './records.fixture.js';
import { tempDirs } from '../../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-lmdb-');

// LMDB-specific behaviour: the write-ahead log's files, its switching and reuse, the one-process lock, and crashes
// across log switches. The contract every store keeps is in contract.test.ts.
describe('LMDB store', () => {
  it('builds its route index once for a store from before it, and again after an older hub wrote to the store', async () => {
    const path = tmp();
    const route = (n: number, more: Partial<RouteRecord>): RouteRecord =>
      testRoute(`0x${String(n).repeat(64)}` as Bytes32, { amount: BigInt(n), ...more });
    let s = openLmdbStore({ path });
    await s.commit([
      { kind: 'route', route: route(1, { status: 'pending' }) },
      { kind: 'route', route: route(2, { finishedAt: 1 }) },
      { kind: 'route', route: route(3, { status: 'refunded' }) },
    ]);
    await s.close();
    // As a hub from before the index left it: no index, no index epoch.
    let env = openLmdb({ path });
    const raw = () => ({
      index: env.openDB<Buffer, string>({ name: 'route-index', encoding: 'binary' }),
      routes: env.openDB<Buffer, string>({ name: 'routes', encoding: 'binary' }),
      wal: env.openDB<Buffer, string>({ name: 'wal', encoding: 'binary' }),
    });
    await env.transaction(() => {
      const { index, wal } = raw();
      for (const k of [...index.getKeys()]) index.removeSync(k);
      wal.removeSync('route-index-epoch');
    });
    await env.close();
    s = openLmdbStore({ path });
    expect((await s.loadPendingRoutes()).map((r) => r.amount)).toEqual([1n]);
    expect(await s.pruneRoutes!({ before: 10, now: 5, limit: 100 })).toEqual({ pruned: 1, stamped: 1, more: false });
    expect(await s.pruneRoutes!({ before: 10, now: 5, limit: 100 })).toEqual({ pruned: 1, stamped: 0, more: false });
    await s.close();
    // An older hub opened the store since (its epoch moved, not the index's) and wrote a pending route unindexed.
    env = openLmdb({ path });
    await env.transaction(() => {
      const { routes, wal } = raw();
      routes.putSync(route(4, { status: 'pending' }).paymentId, encodeRecord(route(4, { status: 'pending' })));
      const epoch = Number(Buffer.from(wal.get('epoch')!).toString());
      wal.putSync('epoch', Buffer.from(String(epoch + 2)));
    });
    await env.close();
    s = openLmdbStore({ path });
    expect((await s.loadPendingRoutes()).map((r) => r.amount)).toEqual([1n, 4n]);
    await s.close();
  });
  it('rebuilds an index from before its lock-hash entries, so a pending route on a hash keeps the hash’s keys', async () => {
    const path = tmp();
    const hash = `0x${'a'.repeat(64)}` as Bytes32;
    const lock = { amount: 5n, hash, expiry: 1n, payer: 'device' as const };
    const route = (n: number, more: Partial<RouteRecord>): RouteRecord =>
      testRoute(`0x${String(n).repeat(64)}` as Bytes32, { amount: BigInt(n), lock, ...more });
    let s = openLmdbStore({ path });
    await s.commit([
      { kind: 'route', route: route(1, { status: 'pending' }) },
      { kind: 'route', route: route(2, { finishedAt: 1 }) },
      { kind: 'meta', key: `preimage/${hash}`, value: 'p' },
    ]);
    await s.close();
    // As the index layout before the `h/` entries left it: those missing, its epoch stored bare.
    const env = openLmdb({ path });
    await env.transaction(() => {
      const index = env.openDB<Buffer, string>({ name: 'route-index', encoding: 'binary' });
      const wal = env.openDB<Buffer, string>({ name: 'wal', encoding: 'binary' });
      for (const k of [...index.getKeys({ start: 'h/', end: 'h/\uffff' })]) index.removeSync(k);
      wal.putSync('route-index-epoch', Buffer.from(wal.get('epoch')!));
    });
    await env.close();
    s = openLmdbStore({ path });
    expect(await s.pruneRoutes!({ before: 10_000, now: 10_000, limit: 100 })).toMatchObject({ pruned: 1 });
    expect(await s.getMeta(`preimage/${hash}`)).toBe('p');
    await s.commit([{ kind: 'route', route: route(1, { finishedAt: 2 }) }]);
    expect(await s.pruneRoutes!({ before: 10_000, now: 10_000, limit: 100 })).toMatchObject({ pruned: 1 });
    expect(await s.getMeta(`preimage/${hash}`)).toBeUndefined();
    await s.close();
  });
  it('keeps two preallocated log files beside the database and no lock once closed', async () => {
    const path = tmp();
    const s = openLmdbStore({ path });
    await s.commit([{ kind: 'meta', key: 'a', value: '1' }]);
    await s.close();
    expect(
      readdirSync(path)
        .filter((f) => f.startsWith('trickle-wal-'))
        .sort(),
    ).toEqual(['trickle-wal-0', 'trickle-wal-1']);
  });
  it('switches log files when one is full, entries larger than a file included, and loses nothing across reopens', async () => {
    const path = tmp();
    const big = 'x'.repeat(10_000);
    let s = openLmdbStore({ path, logBytes: 4096 });
    for (let k = 1; k <= 300; k++) {
      const writes: StoreWrite[] = [{ kind: 'meta', key: `k/${k}`, value: k % 50 === 0 ? big : String(k) }];
      if (k % 2 === 1 && k > 1) writes.push({ kind: 'deleteMeta', key: `k/${k - 1}` });
      await s.commit(writes);
      if (k % 100 === 0) {
        await s.close();
        s = openLmdbStore({ path, logBytes: 4096 });
      }
    }
    const got = await s.loadMetaPrefix('k/');
    expect(got.map((e) => e.key).sort()).toEqual(expectedKeys(300).sort());
    expect(got.find((e) => e.key === 'k/150')?.value).toBeUndefined(); // deleted by commit 151
    expect(got.find((e) => e.key === 'k/51')?.value).toBe('51');
    await s.close();
  });
  it('refuses a second opener of the same store while one has it, and takes over the lock of a dead process', async () => {
    const path = tmp();
    const first = openLmdbStore({ path });
    await first.commit([{ kind: 'meta', key: 'a', value: '1' }]);
    expect(() => openLmdbStore({ path })).toThrow(expect.objectContaining({ code: 'STORE_FAILURE' }));
    // Another process (a second hub on the same store) is refused too, naming the holder.
    const other = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `import { openLmdbStore } from '@trickle/hub/store/lmdb'; try { openLmdbStore({ path: process.argv[1] }); console.log('opened'); } catch (e) { console.log(e.code, e.message); }`,
        path,
      ],
      { encoding: 'utf8' },
    );
    expect(other.stdout).toContain(`STORE_FAILURE`);
    expect(other.stdout).toContain(`in use by process ${process.pid}`);
    await first.close();
    // A lock file left by a process that is gone (SIGKILLed) does not stop the next open.
    writeFileSync(join(path, 'trickle-wal-lock'), `${deadPid()}\n`);
    const next = openLmdbStore({ path });
    expect(await next.getMeta('a')).toBe('1');
    await next.close();
    expect(existsSync(join(path, 'trickle-wal-lock'))).toBe(false);
  });
  // A SIGKILL at any point: every commit the child saw resolve is there after a reopen (replayed from the log when
  // LMDB does not have it yet), deletes stay deleted, and nothing from a reused log file's older epochs comes back.
  // (One log file, where the last commits exist only in the log, is the contract suite's SIGKILL case.)
  for (const [logBytes, what] of [[2048, 'tiny log files: dozens of switches and reused files']] as const) {
    it(`survives SIGKILL mid-stream (${what})`, async () => {
      const path = tmp();
      await expectSurvivesKills(path, () => openLmdbStore({ path, logBytes }), { rounds: 3, logBytes });
    });
  }
});

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}

/** A tmpfs of `size` mounted for the test (root only); undefined with the reason logged where it cannot be. */
function smallDisk(size: string): { dir: string; unmount(): void } | undefined {
  if (process.getuid?.() !== 0) return void console.warn('full-disk case skipped: not root, cannot mount a tmpfs');
  const dir = mkdtempSync(join(tmpdir(), 'trickle-lmdb-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return void console.warn(`full-disk case skipped: ${(e as Error).message.split('\n')[0]}`);
  }
  return {
    dir,
    unmount() {
      execFileSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs `body` in a fresh Node process with Node's defaults (no rejection handler), on a 48 MiB tmpfs, after
 * `store` (an LMDB store there), `dir` and `fill()` (fills the disk to its last byte) are set up; returns its exit
 * status, stdout and stderr. Undefined where no tmpfs can be mounted (not root).
 */
function onFullDiskProcess(body: string): SpawnSyncReturns<string> | undefined {
  const disk = smallDisk('48m');
  if (!disk) return undefined;
  try {
    const script = `
      import { openLmdbStore } from '@trickle/hub/store/lmdb';
      import { openSync, writeSync, closeSync, rmSync } from 'node:fs';
      const dir = ${JSON.stringify(disk.dir)};
      const store = openLmdbStore({ path: dir + '/db' });
      const fill = () => {
        const fd = openSync(dir + '/filler', 'w');
        const chunk = Buffer.alloc(65536, 7);
        try { for (;;) writeSync(fd, chunk); } catch {}
        try { for (;;) writeSync(fd, chunk, 0, 512); } catch {}
        closeSync(fd);
      };
      ${body}
    `;
    return spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: join(import.meta.dirname, '..', '..'),
      encoding: 'utf8',
      timeout: 60_000,
    });
  } finally {
    disk.unmount();
  }
}

describe('LMDB store on a full disk, embedded', () => {
  // lmdb-js (3.5.6) batches each event turn's writes behind a batch-start write whose commit promise no caller
  // holds; when the commit fails (ENOSPC) that promise is rejected unhandled, and a process with Node's defaults
  // (an application embedding createHub, which installs no handler) exits. The store turns that batching off.
  it('a failing LMDB commit leaves no unhandled rejection: a process with Node defaults stays up, its log takes the writes', () => {
    const r = onFullDiskProcess(`
      let committed = 0;
      for (let i = 0; i < 400; i++) {
        await store.commit([{ kind: 'meta', key: 'k' + i, value: 'v'.repeat(800) + i }]);
        committed++;
        if (i === 20) fill();
      }
      await new Promise((r) => setTimeout(r, 1500)); // the store's retries of the LMDB apply fail meanwhile
      rmSync(dir + '/filler');
      const last = await store.getMeta('k399');
      await store.close();
      process.stdout.write(JSON.stringify({ committed, last: last?.slice(-3) }));
    `);
    if (!r) return;
    expect(r.stderr).not.toMatch(/Commit failed/);
    expect(r.status, `the process's stderr:\n${r.stderr.slice(-4000)}`).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ committed: 400, last: '399' });
  }, 70_000);

  // A read that comes once the disk has room again, while the store's retry of the LMDB apply (issued when the disk
  // was still full) is under way, waits for that retry; it failed, so the read made one more attempt, not STORE_FAILURE.
  // The read is timed onto the retry: a read on the full disk fails at a known moment, and the retry is due 500 ms
  // later (APPLY_RETRY_MS). Before the store retried once in its reads, 4 of 4 rounds here failed.
  it('a read made once the disk has room, while a retry begun on the full disk fails, still gets every logged write', () => {
    const r = onFullDiskProcess(`
      const out = [];
      for (let round = 0; round < 4; round++) {
        fill();
        for (let i = 0; i < 300; i++)
          await store.commit([{ kind: 'meta', key: 'r' + round + '-' + i, value: 'v'.repeat(800) }]);
        const refused = await store.getMeta('r' + round + '-0').then(() => 'read', (e) => e.code);
        const failedAt = performance.now(); // the store's retry is due 500 ms from here
        while (performance.now() < failedAt + 500 + round * 0.5) await new Promise((r) => setImmediate(r));
        rmSync(dir + '/filler');
        const got = await store.getMeta('r' + round + '-299').then((v) => v?.length, (e) => e.code);
        out.push([refused, got]);
      }
      await store.close();
      process.stdout.write(JSON.stringify(out));
    `);
    if (!r) return;
    expect(r.status, `the process's stderr:\n${r.stderr.slice(-4000)}`).toBe(0);
    // Each round: refused while the disk is full, then every write there once it has room.
    expect(JSON.parse(r.stdout)).toEqual(Array.from({ length: 4 }, () => ['STORE_FAILURE', 800]));
  }, 70_000);

  // Once the log is full and LMDB cannot take its writes, a commit small enough to fit what is left of the log file was
  // still taken: the hub's store probe (one tiny write a second) succeeded, and /health said the store worked while
  // every payment was refused.
  it('once a commit is refused for a full log, a smaller one is refused too, until LMDB takes the logged writes', () => {
    const r = onFullDiskProcess(`
      const small = openLmdbStore({ path: dir + '/small', logBytes: 64 << 10 });
      await small.commit([{ kind: 'meta', key: 'first', value: 'x' }]);
      fill();
      let big;
      for (let i = 0; i < 1000 && big === undefined; i++)
        big = await small.commit([{ kind: 'meta', key: 'b' + i, value: 'v'.repeat(2000) }]).then(() => undefined, (e) => e.code);
      const tiny = [];
      for (let i = 0; i < 3; i++) tiny.push(await small.commit([{ kind: 'meta', key: 't', value: String(i) }]).then(() => 'ok', (e) => e.code));
      rmSync(dir + '/filler');
      const after = await small.commit([{ kind: 'meta', key: 't', value: 'after' }]).then(() => 'ok', (e) => e.code);
      const read = await small.getMeta('t');
      await small.close();
      await store.close();
      process.stdout.write(JSON.stringify({ big, tiny, after, read }));
    `);
    if (!r) return;
    expect(r.status, `the process's stderr:\n${r.stderr.slice(-4000)}`).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      big: 'STORE_FAILURE',
      tiny: ['STORE_FAILURE', 'STORE_FAILURE', 'STORE_FAILURE'],
      after: 'ok',
      read: 'after',
    });
  }, 70_000);
});

describe('isLmdbCommitEcho', () => {
  it("recognises only lmdb-js's unreachable echo of a failed commit", () => {
    const echo = Object.assign(new Error('Commit failed (see commitError for details)'), {
      commitError: Promise.reject(new Error('MDB_MAP_FULL / ENOSPC')),
    });
    expect(isLmdbCommitEcho(echo)).toBe(true);
    expect(isLmdbCommitEcho(new Error('Commit failed (see commitError for details)'))).toBe(false);
    expect(isLmdbCommitEcho(Object.assign(new Error('other'), { commitError: Promise.resolve() }))).toBe(false);
    expect(isLmdbCommitEcho('Commit failed (see commitError for details)')).toBe(false);
  });
});
