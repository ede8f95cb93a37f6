/**
 * The `trickle` program: global options, subcommands, and the mapping of every failure to an exit code and a
 * message that says what to do.
 */
import { createRequire } from 'node:module';
import { Command, CommanderError, Option } from 'commander';
import { isChainRevert, type ChainRevertDetails } from '@trickle/chain/errors';
import { isTrickleError } from '@trickle/protocol/errors';
import { stringifyJson } from '@trickle/protocol/json';
import { challengeCommand } from './commands/challenge.js';
import { closeCommand } from './commands/close.js';
import { deployCommand } from './commands/deploy.js';
import { exportCommand } from './commands/export.js';
import { forceCloseCommand } from './commands/forceClose.js';
import { importCommand } from './commands/import.js';
import { settleCommand } from './commands/settle.js';
import { showCommand } from './commands/show.js';
import { watchCommand } from './commands/watch.js';
import { withdrawCommand } from './commands/withdraw.js';
import { revealCommand } from './commands/reveal.js';
import type { CliIo } from './context.js';
import { CliError, EXIT, isNetworkFailure, type ExitCode } from './exit.js';
import { withExitCodes } from './run.js';

const { version } = createRequire(import.meta.url)('../package.json') as { version: string };

/**
 * Build the program. Output goes to `io`; nothing calls `process.exit`.
 * @param io - stdout / stderr writers
 * @returns the commander program (parse with `parseAsync(argv, { from: 'user' })`)
 */
export function buildProgram(io: CliIo): Command {
  const program = new Command('trickle')
    .description(
      'Trickle chain tooling: deploy the adjudicator; inspect, close, force-close, challenge and settle payment channels; back up states; run a watchtower.',
    )
    .version(version)
    .addOption(new Option('--rpc <url>', 'JSON-RPC URL of the chain').env('TRICKLE_RPC_URL'))
    .addOption(new Option('--adjudicator <address>', 'the adjudicator contract').env('TRICKLE_ADJUDICATOR'))
    .addOption(
      new Option('--key-file <path>', 'file holding the 0x private key that sends transactions').env(
        'TRICKLE_KEY_FILE',
      ),
    )
    .addOption(
      new Option(
        '--store <dir>',
        'a device channel store directory (one <channelId>.channel file per channel; <channelId>.json of the earlier format is read too)',
      ).env('TRICKLE_STORE'),
    )
    .addOption(
      new Option(
        '--confirmations <n>',
        'blocks on top of a block before trusting it (default: 0 on a development chain, chain id 31337 or 1337; else 1)',
      ).env('TRICKLE_CONFIRMATIONS'),
    )
    .addOption(
      new Option('--timeout <seconds>', 'RPC request timeout, and how long to wait for confirmations')
        .env('TRICKLE_TIMEOUT')
        .default('120'),
    )
    .option('--json', 'print one JSON object on stdout (amounts as decimal strings)')
    .exitOverride()
    .configureHelp({ showGlobalOptions: true })
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .showHelpAfterError('(run with --help for usage)');
  withExitCodes(program);
  for (const make of [
    deployCommand,
    showCommand,
    closeCommand,
    forceCloseCommand,
    challengeCommand,
    settleCommand,
    withdrawCommand,
    revealCommand,
    exportCommand,
    importCommand,
    watchCommand,
  ]) {
    const command = make(io);
    command.copyInheritedSettings(program);
    program.addCommand(command);
  }
  return program;
}

