/** `trickle force-close <channelId>`: register the store's latest fully signed state and start the challenge period. */
import { Command } from 'commander';
import type { ChannelId } from '@trickle/protocol/types';
import { markClosing, readOnChain, readRecord, replaceByFee, sendWithProgress, unvoidedRefusal } from '../channel.js';
import { channelIdArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { isoTime } from '../format.js';
import { withContext, withExitCodes } from '../run.js';

/** The `force-close` command. */
export function forceCloseCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('force-close')
      .description("close unilaterally with the store's latest state both signed; settle after the challenge period")
      .argument('<channelId>', 'the channel id')
      .action(async (id: string, _opts: unknown, command: Command) => {
        await withContext(command, io, (ctx) => forceClose(ctx, channelIdArg(id)));
      }),
  );
}

async function forceClose(ctx: CommandContext, channelId: ChannelId): Promise<void> {
  const chain = await ctx.chain();
  const c = await readOnChain(chain, channelId);
  if (c.status === 'closed')
    throw new CliError(EXIT.NOTHING_TO_DO, 'CHANNEL_FINAL', `channel ${channelId} is already closed`);
  if (c.status === 'closing') {
    throw new CliError(
      EXIT.NOTHING_TO_DO,
      'CHANNEL_NOT_OPEN',
      `channel ${channelId} is already force-closed (registered version ${c.version}, deadline ${isoTime(c.deadline)})`,
      {
        hint: `if your latest state is newer, run \`trickle challenge ${channelId}\`; after the deadline, \`trickle settle ${channelId}\``,
      },
    );
  }
  // Taken before the record is read: the record acted on is the one no device process is moving past meanwhile.
  await ctx.writableStore('force-close a channel');
  const record = await readRecord(ctx, channelId, 'force-close a channel', chain);
  const wallet = await ctx.wallet();
  const me = wallet.address.toLowerCase();
  if (me !== c.device.toLowerCase() && me !== c.hub.toLowerCase()) {
    throw new CliError(
      EXIT.USAGE,
      'UNAUTHORIZED',
      `only the channel's device (${c.device}) or hub (${c.hub}) may force-close; --key-file is ${wallet.address}`,
      {
        hint: "pass the device's or the hub's key with --key-file",
      },
    );
  }
  const { state } = record.latest;
  if (state.isFinal)
    ctx.progress(`note: the store holds a final state; \`trickle close ${channelId}\` would pay out at once`);
  // A state this device signed and the hub refused but holds: the hub may answer this force close with it.
  const unvoided = unvoidedRefusal(record);
  const exposed =
    unvoided &&
    `the hub refused but holds version ${unvoided.version}, signed by this device, paying it ${unvoided.exposure} more than version ${state.version}: it may register that state (run the device against the hub to void it first)`;
  if (exposed) ctx.progress(`warning: ${exposed}`);
  await markClosing(ctx, record, 'force');
  const r = await sendWithProgress(ctx, `forceClose of ${channelId} at version ${state.version}`, () =>
    chain.adjudicator.connect(wallet).forceClose(record.latest, { locks: record.locks, replace: replaceByFee(ctx) }),
  );
  const { deadline } = r.forceClosed;
  ctx.print(
    {
      channelId,
      version: state.version,
      tx: r.hash,
      blockNumber: r.blockNumber,
      deadline,
      deadlineIso: isoTime(deadline),
      unvoided: unvoided ?? null,
    },
    [
      `force-closed ${channelId} at version ${state.version} (tx ${r.hash})`,
      `  challenge period ends ${isoTime(deadline)}; then run \`trickle settle ${channelId}\``,
      ...(exposed ? [`  exposed: ${exposed}`] : []),
    ].join('\n'),
  );
}
