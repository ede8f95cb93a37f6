// Files the CLI writes whole or not at all.
import { open, stat } from 'node:fs/promises';
import { replaceFile } from '@trickle/client/store';

/**
 * Write `text` to `path` whole or not at all ({@link replaceFile}: a temporary file beside it, flushed, renamed over it,
 * the directory flushed). Written in place, a failed write (no space, a crash) left the previous backup at `path` empty
 * or cut short. A `path` that exists and is no regular file (a pipe, `/dev/stdout`) is written as it is.
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
  await replaceFile(path, text);
}
