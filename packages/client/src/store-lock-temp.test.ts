/** The device store's lock: temporary lock files left by a process that died before linking them. */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { deadPid } from './pids.fixture.js';
import { fileChannelStore } from './store.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-store-lock-temp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it("acquire removes a lock temp file of a process that is gone, and leaves a live process's", async () => {
  const dead = `.lock-${deadPid()}.0.tmp`;
  const live = `.lock-${process.pid}.7.tmp`; // this process may be about to link it
  const other = '.lock-notapid.0.tmp'; // not of the lock's naming: not the lock's to remove
  for (const name of [dead, live, other]) writeFileSync(join(dir, name), '1\n');
  const store = fileChannelStore(dir);
  await store.acquire!();
  const names = readdirSync(dir);
  expect(names).not.toContain(dead);
  expect(names).toContain(live);
  expect(names).toContain(other);
  expect(names.filter((n) => n.startsWith('.lock.'))).toEqual(['.lock.1']);
  await store.close!();
});
