/** `trickle close <channelId>`: cooperative close with the store's final state, signed by both. */
import { Command } from 'commander';
import { fullySigned, markClosing, readOnChain, readRecord, replaceByFee, sendWithProgress } from '../channel.js';
import { channelIdArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import type { ChannelId } from '@trickle/protocol/types';
import { withContext, withExitCodes } from '../run.js';

/** The `close` command. */
export function closeCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('close')
      .description('close cooperatively with the final state both parties signed (from the store); pays out at once')
      .argument('<channelId>', 'the channel id')
      .action(async (id: string, _opts: unknown, command: Command) => {
        await withContext(command, io, (ctx) => close(ctx, channelIdArg(id)));
      }),
  );
}

async function close(ctx: CommandContext, channelId: ChannelId): Promise<void> {
  const chain = await ctx.chain();
  const c = await readOnChain(chain, channelId);
  if (c.status === 'closed') {
    throw new CliError(EXIT.NOTHING_TO_DO, 'CHANNEL_FINAL', `channel ${channelId} is already closed`, {
      hint: 'if a payout was deferred, run `trickle withdraw --token <address>`',
    });
  }
  // Taken before the record is read: the record acted on is the one no device process is moving past meanwhile.
  await ctx.writableStore('close a channel');
  const record = await readRecord(ctx, channelId, 'close a channel', chain);
  const { state } = record.latest;
  if (!state.isFinal || !fullySigned(record.latest)) {
    throw new CliError(
      EXIT.NOT_FOUND,
      'BAD_FINAL',
      `the store has no final state both signed for ${channelId} (latest: version ${state.version}, ${state.isFinal ? 'final' : 'not final'})`,
      {
        hint: `a cooperative close needs the hub's signature on a final state (the device SDK's client.close() asks the hub for it); without the hub, run \`trickle force-close ${channelId}\``,
      },
    );
  }
  const wallet = await ctx.wallet();
  await markClosing(ctx, record, 'cooperative');
  const r = await sendWithProgress(ctx, `cooperativeClose of ${channelId} at version ${state.version}`, () =>
    chain.adjudicator.connect(wallet).cooperativeClose(record.latest, { replace: replaceByFee(ctx) }),
  );
  const deferred = r.events.filter((e) => e.name === 'PayoutDeferred');
  ctx.print(
    {
      channelId,
      version: state.version,
      tx: r.hash,
      blockNumber: r.blockNumber,
      payoutDevice: r.closed.devicePayout,
      payoutHub: r.closed.hubPayout,
      deferred: deferred.length,
    },
    [
      `closed ${channelId} at version ${state.version} (tx ${r.hash})`,
      `  paid out: device ${r.closed.devicePayout}, hub ${r.closed.hubPayout}`,
      ...(deferred.length > 0
        ? ['  a payout push failed and was credited instead: run `trickle withdraw --token <address>`']
        : []),
    ].join('\n'),
  );
}
