// Files the CLI writes whole or not at all.
import { open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Write `text` to `path` whole or not at all: into a temporary file beside it (mode 600), flushed, then renamed over it
 * and the directory flushed. Written in place, a failed write (no space, a crash) left the previous backup at `path`
 * empty or cut short. A `path` that exists and is no regular file (a pipe, `/dev/stdout`) is written as it is.
 */
export async function writeWhole(path: string, text: string): Promise<void> {
  const existing = await stat(path).catch(() => undefined);
  if (existing !== undefined && !existing.isFile()) {
    const fh = await open(path, 'w');
    try {
      await fh.writeFile(text);
    } finally {
      await fh.close();
    }
    return;
  }
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined); // gone already, or never created: the write's failure is what counts
    throw e;
  }
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
