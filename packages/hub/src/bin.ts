#!/usr/bin/env node
// trickle-hub: run a hub. Flags override environment variables (TRICKLE_HUB_*).
import { readFileSync, realpathSync, statSync, statfsSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { tmpdir } from 'node:os';
import { resolve, sep } from 'node:path';
import { Command, Option } from 'commander';
import { parseUnits } from 'ethers';
import { connectChain } from '@trickle/chain/rpc';
import { pino } from 'pino';
import { TrickleError } from '@trickle/protocol/errors';
import { toAddress } from '@trickle/protocol/hex';
import { stringifyJson } from '@trickle/protocol/json';
import { bestSigner } from '@trickle/protocol/native';
import type { Address, Hex } from '@trickle/protocol/types';
import { createHub } from './hub.js';
import { resolveDashboard } from './dashboard/http.js';
import { MAX_TIMER_MS } from './options.js';
import { workerCrypto } from './crypto.js';
import { isLmdbCommitEcho, openLmdbStore } from './store/lmdb.js';
import { openPostgresStore } from './store/postgres.js';
import type { HubStore } from './store/types.js';
import type { ChannelLeases } from './leases.js';
import type { MarketRounds } from './market-rounds.js';
import type { RouteOutbox } from './store/postgres-outbox.js';
import { adjudicatorHubChain } from './chain-watcher.js';
import { hubStuckCopies } from './stuck-copies.js';
import { DEFAULT_MAX_PARTICIPANT_ORDERS, DEFAULT_MAX_ROUND_ORDERS } from './market-clock.js';
import { DEFAULT_ROUTE_RETENTION_HOURS } from './route-retention.js';
import { DEV_CHAIN_IDS } from '@trickle/chain/types';

const program = new Command('trickle-hub')
  .description('Run a Trickle hub: WebSocket payment channels with devices, on an EVM adjudicator.')
  .addOption(
    new Option('--port <n>', 'TCP port for WebSocket, /metrics and /health').env('TRICKLE_HUB_PORT').default('8547'),
  )
  .addOption(new Option('--host <addr>', 'interface to listen on').env('TRICKLE_HUB_HOST').default('127.0.0.1'))
  .addOption(new Option('--rpc <url>', 'JSON-RPC URL of the chain').env('TRICKLE_RPC_URL').makeOptionMandatory())
  .addOption(
    new Option(
      '--chain-id <id>',
      'refuse to start when the --rpc endpoint serves another chain (checked when given)',
    ).env('TRICKLE_CHAIN_ID'),
  )
  .addOption(
    new Option('--adjudicator <address>', 'adjudicator contract address')
      .env('TRICKLE_ADJUDICATOR')
      .makeOptionMandatory(),
  )
  .addOption(
    new Option('--key-file <path>', 'file holding the hub private key (0x-hex)')
      .env('TRICKLE_HUB_KEY_FILE')
      .makeOptionMandatory(),
  )
  .addOption(
    new Option(
      '--store <dir|url>',
      'store: a directory for the LMDB database and its write-ahead log (one hub process at a time), or a postgres:// URL',
    )
      .env('TRICKLE_HUB_STORE')
      .default('./hub-store'),
  )
  .addOption(
    new Option(
      '--store-log-bytes <n>',
      'LMDB store: bytes of each of its two write-ahead log files, allocated up front (default 8 MiB); when the disk is full, commits go on until the log is',
    ).env('TRICKLE_HUB_STORE_LOG_BYTES'),
  )
  .addOption(
    new Option(
      '--cluster-lease-ms <n>',
      'with a postgres:// store: several hub processes share it, each channel leased to one of them for this long at a time (off when absent)',
    ).env('TRICKLE_CLUSTER_LEASE_MS'),
  )
  .addOption(
    new Option(
      '--confirmations <n>',
      'blocks before acting on chain events (default: 0 on a development chain, chain id 31337 or 1337; else 2)',
    ).env('TRICKLE_CONFIRMATIONS'),
  )
  .addOption(
    new Option(
      '--tx-bump-blocks <n>',
      'a challenge or reveal not mined within n blocks (or 15 s) is sent again, same nonce, fees +20% (default 2; 0: off)',
    ).env('TRICKLE_TX_BUMP_BLOCKS'),
  )
  .addOption(
    new Option(
      '--tx-max-fee-gwei <gwei>',
      'highest maxFeePerGas a re-sent challenge or reveal may carry (default: 10 times its first send)',
    ).env('TRICKLE_TX_MAX_FEE_GWEI'),
  )
  .addOption(new Option('--poll-ms <n>', 'chain poll interval').env('TRICKLE_POLL_MS').default('1000'))
  .addOption(new Option('--max-frame-bytes <n>', 'largest frame accepted').env('TRICKLE_MAX_FRAME_BYTES'))
  .addOption(
    new Option(
      '--max-connections <n>',
      'most simultaneous connections, counted from TCP accept (an upgrade not yet finished counts); more are told 1013 / 503 or dropped',
    ).env('TRICKLE_MAX_CONNECTIONS'),
  )
  .addOption(
    new Option(
      '--max-handshakes-per-address <n>',
      'most connections from one IPv4 address (or IPv6 /64), counted from TCP accept until their device holds a channel here (default 256; behind a proxy every device has its address: raise it)',
    ).env('TRICKLE_MAX_HANDSHAKES_PER_ADDRESS'),
  )
  .addOption(
    new Option(
      '--http-requests-per-second <n>',
      'plain HTTP requests (/health, /metrics, dashboard) one IPv4 address (or IPv6 /64) may make per second; more get 429 (default 50; behind a proxy every request has its address: raise it)',
    ).env('TRICKLE_HTTP_REQUESTS_PER_SECOND'),
  )
  .addOption(
    new Option(
      '--http-request-burst <n>',
      'plain HTTP requests one address may make at once above that rate (default 200)',
    ).env('TRICKLE_HTTP_REQUEST_BURST'),
  )
  .addOption(
    new Option(
      '--lock-margin-seconds <n>',
      'conditional routes: seconds added to the challenge duration between the payer’s lock expiry and the hub’s toward the payee (default 60)',
    ).env('TRICKLE_LOCK_MARGIN_SECONDS'),
  )
  .addOption(
    new Option(
      '--min-challenge-seconds <n>',
      'refuse channels whose challenge period is shorter: the time the hub has to answer a stale force close',
    )
      .env('TRICKLE_MIN_CHALLENGE_SECONDS')
      .default('600'),
  )
  .addOption(new Option('--log-level <level>', 'pino log level').env('TRICKLE_LOG_LEVEL').default('info'))
  .addOption(
    new Option('--crypto-threads <n>', 'worker threads for signature work (0: inline; default cores − 1)').env(
      'TRICKLE_CRYPTO_THREADS',
    ),
  )
  .addOption(
    new Option('--market-round-ms <n>', 'run the market with rounds of this length (off when absent)').env(
      'TRICKLE_MARKET_ROUND_MS',
    ),
  )
  .addOption(
    new Option(
      '--market-token <address>',
      'the token the market settles in (required with --market-round-ms): escrows and credits only on channels in it',
    ).env('TRICKLE_MARKET_TOKEN'),
  )
  .addOption(
    new Option('--market-fee-bps <n>', 'hub fee on seller proceeds, basis points')
      .env('TRICKLE_MARKET_FEE_BPS')
      .default('0'),
  )
  .addOption(
    new Option('--tls-cert <file>', 'PEM certificate chain: serve https:// and wss:// (with --tls-key)').env(
      'TRICKLE_TLS_CERT',
    ),
  )
  .addOption(new Option('--tls-key <file>', 'PEM private key of --tls-cert').env('TRICKLE_TLS_KEY'))
  .addOption(
    new Option(
      '--dashboard-token-file <file>',
      'serve the operator dashboard at /dashboard behind the token in this file (at least 16 characters; or the token itself in TRICKLE_DASHBOARD_TOKEN)',
    ).env('TRICKLE_DASHBOARD_TOKEN_FILE'),
  )
  .addOption(
    new Option(
      '--auto-deposit <amount>',
      "liquidity: top the hub's side of each device channel up to this (base units) when it opens or runs low",
    ).env('TRICKLE_AUTO_DEPOSIT'),
  )
  .addOption(
    new Option(
      '--auto-deposit-budget <total>',
      'liquidity: the most the hub deposits in total under --auto-deposit (kept across restarts)',
    ).env('TRICKLE_AUTO_DEPOSIT_BUDGET'),
  )
  .addOption(
    new Option(
      '--auto-deposit-low <amount>',
      'liquidity: top up when the hub can pay less than this in a channel (default: half of --auto-deposit)',
    ).env('TRICKLE_AUTO_DEPOSIT_LOW'),
  )
  .addOption(
    new Option(
      '--drain-timeout-ms <n>',
      'on SIGTERM/SIGINT: how long to wait for received updates to be committed and acked before closing sockets',
    )
      .env('TRICKLE_DRAIN_TIMEOUT_MS')
      .default('5000'),
  )
  .addOption(
    new Option(
      '--market-keep-clearings <rounds>',
      'keep the stored clearing records of this many latest rounds once their credits landed (older ones are deleted; unpaid ones never)',
    )
      .env('TRICKLE_MARKET_KEEP_CLEARINGS')
      .default('1000'),
  )
  .addOption(
    new Option(
      '--market-max-round-orders <n>',
      'the most orders and escrows one round takes (its clearing record must fit 64 parts); more are refused with LIMIT_EXCEEDED. In a cluster the database counts each round over all processes: give them one bound',
    )
      .env('TRICKLE_MARKET_MAX_ROUND_ORDERS')
      .default(String(DEFAULT_MAX_ROUND_ORDERS)),
  )
  .addOption(
    new Option(
      '--market-max-participant-orders <n>',
      'the most orders one device places in one round; more are refused with LIMIT_EXCEEDED (asks cost nothing: one device could otherwise fill a round)',
    )
      .env('TRICKLE_MARKET_MAX_PARTICIPANT_ORDERS')
      .default(String(DEFAULT_MAX_PARTICIPANT_ORDERS)),
  )
  .addOption(
    new Option(
      '--route-retention-hours <n>',
      'keep finished routed payments (route records, credit markers, cluster outbox rows) this long, then delete them; a payment id presented again after that is a new payment (0: keep for ever)',
    )
      .env('TRICKLE_ROUTE_RETENTION_HOURS')
      .default(String(DEFAULT_ROUTE_RETENTION_HOURS)),
  )
  .action(async (o: Record<string, string | undefined>) => {
    const logLevel = o['logLevel']!;
    if (!LOG_LEVELS.includes(logLevel))
      throw new TrickleError('INVALID_ARGUMENT', `--log-level must be one of ${LOG_LEVELS.join(', ')}`, {
        details: { '--log-level': logLevel },
      });
    const logger = pino({ level: logLevel });
    process.on('unhandledRejection', (reason) => {
      if (isLmdbCommitEcho(reason)) {
        logger.debug({ err: reason }, 'LMDB commit failed (reported to the store as well)');
        return;
      }
      throw reason; // anything else ends the process, as Node does by default
    });
    // Every number is checked before anything starts: `Number('abc')` is NaN, and a NaN or negative
    // --confirmations left the chain follower failing every poll (or skipping blocks) while the hub served.
    const port = intArg('--port', o['port']!, 0, 65535);
    const confirmationsOption =
      o['confirmations'] === undefined ? undefined : intArg('--confirmations', o['confirmations'], 0);
    const pollMs = intArg('--poll-ms', o['pollMs']!, 1, MAX_TIMER_MS);
    const drainTimeoutMs = intArg('--drain-timeout-ms', o['drainTimeoutMs']!, 0);
    const routeRetentionHours = intArg('--route-retention-hours', o['routeRetentionHours']!, 0);
    const limits: Record<string, number> = {};
    if (o['maxFrameBytes']) limits['maxFrameBytes'] = intArg('--max-frame-bytes', o['maxFrameBytes'], 1);
    if (o['maxConnections']) limits['maxConnections'] = intArg('--max-connections', o['maxConnections'], 1);
    if (o['maxHandshakesPerAddress'])
      limits['maxHandshakesPerAddress'] = intArg('--max-handshakes-per-address', o['maxHandshakesPerAddress'], 1);
    if (o['httpRequestsPerSecond'])
      limits['httpRequestsPerSecond'] = intArg('--http-requests-per-second', o['httpRequestsPerSecond'], 1);
    if (o['httpRequestBurst']) limits['httpRequestBurst'] = intArg('--http-request-burst', o['httpRequestBurst'], 1);
    if (o['lockMarginSeconds'])
      limits['lockMarginSeconds'] = intArg('--lock-margin-seconds', o['lockMarginSeconds'], 1);
    limits['minChallengeSeconds'] = intArg('--min-challenge-seconds', o['minChallengeSeconds']!, 1);
    const threads = o['cryptoThreads'] === undefined ? undefined : intArg('--crypto-threads', o['cryptoThreads'], 0);
    // The market's numbers are checked whether or not --market-round-ms is given: a bad value is refused at start
    // (docs: "a numeric flag that is not a whole number in its range"), not left to fail once a market is turned on.
    const marketFeeBps = intArg('--market-fee-bps', o['marketFeeBps'] ?? '0', 0, 10_000);
    const marketKeepClearings = intArg('--market-keep-clearings', o['marketKeepClearings'] ?? '1000', 0);
    const marketMaxRoundOrders = intArg(
      '--market-max-round-orders',
      o['marketMaxRoundOrders'] ?? String(DEFAULT_MAX_ROUND_ORDERS),
      1,
    );
    const marketMaxParticipantOrders = intArg(
      '--market-max-participant-orders',
      o['marketMaxParticipantOrders'] ?? String(DEFAULT_MAX_PARTICIPANT_ORDERS),
      1,
    );
    const market = o['marketRoundMs']
      ? {
          roundMs: intArg('--market-round-ms', o['marketRoundMs'], 1, MAX_TIMER_MS),
          feeBps: BigInt(marketFeeBps),
          keepClearings: marketKeepClearings,
          maxRoundOrders: marketMaxRoundOrders,
          maxParticipantOrders: marketMaxParticipantOrders,
          token: marketToken(o['marketToken']),
        }
      : undefined;
    if (o['clusterLeaseMs']) intArg('--cluster-lease-ms', o['clusterLeaseMs'], 1, MAX_TIMER_MS);
    const expectChainId = o['chainId'] === undefined ? undefined : intArg('--chain-id', o['chainId'], 1);
    const bumpBlocks = o['txBumpBlocks'] === undefined ? 2 : intArg('--tx-bump-blocks', o['txBumpBlocks'], 0);
    const maxFeePerGas = o['txMaxFeeGwei'] === undefined ? undefined : gweiArg('--tx-max-fee-gwei', o['txMaxFeeGwei']);
    const storeLogBytes =
      o['storeLogBytes'] === undefined ? undefined : intArg('--store-log-bytes', o['storeLogBytes'], 4096);
    const key = readArgFile('--key-file', o['keyFile']!).trim() as Hex;
    const signer = hubSigner(o['keyFile']!, key);
    // connectChain: the endpoint's chain id checked against --chain-id, an unreachable endpoint named
    // (DISCONNECTED), no response cache, and a wallet that sends one transaction at a time (challenges, deposits
    // and reveals of the hub never read the same pending nonce).
    const rpc = await connectChain(o['rpc']!, { expectChainId });
    // A deposit seen in the newest block of a real chain may be reorganised away after the hub took the channel on:
    // by default the follower acts two blocks behind the head there (the CLI waits one on top of its transactions).
    const confirmations = confirmationsOption ?? (DEV_CHAIN_IDS.has(rpc.chainId) ? 0 : 2);
    const chain = adjudicatorHubChain({
      provider: rpc.provider,
      chainId: rpc.chainId,
      adjudicator: addressArg('--adjudicator', o['adjudicator']!),
      runner: rpc.wallet(key),
      confirmations,
      replace:
        bumpBlocks === 0
          ? false
          : {
              everyBlocks: bumpBlocks,
              maxFeePerGas,
              // A copy a send gave up on is kept in the store: the next send, after a restart too, replaces it.
              stuckCopies: hubStuckCopies(() => store),
              onSend: (c) => {
                if (c.attempt > 0)
                  logger.warn(
                    {
                      ...c,
                      maxFeePerGas: String(c.maxFeePerGas),
                      maxPriorityFeePerGas: String(c.maxPriorityFeePerGas),
                    },
                    'transaction not mined: sent again with higher fees',
                  );
              },
            },
    });
    logger.info({ chainId: String(rpc.chainId), confirmations }, 'following the chain');
    const crypto = threads === 0 ? undefined : workerCrypto({ privateKey: key, address: signer.address, threads });
    if (Boolean(o['tlsCert']) !== Boolean(o['tlsKey']))
      throw new TrickleError('INVALID_ARGUMENT', '--tls-cert and --tls-key go together');
    const tls = o['tlsCert'] ? tlsFiles(o['tlsCert'], o['tlsKey']!) : undefined;
    // The token itself may come from the environment (TRICKLE_DASHBOARD_TOKEN); a file is preferred (not in `ps`).
    const dashboardToken = o['dashboardTokenFile']
      ? tokenFile(o['dashboardTokenFile'])
      : process.env['TRICKLE_DASHBOARD_TOKEN'];
    const dashboard = dashboardToken ? { token: dashboardToken } : undefined;
    if (Boolean(o['autoDeposit']) !== Boolean(o['autoDepositBudget']))
      throw new TrickleError('INVALID_ARGUMENT', '--auto-deposit and --auto-deposit-budget go together');
    const liquidity = o['autoDeposit']
      ? {
          autoDeposit: amountArg('--auto-deposit', o['autoDeposit']),
          budget: amountArg('--auto-deposit-budget', o['autoDepositBudget']!),
          lowWater: o['autoDepositLow'] ? amountArg('--auto-deposit-low', o['autoDepositLow']) : undefined,
        }
      : undefined;
    if (readableByOthers(o['keyFile']!))
      logger.warn(
        { keyFile: o['keyFile'] },
        "the hub's key file is readable by other users: anyone who reads it can sign away the hub's channels; chmod 600 it",
      );
    if (o['tlsKey'] && readableByOthers(o['tlsKey']))
      logger.warn(
        { tlsKey: o['tlsKey'] },
        'the --tls-key file is readable by other users: anyone who reads it can pose as this hub to devices and read the dashboard token in transit; chmod 600 it',
      );
    if (o['dashboardTokenFile'] && readableByOthers(o['dashboardTokenFile']))
      logger.warn(
        { dashboardTokenFile: o['dashboardTokenFile'] },
        'the --dashboard-token-file is readable by other users: anyone who reads it can open the dashboard; chmod 600 it',
      );
    const store = openStore(o, storeLogBytes);
    const temporary = temporaryStore(o['store']!);
    if (temporary)
      logger.warn(
        { store: o['store'], where: temporary },
        'the store is on a temporary filesystem: a reboot or a temp cleaner may erase the channel states the hub needs to answer a stale force close; use a directory on a persistent disk',
      );
    // Without gas the hub cannot send a challenge, a reveal or a deposit: a stale force close would settle.
    if ((await rpc.provider.getBalance(signer.address)) === 0n)
      logger.warn(
        { hub: signer.address, chainId: String(rpc.chainId) },
        "the hub's account holds no native token for gas: it cannot challenge a stale force close, reveal a preimage or deposit; fund it",
      );
    let hub: Awaited<ReturnType<typeof createHub>>;
    try {
      hub = await createHub({
        signer,
        crypto,
        store,
        leases: store.leases,
        marketRounds: store.market,
        routeOutbox: store.outbox,
        chain,
        port,
        host: o['host']!,
        logger,
        limits,
        chainPollMs: pollMs,
        market,
        tls,
        dashboard,
        liquidity,
        drainTimeoutMs,
        routeRetention: { hours: routeRetentionHours },
      });
    } catch (e) {
      await crypto?.close();
      await store.close();
      throw e;
    }
    // SIGTERM/SIGINT drain: stop accepting, commit and ack what was taken in, close sockets with 1001, exit 0.
    const stop = async () => {
      try {
        await hub.close();
      } catch (e) {
        logger.error({ err: e }, 'hub did not shut down cleanly');
        process.exit(1);
      }
      // Exit once the event loop is empty, so that native work still finishing (LMDB's background flush, a crypto
      // worker's teardown) completes first: process.exit() in the middle of it aborted the process now and then
      // (SIGABRT, "napi_create_reference") instead of exiting 0. A handle left open would keep it alive: 5 s at most.
      process.exitCode = 0;
      setTimeout(() => process.exit(0), 5_000).unref();
    };
    process.once('SIGINT', () => void stop());
    process.once('SIGTERM', () => void stop());
    // One line on stdout for supervisors and tests: where the hub listens. Written once the handlers above are in
    // place — a supervisor may send SIGTERM as soon as it reads this line, and before, that signal killed the
    // process outright instead of draining it.
    process.stdout.write(
      `${JSON.stringify({ event: 'listening', url: hub.url, httpUrl: hub.httpUrl, port: hub.port, hub: hub.address, dashboard: dashboard ? `${hub.httpUrl}dashboard` : undefined })}\n`,
    );
  });

/** A whole number from `min` to `max` given to `flag`; anything else is INVALID_ARGUMENT naming the flag. */
function intArg(flag: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(Number.isSafeInteger(n) && n >= min && n <= max))
    throw new TrickleError(
      'INVALID_ARGUMENT',
      `${flag} must be a whole number ${max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`}`,
      { details: { [flag]: v } },
    );
  return n;
}

/** Whether a file the hub reads a secret from may be read by its group or by anyone (it was read: it exists). */
function readableByOthers(path: string): boolean {
  return (statSync(path).mode & 0o077) !== 0;
}

/** The text of the file `flag` names; a file it cannot read is INVALID_ARGUMENT naming the flag and the file. */
function readArgFile(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new TrickleError('INVALID_ARGUMENT', `cannot read ${flag} ${path}: ${(e as Error).message}`);
  }
}

/** The hub's signer from the text of --key-file; anything but a private key is refused naming the file (never its text). */
function hubSigner(path: string, key: Hex): ReturnType<typeof bestSigner> {
  const refused = () =>
    new TrickleError('INVALID_ARGUMENT', `--key-file ${path} must hold one 0x-prefixed 32-byte hex private key`);
  if (!/^0x[0-9a-fA-F]{64}$/.test(key)) throw refused();
  try {
    return bestSigner(key);
  } catch {
    throw refused(); // zero, or not below the curve order
  }
}

/** --tls-cert and --tls-key read and checked together: a pair that cannot serve TLS is refused naming both files. */
function tlsFiles(certFile: string, keyFile: string): { cert: string; key: string } {
  const cert = readArgFile('--tls-cert', certFile);
  const key = readArgFile('--tls-key', keyFile);
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new TrickleError(
      'INVALID_ARGUMENT',
      `--tls-cert ${certFile} and --tls-key ${keyFile} cannot serve TLS: ${(e as Error).message}`,
    );
  }
  return { cert, key };
}

/**
 * The dashboard token in `path`, checked as the dashboard checks it: a file given is a dashboard asked for, so an empty
 * one (a token generation that failed) is refused naming the flag and the file (never the token), not taken as "no
 * dashboard".
 */
function tokenFile(path: string): string {
  const token = readArgFile('--dashboard-token-file', path).trim();
  try {
    return resolveDashboard({ token }).token;
  } catch (e) {
    throw new TrickleError(
      'INVALID_ARGUMENT',
      `--dashboard-token-file ${path}: ${e instanceof TrickleError ? e.shortMessage : 'not a token'}`,
    );
  }
}

/** The token a market settles in: required with a market (a market across tokens pays real money for any token). */
function marketToken(v: string | undefined): Address {
  if (!v)
    throw new TrickleError(
      'INVALID_ARGUMENT',
      '--market-round-ms needs --market-token, the token the market settles in',
      {
        details: { '--market-token': v ?? null },
      },
    );
  return addressArg('--market-token', v);
}

/** pino's levels and `silent`. */
const LOG_LEVELS: readonly string[] = [...Object.keys(pino.levels.values), 'silent'];

/** An address given to `flag`; anything else is INVALID_ARGUMENT naming the flag. */
function addressArg(flag: string, v: string): Address {
  try {
    return toAddress(v);
  } catch {
    throw new TrickleError('INVALID_ARGUMENT', `${flag} must be a 20-byte 0x-hex address`, { details: { [flag]: v } });
  }
}

/** TMPFS_MAGIC of statfs(2): a RAM filesystem, empty after a reboot. */
const TMPFS = 0x01021994;

/**
 * Why an LMDB store directory may not outlive a reboot: on a tmpfs, or under the system's temporary directory (which
 * many systems clear at boot or by age). Undefined for a persistent disk or a postgres:// store.
 */
function temporaryStore(where: string): string | undefined {
  if (/^postgres(ql)?:\/\//.test(where)) return undefined;
  const dir = realpathSync(resolve(where));
  const tmp = realpathSync(tmpdir());
  if (dir === tmp || dir.startsWith(tmp + sep)) return `under the temporary directory ${tmp}`;
  try {
    if (statfsSync(dir).type === TMPFS) return 'a tmpfs';
  } catch {
    return undefined; // no statfs here: the path check above is all there is
  }
  return undefined;
}

/** A positive fee per gas in gwei (decimals allowed), in wei. */
function gweiArg(flag: string, v: string): bigint {
  let wei = 0n;
  try {
    wei = parseUnits(v, 'gwei');
  } catch {
    // not a decimal number: refused below
  }
  if (wei <= 0n)
    throw new TrickleError('INVALID_ARGUMENT', `${flag} must be a positive number of gwei`, { details: { [flag]: v } });
  return wei;
}

/** A non-negative integer amount in base units. */
function amountArg(flag: string, v: string): bigint {
  if (!/^\d+$/.test(v))
    throw new TrickleError('INVALID_ARGUMENT', `${flag} must be an integer amount in base units`, {
      details: { [flag]: v },
    });
  return BigInt(v);
}

/** `--store`: a postgres:// URL opens the PostgreSQL store (leased with --cluster-lease-ms), anything else LMDB. */
function openStore(
  o: Record<string, string | undefined>,
  logBytes: number | undefined,
): HubStore & {
  readonly leases?: ChannelLeases | undefined;
  readonly market?: MarketRounds | undefined;
  readonly outbox?: RouteOutbox | undefined;
} {
  const where = o['store']!;
  if (!/^postgres(ql)?:\/\//.test(where)) {
    if (o['clusterLeaseMs']) throw new TrickleError('INVALID_ARGUMENT', '--cluster-lease-ms needs a postgres:// store');
    return openLmdbStore({ path: where, logBytes });
  }
  // The owner URL stored with the leases is set by the hub once it listens (the bound port, also for --port 0).
  const cluster = o['clusterLeaseMs'] ? { leaseMs: Number(o['clusterLeaseMs']) } : undefined;
  return openPostgresStore({ url: where, cluster });
}

program.parseAsync().catch((e: unknown) => {
  const details = e instanceof TrickleError && Object.keys(e.details).length > 0 ? ` ${stringifyJson(e.details)}` : '';
  process.stderr.write(`trickle-hub: ${e instanceof Error ? e.message : String(e)}${details}\n`);
  process.exit(1);
});
