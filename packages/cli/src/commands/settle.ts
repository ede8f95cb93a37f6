/** `trickle settle <channelId>`: pay out a force-closed channel once its challenge period is over. */
import { Command } from 'commander';
import { getRegisteredLocks } from '@trickle/chain/actions/getRegisteredLocks';
import { isTrickleError } from '@trickle/protocol/errors';
import { lockOutcome, type Lock } from '@trickle/protocol/locks';
import type { ChannelId } from '@trickle/protocol/types';
import { readOnChain, readRecord, replaceByFee, sendWithProgress } from '../channel.js';
import { channelIdArg, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { isoTime, relative } from '../format.js';
import { chainTime } from '../rpc.js';
import { withContext, withExitCodes } from '../run.js';

/** The `settle` command. */
export function settleCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('settle')
      .description('pay out a force-closed channel after its deadline (anyone may send it; --key-file pays the gas)')
      .argument('<channelId>', 'the channel id')
      .action(async (id: string, _opts: unknown, command: Command) => {
        await withContext(command, io, (ctx) => settle(ctx, channelIdArg(id)));
      }),
  );
}

async function settle(ctx: CommandContext, channelId: ChannelId): Promise<void> {
  const chain = await ctx.chain();
  const [c, now] = await Promise.all([readOnChain(chain, channelId), chainTime(chain.provider)]);
  if (c.status === 'closed') {
    throw new CliError(EXIT.NOTHING_TO_DO, 'CHANNEL_FINAL', `channel ${channelId} is already closed and paid out`, {
      hint: 'if a payout was deferred, run `trickle withdraw --token <address>`',
    });
  }
  if (c.status === 'open') {
    throw new CliError(EXIT.NOTHING_TO_DO, 'CHANNEL_NOT_OPEN', `channel ${channelId} is open: nothing to settle`, {
      hint: `close it first: \`trickle close ${channelId}\` (final state both signed) or \`trickle force-close ${channelId}\``,
    });
  }
  if (now < c.deadline) {
    throw new CliError(
      EXIT.NOTHING_TO_DO,
      'CHANNEL_NOT_OPEN',
      `the challenge period ends ${isoTime(c.deadline)} (${relative(c.deadline, now)}): too early to settle`,
      {
        hint: `run \`trickle settle ${channelId}\` after ${isoTime(c.deadline)}`,
      },
    );
  }
  // A registered state with pending locks settles only with its lock list. The store's record holds it when its
  // latest state is the registered one; otherwise (the counterparty registered an older state, or no --store) it is
  // read from the transaction that registered it.
  let locks: readonly Lock[] | undefined;
  if (!/^0x0{64}$/.test(c.locksRoot)) {
    const record = ctx.options.store
      ? await readRecord(ctx, channelId, 'settle a channel whose registered state has locks', chain).catch(
          (e: unknown) => {
            if (e instanceof CliError && e.exitCode === EXIT.NOT_FOUND) return undefined; // not in the store: read on-chain
            throw e;
          },
        )
      : undefined;
    if (record && record.latest.state.version === c.version && record.latest.state.locksRoot === c.locksRoot) {
      locks = record.locks;
    } else {
      try {
        locks = await getRegisteredLocks(chain.adjudicator, channelId);
      } catch (e) {
        if (!isTrickleError(e, 'UNKNOWN_LOCK')) throw e;
        throw new CliError(
          EXIT.NOT_FOUND,
          'UNKNOWN_LOCK',
          `the registered state (version ${c.version}) has locks, and their list is neither in the store nor in the transaction that registered it`,
          {
            hint: 'settle with the store of the party that registered it, or let that party settle',
            details: e.details,
            cause: e,
          },
        );
      }
    }
  }
  // The adjudicator refuses to settle while a lock is undecided (unrevealed, its expiry not passed by the block's
  // time): too early, as before the deadline, not a refusal to report as a revert.
  for (const l of locks ?? []) {
    const revealedAt = await chain.adjudicator.revealedAt(l.hash);
    if (lockOutcome(l, revealedAt, now + 1n) !== 'pending') continue;
    throw new CliError(
      EXIT.NOTHING_TO_DO,
      'LOCK_NOT_EXPIRED',
      `a lock of ${l.amount} paid by the ${l.payer} is undecided until ${isoTime(l.expiry)} (${relative(l.expiry, now)}): too early to settle`,
      {
        hint: `run \`trickle settle ${channelId}\` after ${isoTime(l.expiry)}, or, holding its preimage, \`trickle reveal <preimage>\` first (hash ${l.hash})`,
        details: { hash: l.hash, expiry: l.expiry, amount: l.amount, payer: l.payer },
      },
    );
  }
  const wallet = await ctx.wallet();
  const r = await sendWithProgress(ctx, `settle of ${channelId} (registered version ${c.version})`, () =>
    chain.adjudicator.connect(wallet).settle(channelId, { locks, replace: replaceByFee(ctx) }),
  );
  const deferred = r.events.filter((e) => e.name === 'PayoutDeferred');
  ctx.print(
    {
      channelId,
      version: r.closed.version,
      tx: r.hash,
      blockNumber: r.blockNumber,
      payoutDevice: r.closed.devicePayout,
      payoutHub: r.closed.hubPayout,
      deferred: deferred.length,
    },
    [
      `settled ${channelId} at version ${r.closed.version} (tx ${r.hash})`,
      `  paid out: device ${r.closed.devicePayout}, hub ${r.closed.hubPayout}`,
      ...(deferred.length > 0
        ? ['  a payout push failed and was credited instead: the recipient runs `trickle withdraw --token <address>`']
        : []),
    ].join('\n'),
  );
}
