/** `trickle watch`: run the watchtower daemon (flags wired to {@link createWatchtower}). */
import { Command, Option } from 'commander';
import { parseUnits } from 'ethers';
import type { TrickleError } from '@trickle/protocol/errors';
import { createWatchtower, WATCHTOWER_DEFAULTS } from '../watch/watchtower.js';
import { jsonLinesLogger, LOG_LEVELS, type LogLevel } from '../watch/log.js';
import { DEV_CHAIN_IDS } from '@trickle/chain/types';
import { intOption, MAX_TIMER_MS, type CliIo, type CommandContext } from '../context.js';
import { CliError, EXIT, usageError } from '../exit.js';
import { checkStoreDir } from '../watch/storeReader.js';
import { withContext, withExitCodes } from '../run.js';

interface WatchFlags {
  db?: string;
  listen?: string;
  host: string;
  pollMs: string;
  storePollMs: string;
  sweepMs: string;
  reorgDepth: string;
  revealMarginSeconds: string;
  txBumpBlocks: string;
  txMaxFeeGwei?: string;
  maxHeadAgeSeconds?: string;
  logLevel: string;
  allowMissingStore?: boolean;
}

/** The `watch` command. */
export function watchCommand(io: CliIo): Command {
  return withExitCodes(
    new Command('watch')
      .summary('run a watchtower that challenges stale force closes (JSON-line logs; SIGINT/SIGTERM to stop)')
      .description(
        'run a watchtower: keep the latest state both signed of each channel (from --store and/or POST /states), follow ' +
          'the adjudicator, and challenge any force close that registered an older version, before its deadline. ' +
          'challenge may be sent by anyone: --key-file only pays gas. Locks: the preimages a device claimed (in its ' +
          'records under --store, or in a POST /states body) are revealed on-chain while they can still pay the ' +
          'device: at once when the channel is being force-closed, --reveal-margin-seconds before the expiry while ' +
          'it is open; a challenge carries the lock list, and a force close with locks is settled with them once ' +
          'every lock is decided. Logs JSON lines on stdout; stops on SIGINT/SIGTERM.',
      )
      .addOption(
        new Option('--db <dir>', "the watchtower's own LMDB database (states, block cursor)").env('TRICKLE_WATCH_DB'),
      )
      .addOption(
        new Option('--listen <port>', 'serve the HTTP API (POST /states, GET /health, GET /channels) on this port').env(
          'TRICKLE_WATCH_PORT',
        ),
      )
      .addOption(new Option('--host <addr>', 'interface for the HTTP API').default('127.0.0.1'))
      .addOption(new Option('--poll-ms <n>', 'chain poll interval').env('TRICKLE_POLL_MS').default('2000'))
      .addOption(new Option('--store-poll-ms <n>', 're-read --store this often').default('5000'))
      .addOption(
        new Option(
          '--sweep-ms <n>',
          'read every watched channel on-chain at least this often (and 4 times per challenge period), events or not',
        ).default('900000'),
      )
      .addOption(
        new Option(
          '--allow-missing-store',
          'start even if the --store directory does not exist yet (it is read once it appears); without it a --store ' +
            'that cannot be read is refused at start',
        ),
      )
      .addOption(
        new Option('--reorg-depth <n>', 'blocks to rewind when the last processed block was reorganised').default('12'),
      )
      .addOption(
        new Option(
          '--reveal-margin-seconds <n>',
          "reveal a claimed lock's preimage this long before its expiry when the hub has not countersigned the claim",
        ).default('60'),
      )
      .addOption(
        new Option(
          '--tx-bump-blocks <n>',
          'a challenge, reveal or settle not mined within n blocks (or 15 s) is sent again with the same nonce and fees ' +
            '+20%, until its deadline (0: off; each send then waits 120 s)',
        )
          .env('TRICKLE_TX_BUMP_BLOCKS')
          .default('2'),
      )
      .addOption(
        new Option(
          '--tx-max-fee-gwei <gwei>',
          'highest maxFeePerGas a re-sent transaction may carry (default: 10 times its first send)',
        ).env('TRICKLE_TX_MAX_FEE_GWEI'),
      )
      .addOption(
        new Option(
          '--max-head-age-seconds <n>',
          'GET /health is degraded while the confirmed head has not moved for this long: a node that stopped following ' +
            'the chain answers from an old head, without errors (default 600; 0 on a development chain, chain id 31337 ' +
            'or 1337, which mines only on transactions; 0: off)',
        ),
      )
      .addOption(new Option('--log-level <level>', 'lowest level logged').choices([...LOG_LEVELS]).default('info'))
      .action(async (flags: WatchFlags, command: Command) => {
        await withContext(command, io, (ctx) => watch(ctx, flags));
      }),
  );
}

