import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readdirSync } from 'node:fs';
import { fileChannelStore } from '@trickle/client/store';
import { tempDirs } from './helpers/temp-dirs.mjs';

/**
 * Red team of the device store's lock generations (c113bf8): a lock file the taker cannot read was taken for a
 * released one. A store directory shared by two users (or a lock file another user's process wrote, 0600) let the
 * second user's device process take a store a live process holds: two writers signing on one channel. Real processes,
 * real files; the second runs as another user (nobody), so this test needs root and a checkout nobody can read, and is
 * skipped otherwise.
 */
const tempDir = tempDirs('trickle-redteam-stop4-store-lock-');
const children = new Set<ReturnType<typeof spawn>>();
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
});

const NOBODY = 65534;
/**
 * Whether a process running as nobody can load the client from this checkout: root is needed to start one, and a
 * checkout under a directory only its owner may enter (a fresh clone in a `mktemp -d`) is out of nobody's reach.
 */
const nobodyCanRun =
  process.getuid?.() === 0 &&
  spawnSync(process.execPath, ['--input-type=module', '-e', "await import('@trickle/client/store')"], {
    cwd: new URL('.', import.meta.url),
    uid: NOBODY,
    gid: NOBODY,
    stdio: 'ignore',
  }).status === 0;

/** A process running as `nobody` that tries to take the store in `dir` and prints `got` or `err <code> <reason>`. */
function takerAsNobody(dir: string): Promise<string> {
  const code = `
    const { fileChannelStore } = await import('@trickle/client/store');
    const store = fileChannelStore(${JSON.stringify(dir)});
    try { await store.acquire(); console.log('got'); }
    catch (e) { console.log('err', e.code, e.details?.reason); }
    process.exit(0);
  `;
  const proc = spawn(process.execPath, ['--input-type=module', '-e', code], {
    cwd: new URL('.', import.meta.url),
    stdio: ['ignore', 'pipe', 'inherit'],
    uid: NOBODY,
    gid: NOBODY,
  });
  children.add(proc);
  return new Promise<string>((resolve) => {
    let out = '';
    proc.stdout!.on('data', (d) => (out += String(d)));
    proc.on('exit', () => resolve(out.trim()));
  });
}

describe('red team stop 4: the device store lock across users', () => {
  it.skipIf(!nobodyCanRun)(
    "a store held by a live process of another user is refused, not taken for released (its lock can't be read)",
    async () => {
      const dir = tempDir();
      chmodSync(dir, 0o777); // a store directory both users may write
      const store = fileChannelStore(dir);
      await store.acquire!();
      const held = readdirSync(dir).filter((n) => n.startsWith('.lock.'));
      expect(held).toEqual(['.lock.1']);
      // without the fix: 'got' — nobody read nothing, took the live holder's lock as released and created .lock.2
      expect(await takerAsNobody(dir)).toBe('err STORE_FAILURE IN_USE');
      expect(readdirSync(dir).filter((n) => n.startsWith('.lock.'))).toEqual(['.lock.1']);
      await store.close!();
    },
  );
});
