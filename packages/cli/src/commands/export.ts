/** `trickle export <channelId> [--out file]`: back up a channel's record (the store's JSON) to a file or stdout. */
import { open, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Command } from 'commander';
import { encodeChannelRecord } from '@trickle/client/store';
import type { ChannelId } from '@trickle/protocol/types';
import { readRecord } from '../channel.js';
import { channelIdArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { withContext, withExitCodes } from '../run.js';

/** The `export` command. */
export function exportCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('export')
      .description("write a channel's record (parameters, funding, latest state both signed) as JSON, for backup")
      .argument('<channelId>', 'the channel id')
      .option('--out <file>', 'write to this file (created with mode 600) instead of stdout')
      .action(async (id: string, opts: { out?: string }, command: Command) => {
        await withContext(command, io, (ctx) => exportRecord(ctx, channelIdArg(id), opts.out));
      }),
  );
}

async function exportRecord(ctx: CommandContext, channelId: ChannelId, out: string | undefined): Promise<void> {
  const record = await readRecord(ctx, channelId, 'export a channel');
  const text = encodeChannelRecord(record);
  if (out === undefined) {
    // The record itself is the output (already JSON), with or without --json.
    ctx.io.out(text);
    return;
  }
  try {
    await writeWhole(out, text);
  } catch (cause) {
    throw new CliError(EXIT.USAGE, 'STORE_FAILURE', `cannot write ${out}: ${(cause as Error).message}`, { cause });
  }
  const { version } = record.latest.state;
  ctx.print({ channelId, version, out }, `exported ${channelId} (version ${version}) to ${out}`);
}

/**
 * Write `text` to `path` whole or not at all: into a temporary file beside it (mode 600), flushed, then renamed over it
 * and the directory flushed. Written in place, a failed write (no space, a crash) left the previous backup at `path`
 * empty or cut short. A `path` that exists and is no regular file (a pipe, `/dev/stdout`) is written as it is.
 */
async function writeWhole(path: string, text: string): Promise<void> {
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
