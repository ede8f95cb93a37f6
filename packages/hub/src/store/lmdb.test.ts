import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { openLmdbStore } from './lmdb.js';
import type { ChannelRecord, StoreWrite } from './types.js';
import { killAfterLines } from '../../../../test/helpers/kill-after-lines.mjs';
import { tempDirs } from '../../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-lmdb-');

const record = (n: number): ChannelRecord => ({
  params: {
    chainId: 31337n,
    adjudicator: '0x5FbDB2315678afecb367f032d93F642f64180aa3' as never,
    device: '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A' as never,
    hub: '0x1563915e194D8CfBA1943570603F7606A3115508' as never,
    token: '0x0000000000000000000000000000000000000000' as never,
    challengeDuration: 3600n,
    salt: `0x${n.toString(16).padStart(64, '0')}` as never,
  },
  channelId: `0x${(n + 1).toString(16).padStart(64, '0')}` as never,
  funding: { device: 10n ** 30n, hub: 5n },
  status: 'open',
  latest: { state: { channelId: `0x${(n + 1).toString(16).padStart(64, '0')}` as never, version: 2n ** 63n, paidByDevice: (1n << 255n) + 7n, paidByHub: 0n, round: 3n, isFinal: false } },
  hubSignedVersion: 2n ** 63n,
});

describe('LMDB store', () => {
  it('round-trips channel records exactly (uint256 counters, uint64 versions) across a reopen', async () => {
    const path = tmp();
    const s1 = openLmdbStore({ path });
    await s1.commit([{ kind: 'channel', record: record(1) }, { kind: 'channel', record: record(2) }, { kind: 'meta', key: 'lastBlock', value: '42' }]);
    await s1.close();
    const s2 = openLmdbStore({ path });
    const all = await s2.loadChannels();
    expect(all).toEqual([record(1), record(2)]);
    expect(await s2.getMeta('lastBlock')).toBe('42');
    await s2.close();
  });
  it('meta prefixes and deletes', async () => {
    const s = openLmdbStore({ path: tmp() });
    await s.commit([{ kind: 'meta', key: 'market/order/1', value: 'a' }, { kind: 'meta', key: 'market/order/2', value: 'b' }, { kind: 'meta', key: 'other', value: 'c' }]);
    await s.commit([{ kind: 'deleteMeta', key: 'market/order/1' }]);
    expect(await s.loadMetaPrefix('market/order/')).toEqual([{ key: 'market/order/2', value: 'b' }]);
    await s.close();
  });
  it('keeps only pending routes for recovery', async () => {
    const s = openLmdbStore({ path: tmp() });
    const base = { from: record(1).params.device, to: record(1).params.hub, fromChannel: record(1).channelId, amount: 5n };
    await s.commit([
      { kind: 'route', route: { ...base, paymentId: `0x${'01'.repeat(32)}` as never, status: 'pending' } },
      { kind: 'route', route: { ...base, paymentId: `0x${'02'.repeat(32)}` as never, status: 'delivered' } },
    ]);
    expect((await s.loadPendingRoutes()).map((r) => r.paymentId)).toEqual([`0x${'01'.repeat(32)}`]);
    await s.close();
  });
  it('reads see every resolved commit at once (before its writes reach LMDB), and a reopen keeps them', async () => {
    const path = tmp();
    const s = openLmdbStore({ path });
    await s.commit([{ kind: 'meta', key: 'a', value: '1' }]);
    expect(await s.getMeta('a')).toBe('1');
    await s.commit([{ kind: 'deleteMeta', key: 'a' }, { kind: 'channel', record: record(3) }]);
    expect(await s.getMeta('a')).toBeUndefined();
    expect(await s.loadChannels()).toEqual([record(3)]);
    await s.close();
    for (let reopen = 0; reopen < 2; reopen++) {
      const again = openLmdbStore({ path });
      expect(await again.getMeta('a')).toBeUndefined();
      expect(await again.loadChannels()).toEqual([record(3)]);
      await again.close();
    }
    // Two log files beside the database, preallocated.
    expect(readdirSync(path).filter((f) => f.startsWith('trickle-wal-')).sort()).toEqual(['trickle-wal-0', 'trickle-wal-1']); // and no lock once closed
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
    const other = spawnSync(process.execPath, ['--input-type=module', '-e', `import { openLmdbStore } from '@trickle/hub/store/lmdb'; try { openLmdbStore({ path: process.argv[1] }); console.log('opened'); } catch (e) { console.log(e.code, e.message); }`, path], { encoding: 'utf8' });
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
  for (const [logBytes, what] of [
    [8 << 20, 'one log file: the last commits exist only in the log'],
    [2048, 'tiny log files: dozens of switches and reused files'],
  ] as const) {
    it(`survives SIGKILL mid-stream (${what})`, async () => {
      const child = fileURLToPath(new URL('./store-crash-child.mjs', import.meta.url));
      const path = tmp();
      for (let round = 0; round < 3; round++) {
        const { lines, stderr: err } = await killAfterLines(child, [path, String(logBytes), '100000', '20000'], 150);
        expect(err).toBe('');
        const printed = lines.map(Number);
        const seen = printed[printed.length - 1]!;
        expect(printed.length).toBeGreaterThanOrEqual(150);
        const s = openLmdbStore({ path, logBytes });
        const last = Number(await s.getMeta('last'));
        // The commit after the last printed one may have become durable before the kill; none later can have.
        expect([seen, seen + 1]).toContain(last);
        expect((await s.loadMetaPrefix('k/')).map((e) => e.key).sort()).toEqual(expectedKeys(last).sort());
        await s.close();
      }
    });
  }
});

/** The `k/` keys after commits 1..n of the crash child's pattern: the odd numbers, and n. */
function expectedKeys(n: number): string[] {
  const keys = new Set<string>();
  for (let k = 1; k <= n; k += 2) keys.add(`k/${k}`);
  keys.add(`k/${n}`);
  return [...keys];
}

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'console.log(process.pid)'], { encoding: 'utf8' });
  return Number(r.stdout.trim());
}
