/** `trickle challenge <channelId>`: answer a force close with the store's newer state, before the deadline. */
import { Command } from 'commander';
import type { ChannelId } from '@trickle/protocol/types';
import { readOnChain, readRecord, replaceByFee, sendWithProgress } from '../channel.js';
import { channelIdArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { isoTime, relative } from '../format.js';
import { chainTime } from '../rpc.js';
import { withContext, withExitCodes } from '../run.js';

/** The `challenge` command. */
export function challengeCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('challenge')
      .description("replace a registered (older) state with the store's latest state both signed, before the deadline")
      .argument('<channelId>', 'the channel id')
      .action(async (id: string, _opts: unknown, command: Command) => {
        await withContext(command, io, (ctx) => challenge(ctx, channelIdArg(id)));
      }),
  );
}

async function challenge(ctx: CommandContext, channelId: ChannelId): Promise<void> {
  const chain = await ctx.chain();
  const [c, now] = await Promise.all([readOnChain(chain, channelId), chainTime(chain.provider)]);
  if (c.status === 'open') {
    throw new CliError(
      EXIT.NOTHING_TO_DO,
      'CHANNEL_NOT_OPEN',
      `channel ${channelId} is open: there is no force close to challenge`,
    );
  }
  if (c.status === 'closed') {
    throw new CliError(
      EXIT.NOTHING_TO_DO,
      'CHANNEL_FINAL',
      `channel ${channelId} is already closed: nothing to challenge`,
    );
  }
  if (now >= c.deadline) {
    throw new CliError(
      EXIT.NOTHING_TO_DO,
      'CHANNEL_FINAL',
      `challenge period ended at ${isoTime(c.deadline)}; nothing to challenge`,
      {
        hint: `run \`trickle settle ${channelId}\``,
      },
    );
  }
  const record = await readRecord(ctx, channelId, 'challenge a force close', chain);
  const { state } = record.latest;
  if (state.version <= c.version) {
    throw new CliError(
      EXIT.NOTHING_TO_DO,
      'STALE_VERSION',
      `nothing newer to challenge with: the registered version is ${c.version}, the store's latest is ${state.version}`,
      {
        hint: `the challenge period ends ${isoTime(c.deadline)} (${relative(c.deadline, now)}); then run \`trickle settle ${channelId}\``,
      },
    );
  }
  const wallet = await ctx.wallet();
  const r = await sendWithProgress(
    ctx,
    `challenge of ${channelId} with version ${state.version} (registered ${c.version})`,
    () =>
      chain.adjudicator.connect(wallet).challenge(record.latest, { locks: record.locks, replace: replaceByFee(ctx) }),
  );
  ctx.print(
    {
      channelId,
      registered: c.version,
      version: state.version,
      tx: r.hash,
      blockNumber: r.blockNumber,
      deadline: c.deadline,
      deadlineIso: isoTime(c.deadline),
    },
    [
      `challenged ${channelId}: version ${state.version} replaces ${c.version} (tx ${r.hash})`,
      `  the deadline is unchanged: ${isoTime(c.deadline)}; then run \`trickle settle ${channelId}\``,
    ].join('\n'),
  );
}
