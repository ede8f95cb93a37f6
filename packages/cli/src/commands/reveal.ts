/** `trickle reveal <preimage>`: record a lock's preimage in the adjudicator's registry (claims the lock on-chain). */
import { Command } from 'commander';
import { hashPreimage } from '@trickle/protocol/locks';
import { isTrickleError } from '@trickle/protocol/errors';
import type { Bytes32 } from '@trickle/protocol/types';
import { replaceByFee, sendWithProgress } from '../channel.js';
import type { CliIo, CommandContext } from '../context.js';
import { CliError, EXIT } from '../exit.js';
import { isoTime } from '../format.js';
import { withContext, withExitCodes } from '../run.js';

/** What `reveal --json` prints (besides `ok: true`). */
export interface RevealResult {
  readonly hash: Bytes32;
  /** Block timestamp at which the preimage first became known on-chain (an earlier reveal's, if any). */
  readonly revealedAt: bigint;
  /** The transaction, absent when the preimage was already revealed (nothing is sent then). */
  readonly tx?: string | undefined;
}

/** The `reveal` command. */
export function revealCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('reveal')
      .description(
        'reveal a lock preimage on-chain: every lock on its hash whose expiry is at or after this block pays its payee at settlement',
      )
      .argument('<preimage>', 'the 32-byte preimage (0x + 64 hex digits)')
      .action(async (preimage: string, _opts: unknown, command: Command) => {
        await withContext(command, io, (ctx) => reveal(ctx, preimage));
      }),
  );
}

async function reveal(ctx: CommandContext, input: string): Promise<void> {
  if (!/^0x[0-9a-fA-F]{64}$/.test(input)) {
    throw new CliError(EXIT.USAGE, 'INVALID_ARGUMENT', 'the preimage must be 0x followed by 64 hex digits', {
      hint: 'a lock is claimed by the 32-byte value whose keccak256 is its hash',
    });
  }
  const preimage = input.toLowerCase() as Bytes32;
  const hash = hashPreimage(preimage);
  const chain = await ctx.chain();
  const before = await chain.adjudicator.revealedAt(hash);
  if (before !== 0n) {
    const result: RevealResult = { hash, revealedAt: before };
    ctx.print(result as unknown as Record<string, unknown>, `already revealed at ${isoTime(before)}: hash ${hash}`);
    return;
  }
  const wallet = await ctx.wallet();
  try {
    const r = await sendWithProgress(ctx, `reveal of the preimage of ${hash}`, () =>
      chain.adjudicator.connect(wallet).reveal(preimage, { replace: replaceByFee(ctx) }),
    );
    const result: RevealResult = { hash, revealedAt: r.revealedAt, tx: r.hash };
    ctx.print(
      result as unknown as Record<string, unknown>,
      `revealed at ${isoTime(r.revealedAt)}: hash ${hash} (tx ${r.hash})`,
    );
  } catch (e) {
    if (isTrickleError(e, 'MALFORMED')) throw new CliError(EXIT.USAGE, 'MALFORMED', e.shortMessage);
    throw e;
  }
}
