/** `trickle export <channelId> [--out file]`: back up a channel's record (the store's JSON) to a file or stdout. */
import { Command } from 'commander';
import { encodeChannelRecord } from '@trickle/client/store';
import type { ChannelId } from '@trickle/protocol/types';
import { readRecord } from '../channel.js';
import { channelIdArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { writeWhole } from '../files.js';
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