const REVERT_HINTS: Record<string, string> = {
  ChallengePeriodOver: 'the challenge period is over: run `trickle settle <channelId>`',
  ChallengePeriodNotOver: 'the challenge period is not over yet: see `trickle show <channelId>` for the deadline',
  StaleVersion: 'a state at least as new is already registered: see `trickle show <channelId>`',
  NotParticipant: "only the channel's device or hub key may do this: check --key-file",
  ChannelNotOpen: 'the channel is not open (any more): see `trickle show <channelId>`',
  ChannelNotClosing: 'the channel has no pending force close: see `trickle show <channelId>`',
  ChannelNotActive: 'the channel is already closed: see `trickle show <channelId>`',
  WrongSigner:
    "the state's signatures are not the channel's device and hub: restore a good backup with `trickle import`",
  StateExceedsDeposits: "the state pays out more than the deposits: it is not a state of this channel's funding",
  NothingOwed: 'nothing to withdraw',
  GasTooLow: 'retry with more gas',
  LockNotExpired: 'a lock is undecided until its expiry: settle after it (see `trickle show <channelId>`)',
};

/** Turn anything a command threw into a {@link CliError} with the right exit code. */
export function toCliError(e: unknown): CliError {
  if (e instanceof CliError) return e;
  if (isChainRevert(e)) {
    const d = e.details as unknown as ChainRevertDetails;
    return new CliError(EXIT.REVERTED, 'CHAIN_REVERTED', `the adjudicator refused the transaction: ${e.shortMessage}`, {
      hint: REVERT_HINTS[d.error] ?? 'see `trickle show <channelId>`',
      details: { error: d.error, args: d.args },
      cause: e,
    });
  }
  if (isNetworkFailure(e)) {
    const message = isTrickleError(e) ? e.shortMessage : e instanceof Error ? e.message : String(e);
    return new CliError(EXIT.NETWORK, 'INTERNAL', `RPC failure: ${message}`, {
      hint: "check --rpc, the node, and the sender's ETH for gas; then retry",
      cause: e,
    });
  }
  if (isTrickleError(e, 'LIMIT_EXCEEDED') && e.details['limit'] === 'maxFeePerGas') {
    // A send re-priced up to its fee cap and still not mined: the node did not take it at any fee we would pay.
    return new CliError(EXIT.NETWORK, 'LIMIT_EXCEEDED', `not mined: ${e.shortMessage}`, {
      hint: 'fees are above the cap (10 times the first send): the last copy may still be mined; check with `trickle show`, then retry',
      details: e.details,
      cause: e,
    });
  }
  if (isTrickleError(e)) {
    return new CliError(EXIT.USAGE, e.code, e.shortMessage, { details: e.details, cause: e });
  }
  return new CliError(EXIT.USAGE, 'INTERNAL', e instanceof Error ? e.message : String(e), { cause: e });
}

/**
 * Run the program on `argv` (the user's arguments, without `node` and the script).
 * @param argv - e.g. `['show', '0x…', '--json']`
 * @param io - stdout / stderr writers
 * @returns the exit code (see `EXIT`)
 * @example
 * ```ts
 * process.exitCode = await main(process.argv.slice(2), { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) });
 * ```
 */
export async function main(argv: readonly string[], io: CliIo): Promise<ExitCode> {
  const json = argv.includes('--json');
  try {
    await buildProgram(io).parseAsync([...argv], { from: 'user' });
    return EXIT.OK;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed help or the usage error (on stderr). With --json a usage error is still one JSON
      // object on stdout (`ok: false`), as every other failure: a script parsing stdout must not read nothing.
      if (e.exitCode === 0) return EXIT.OK;
      if (json) {
        const message = e.message.replace(/^error: /, '');
        io.out(
          `${stringifyJson({ ok: false, error: { code: 'INVALID_ARGUMENT', exitCode: EXIT.USAGE, message, details: { commander: e.code } } })}\n`,
        );
      }
      return EXIT.USAGE;
    }
    const err = toCliError(e);
    io.err(`trickle: ${err.shortMessage}\n${err.hint ? `  → ${err.hint}\n` : ''}`);
    if (json) {
      io.out(
        `${stringifyJson({ ok: false, error: { code: err.code, exitCode: err.exitCode, message: err.shortMessage, hint: err.hint, details: err.details } })}\n`,
      );
    }
    return err.exitCode;
  }
}
