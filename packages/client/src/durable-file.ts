// Files written whole or not at all, and directory entries made durable: the client's file stores and the `trickle` CLI.
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Flush a directory's entries: a file created, renamed or removed in it is durable once this resolves. */
export async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

let seq = 0;

/**
 * Create `path` (mode 600), refusing to open anything already there: a file of that name is removed first (one a dead
 * process with this pid left), never written through. Opened without `O_EXCL`, a symbolic link planted under the
 * predictable name (beside an export in `/tmp`) would have had the text written into the file it points at.
 */
async function createExclusive(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'wx', 0o600);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    await unlink(path); // the link itself, or the stale file: not what it points at
    return await open(path, 'wx', 0o600);
  }
}

/**
 * Replace `path` with `text` whole or not at all: a temporary file beside it (mode 600, created afresh:
 * {@link createExclusive}), written and flushed, renamed over `path`, then the directory flushed. Written in place, a
 * failed write (no space, a crash) left the previous file empty or cut short. The temporary file is removed when the
 * write fails; the write's own error is thrown.
 * @param tmp - the temporary file's path (default `<dir>/.<name>.<pid>.<n>.tmp`)
 */
export async function replaceFile(path: string, text: string, tmp?: string): Promise<void> {
  const dir = dirname(path);
  const temp = tmp ?? join(dir, `.${basename(path)}.${process.pid}.${seq++}.tmp`);
  try {
    const fh = await createExclusive(temp);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(temp, path);
  } catch (e) {
    await unlink(temp).catch(() => undefined); // gone already, or never created: the write's failure is what counts
    throw e;
  }
  await syncDir(dir);
}
