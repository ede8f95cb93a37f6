/** Running a command body with a {@link CommandContext} built from the parsed options, closed afterwards. */
import type { Command } from 'commander';
import { CommandContext, type CliIo, type GlobalOptions } from './context.js';
import { EXIT_CODES_HELP } from './exit.js';

/**
 * Build the context from `command`'s options (its own and the program's), run `body`, release the context.
 * @param command - the commander command whose action is running
 * @param io - output streams
 * @param body - the command's work
 */
export async function withContext(
  command: Command,
  io: CliIo,
  body: (ctx: CommandContext) => Promise<void>,
): Promise<void> {
  const ctx = new CommandContext(command.optsWithGlobals<GlobalOptions>(), io);
  try {
    await body(ctx);
  } finally {
    await ctx.close();
  }
}

/** Add the exit-code table to a command's `--help`. */
export function withExitCodes(command: Command): Command {
  return command.addHelpText('after', EXIT_CODES_HELP);
}