async function watch(ctx: CommandContext, flags: WatchFlags): Promise<void> {
  if (!flags.db)
    throw usageError('--db <dir> (or TRICKLE_WATCH_DB) is required: the watchtower keeps its states there');
  const listen =
    flags.listen === undefined ? undefined : { port: intOption(flags.listen, '--listen', 0), host: flags.host };
  if (listen && listen.port > 65_535)
    throw usageError(`--listen must be a port from 0 to 65535, got '${flags.listen}'`);
  const ms = { min: 1, max: MAX_TIMER_MS };
  const pollMs = intOption(flags.pollMs, '--poll-ms', 2000, ms);
  const storePollMs = intOption(flags.storePollMs, '--store-poll-ms', 5000, ms);
  const sweepMs = intOption(flags.sweepMs, '--sweep-ms', 900_000, ms);
  const reorgDepth = intOption(flags.reorgDepth, '--reorg-depth', 12);
  const revealMarginSeconds = intOption(flags.revealMarginSeconds, '--reveal-margin-seconds', 60);
  const bumpBlocks = intOption(flags.txBumpBlocks, '--tx-bump-blocks', 2);
  const maxHeadAgeSeconds =
    flags.maxHeadAgeSeconds === undefined
      ? undefined
      : intOption(flags.maxHeadAgeSeconds, '--max-head-age-seconds', 600, { max: Math.floor(MAX_TIMER_MS / 1000) });
  let maxFeePerGas: bigint | undefined;
  if (flags.txMaxFeeGwei !== undefined) {
    try {
      maxFeePerGas = parseUnits(flags.txMaxFeeGwei, 'gwei');
    } catch {
      maxFeePerGas = 0n; // not a decimal number: refused below
    }
    if (maxFeePerGas <= 0n)
      throw usageError(`--tx-max-fee-gwei must be a positive number, got '${flags.txMaxFeeGwei}'`);
  }
  const storeDir = ctx.options.store;
  // Before the chain is asked anything: a mistyped path would leave the operator's channels unguarded, silently.
  if (storeDir && !flags.allowMissingStore) {
    try {
      await checkStoreDir(storeDir);
    } catch (e) {
      const err = e as TrickleError; // checkStoreDir throws nothing else
      throw new CliError(EXIT.USAGE, 'INVALID_ARGUMENT', `--store: ${err.shortMessage}`, {
        hint: 'check --store (or TRICKLE_STORE); pass --allow-missing-store if the device creates it later',
        details: err.details,
        cause: err,
      });
    }
  }
  const chain = await ctx.chain();
  const sender = await ctx.wallet();
  const tower = createWatchtower({
    provider: chain.provider,
    adjudicator: chain.adjudicator.address,
    chainId: chain.chainId,
    sender,
    dbPath: flags.db,
    storeDir,
    allowMissingStore: flags.allowMissingStore,
    listen,
    confirmations: await ctx.confirmations(),
    pollMs,
    storePollMs,
    sweepMs,
    reorgDepth,
    revealMarginSeconds,
    maxHeadAgeMs:
      (maxHeadAgeSeconds ?? (DEV_CHAIN_IDS.has(chain.chainId) ? 0 : WATCHTOWER_DEFAULTS.maxHeadAgeMs / 1000)) * 1000,
    replace: bumpBlocks === 0 ? false : { everyBlocks: bumpBlocks, maxFeePerGas },
    log: jsonLinesLogger((line) => ctx.io.out(line), flags.logLevel as LogLevel),
  });
  await tower.start();
  ctx.progress(
    `watching adjudicator ${chain.adjudicator.address} on chain ${chain.chainId}${tower.apiUrl ? `; API at ${tower.apiUrl}` : ''} (Ctrl-C to stop)`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await tower.stop();
}
