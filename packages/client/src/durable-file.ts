// Files written whole or not at all, and directory entries made durable: the client's file stores and the `trickle` CLI.
import { open, rename, unlink } from 'node:fs/promises';
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
 * Replace `path` with `text` whole or not at all: a temporary file beside it (mode 600; one a dead process with this pid left
 * is written over), written and flushed, renamed over `path`, then the directory flushed. Written in place, a failed write (no space, a crash) left
 * the previous file empty or cut short. The temporary file is removed when the write fails; the write's own error is
 * thrown.
 * @param tmp - the temporary file's path (default `<dir>/.<name>.<pid>.<n>.tmp`)
 */
export async function replaceFile(path: string, text: string, tmp?: string): Promise<void> {
  const dir = dirname(path);
  const temp = tmp ?? join(dir, `.${basename(path)}.${process.pid}.${seq++}.tmp`);
  try {
    const fh = await open(temp, 'w', 0o600);
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
