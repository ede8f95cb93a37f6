/**
 * A commit whose log write fails leaves no hole in the log: recovery reads the log only up to its first entry that is
 * not whole, so every commit acked after the failure must be readable from the log (before LMDB has flushed it, the
 * log is all a crash leaves of it). The failure is injected into the log's `pwrite` (node:fs `write`), the only
 * place the store writes its log.
 */
import * as fs from 'node:fs';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { openLmdbStore } from './lmdb.js';
import { readEntries } from './wal.js';

vi.mock('node:fs', async (original) => {
  const m = await original<typeof import('node:fs')>();
  return { ...m, write: vi.fn(m.write) };
});

const dir = mkdtempSync(join(tmpdir(), 'trickle-wal-failure-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('LMDB store: a failed log write', () => {
  it('is refused STORE_FAILURE, and the next commit is logged where it failed: recovery reads it', async () => {
    const store = openLmdbStore({ path: dir });
    await store.commit([{ kind: 'meta', key: 'a', value: '1' }]);
    vi.mocked(fs.write).mockImplementationOnce(((...args: unknown[]) => {
      const done = args[args.length - 1] as (e: NodeJS.ErrnoException | null, n: number) => void;
      done(Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }), 0);
    }) as typeof fs.write);
    await expect(store.commit([{ kind: 'meta', key: 'b', value: '2' }])).rejects.toMatchObject({
      code: 'STORE_FAILURE',
    });
    await store.commit([{ kind: 'meta', key: 'c', value: '3' }]);
    // A fresh store logs epoch 2 in file 0 (see lmdb.ts: the stored epoch + 2).
    const logged = readEntries(readFileSync(join(dir, 'trickle-wal-0')), 2).map((ops) => ops.map((o) => o.key));
    expect(logged).toEqual([['a'], ['c']]);
    await store.close();
    const again = openLmdbStore({ path: dir });
    expect(await again.getMeta('c')).toBe('3');
    expect(await again.getMeta('b')).toBeUndefined();
    await again.close();
  });
});
