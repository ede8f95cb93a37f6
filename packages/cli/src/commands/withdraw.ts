/** `trickle withdraw --token <address> [--to <address>]`: pull payouts whose push failed. */
import { Command } from 'commander';
import { toAddress } from '@trickle/protocol/hex';
import { replaceByFee, sendWithProgress } from '../channel.js';
import { addressArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { withContext, withExitCodes } from '../run.js';

/** The `withdraw` command. */
export function withdrawCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('withdraw')
      .description('pull what the adjudicator owes the --key-file account in a token (payouts whose push failed)')
      .requiredOption('--token <address>', 'the token (0x0000000000000000000000000000000000000000 for ETH)')
      .option('--to <address>', "send it to this address instead of the key's own")
      .action(async (opts: { token: string; to?: string }, command: Command) => {
        await withContext(command, io, (ctx) => withdraw(ctx, opts));
      }),
  );
}

async function withdraw(ctx: CommandContext, opts: { token: string; to?: string }): Promise<void> {
  const token = addressArg(opts.token, '--token');
  const to = opts.to === undefined ? undefined : addressArg(opts.to, '--to');
  const chain = await ctx.chain();
  const wallet = await ctx.wallet();
  const me = toAddress(wallet.address);
  const owed = await chain.adjudicator.owed(token, me);
  if (owed === 0n) {
    throw new CliError(EXIT.NOTHING_TO_DO, 'INVALID_ARGUMENT', `nothing is owed to ${me} in token ${token}`, {
      hint: 'payouts are normally pushed when a channel closes; only failed pushes are credited for withdrawal',
    });
  }
  const r = await sendWithProgress(ctx, `withdraw of ${owed} (token ${token}) to ${to ?? me}`, () =>
    chain.adjudicator.connect(wallet).withdraw(token, to, { replace: replaceByFee(ctx) }),
  );
  ctx.print(
    { token, account: me, to: to ?? me, amount: r.amount, tx: r.hash, blockNumber: r.blockNumber },
    `withdrew ${r.amount} of token ${token} to ${to ?? me} (tx ${r.hash})`,
  );
}
