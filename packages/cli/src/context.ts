/**
 * What every command gets: the resolved global options, lazily opened chain / wallet / store, and output helpers
 * (one JSON object on stdout with `--json`, human text otherwise, progress on stderr).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { TransactionReceipt, Wallet } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { SerialWallet } from '@trickle/chain/serialWallet';
import { isTrickleError, MalformedError } from '@trickle/protocol/errors';
import { toAddress, toBytes32 } from '@trickle/protocol/hex';
import { stringifyJson } from '@trickle/protocol/json';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { fileChannelStore, type ChannelStore } from '@trickle/client/store';
import { CliError, EXIT, usageError } from './exit.js';
import { connectRpc, type RpcConnection } from './rpc.js';
import { DEV_CHAIN_IDS } from '@trickle/chain/types';

/** Under the default confirmations, how long a chain may mine nothing on top of a transaction before it is taken for a development chain. */
const IDLE_CHAIN_MS = 15_000;

/** Global options, as commander parses them (flags override the environment). */
export interface GlobalOptions {
  readonly rpc?: string | undefined;
  readonly adjudicator?: string | undefined;
  readonly keyFile?: string | undefined;
  readonly store?: string | undefined;
  readonly json?: boolean | undefined;
  readonly confirmations?: string | undefined;
  readonly timeout?: string | undefined;
}

/** Where a command writes. The bin passes process.stdout / process.stderr. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

/** An open chain: the connection and the adjudicator bound to the provider (reads). */
export interface ChainHandle extends RpcConnection {
  readonly adjudicator: Adjudicator;
}

/** The longest timer Node runs (2^31 - 1 ms, about 24.8 days): a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Parse a non-negative integer option.
 * @param value - the option as given (undefined or empty: `fallback`)
 * @param name - the option, for the message
 * @param fallback - the default
 * @param range - the values allowed (default: 0 up to `Number.MAX_SAFE_INTEGER`)
 * @throws CliError exit 1 when it is no integer or out of range
 */
export function intOption(
  value: string | undefined,
  name: string,
  fallback: number,
  range: { readonly min?: number; readonly max?: number } = {},
): number {
  if (value === undefined || value === '') return fallback;
  const { min = 0, max = Number.MAX_SAFE_INTEGER } = range;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) throw usageError(`${name} must be an integer from ${min} to ${max}, got '${value}'`);
  return n;
}

/** Parse a channel id argument. @throws CliError exit 1 */
export function channelIdArg(value: string): ChannelId {
  try {
    return toBytes32(value) as string as ChannelId;
  } catch {
    throw usageError(`'${value}' is not a channel id (0x followed by 64 hex digits)`);
  }
}

/** Parse an address argument. @throws CliError exit 1 */
export function addressArg(value: string, name: string): Address {
  try {
    return toAddress(value);
  } catch (e) {
    throw usageError(
      `${name} '${value}' is not an address${e instanceof MalformedError ? ` (${e.shortMessage})` : ''}`,
    );
  }
}

/**
 * Per-invocation context: options plus lazily created resources, closed by {@link CommandContext.close}.
 */
export class CommandContext {
  readonly options: GlobalOptions;
  readonly io: CliIo;
  /**
   * `--confirmations` as given, or `undefined` for the default: 0 on a development chain (chain id 31337 or 1337),
   * else 1 (see {@link CommandContext.confirmations}).
   */
  readonly confirmationsOption: number | undefined;
  /** Timeout for RPC requests and for waiting on confirmations, in milliseconds. */
  readonly timeoutMs: number;
  #rpc: Promise<RpcConnection> | undefined;
  #chain: Promise<ChainHandle> | undefined;
  #wallet: Promise<Wallet> | undefined;
  #store: ChannelStore | undefined;

  constructor(options: GlobalOptions, io: CliIo) {
    this.options = options;
    this.io = io;
    this.confirmationsOption =
      options.confirmations === undefined || options.confirmations === ''
        ? undefined
        : intOption(options.confirmations, '--confirmations', 1);
    // A zero or overflowing timeout would fail every request at once, read as "cannot reach the chain" (exit 5).
    this.timeoutMs =
      intOption(options.timeout, '--timeout', 120, { min: 1, max: Math.floor(MAX_TIMER_MS / 1000) }) * 1000;
  }

  /** Whether `--json` was given. */
  get json(): boolean {
    return this.options.json === true;
  }

  /** The chain's JSON-RPC connection (no adjudicator needed). @throws CliError exit 1 without --rpc, exit 5 when unreachable */
  rpc(): Promise<RpcConnection> {
    return (this.#rpc ??= (async () => {
      const { rpc } = this.options;
      if (!rpc) throw usageError('--rpc <url> (or TRICKLE_RPC_URL) is required');
      return connectRpc(rpc, this.timeoutMs);
    })());
  }

  /** The chain and adjudicator. @throws CliError exit 1 without --rpc/--adjudicator, exit 5 when unreachable */
  chain(): Promise<ChainHandle> {
    return (this.#chain ??= (async () => {
      const { adjudicator } = this.options;
      if (!this.options.rpc) throw usageError('--rpc <url> (or TRICKLE_RPC_URL) is required');
      if (!adjudicator) throw usageError('--adjudicator <address> (or TRICKLE_ADJUDICATOR) is required');
      const address = addressArg(adjudicator, '--adjudicator');
      const conn = await this.rpc();
      // An address with no code answers every read with empty data, which would read as an RPC failure (exit 5):
      // say instead that --adjudicator names no contract on this chain (another network, a typo, a fresh dev chain).
      if ((await conn.provider.getCode(address)) === '0x') {
        throw new CliError(
          EXIT.USAGE,
          'NO_CONTRACT',
          `no contract at --adjudicator ${address} on chain ${conn.chainId}`,
          {
            hint: 'check --adjudicator and that --rpc is the network it was deployed to',
            details: { adjudicator: address, chainId: conn.chainId, url: conn.url },
          },
        );
      }
      return { ...conn, adjudicator: new Adjudicator(address, conn.provider) };
    })());
  }

  /**
   * Blocks to wait on top of a transaction's block before reporting it done: `--confirmations`, or by default 0 on a
   * development chain (chain id 31337 or 1337, which mine a block only for a transaction) and 1 elsewhere.
   * @throws CliError as {@link CommandContext.rpc}
   */
  async confirmations(): Promise<number> {
    if (this.confirmationsOption !== undefined) return this.confirmationsOption;
    const { chainId } = await this.rpc();
    return DEV_CHAIN_IDS.has(chainId) ? 0 : 1;
  }

  /** The wallet of `--key-file`, connected to the chain. @throws CliError exit 1 without a readable key */
  wallet(): Promise<Wallet> {
    return (this.#wallet ??= (async () => {
      const path = this.options.keyFile;
      if (!path) throw usageError('--key-file <path> (or TRICKLE_KEY_FILE) is required to send transactions');
      let text: string;
      try {
        text = readFileSync(path, 'utf8').trim();
      } catch (cause) {
        throw new CliError(
          EXIT.USAGE,
          'INVALID_ARGUMENT',
          `cannot read key file ${path}: ${(cause as Error).message}`,
          { cause },
        );
      }
      if (!/^0x[0-9a-fA-F]{64}$/.test(text)) {
        throw usageError(`key file ${path} must hold one 0x-prefixed 32-byte hex private key`);
      }
      try {
        if ((statSync(path).mode & 0o077) !== 0)
          this.progress(`warning: key file ${path} is readable by other users (chmod 600 it)`);
      } catch {
        /* stat after a successful read: ignore */
      }
      const { provider } = await this.rpc();
      try {
        return new SerialWallet(text, provider);
      } catch (cause) {
        // 32 bytes of hex that are no secp256k1 key (zero, or not below the curve order).
        throw new CliError(EXIT.USAGE, 'INVALID_ARGUMENT', `key file ${path} does not hold a valid private key`, {
          hint: 'a private key is a nonzero 32-byte number below the secp256k1 curve order',
          cause,
        });
      }
    })());
  }

  /** The device store of `--store` (one per context, closed by {@link close}). @throws CliError exit 1 when `--store` is missing */
  store(purpose: string): ChannelStore {
    const dir = this.options.store;
    if (!dir) throw usageError(`--store <dir> (or TRICKLE_STORE) is required to ${purpose}`);
    return (this.#store ??= fileChannelStore(dir));
  }

  /**
   * The device store of `--store`, taken for writing: its lock (`ChannelStore.acquire`, the one a device process holds
   * while it runs), released by {@link close}. The device process writes its in-memory record over what another writer
   * wrote (the last write wins), so a command writing while it runs would have its write undone (an import gone, a
   * closing mark lost) and act on a record the device may already have moved past.
   * @param purpose - for the error message when `--store` is missing ("import a backup")
   * @throws CliError exit 1: `--store` missing, or `STORE_FAILURE` (a live process holds the store, or the lock cannot
   *   be taken), nothing written or sent
   */
  async writableStore(purpose: string): Promise<ChannelStore> {
    const store = this.store(purpose);
    // A directory that does not exist yet is held by no one (and is not created here for a mistyped path).
    if (!existsSync(this.options.store!)) return store;
    try {
      await store.acquire?.();
    } catch (e) {
      const err = isTrickleError(e) ? e : undefined;
      throw new CliError(
        EXIT.USAGE,
        'STORE_FAILURE',
        `cannot ${purpose}: ${err?.shortMessage ?? (e instanceof Error ? e.message : String(e))}`,
        {
          hint: 'stop the device process using this store first (one writer at a time), then run this again',
          details: err?.details,
          cause: e,
        },
      );
    }
    return store;
  }

  /** A progress line on stderr (never on stdout, which carries the result). */
  progress(line: string): void {
    this.io.err(`${line}\n`);
  }

  /**
   * Print a command's result: `json` as one JSON object (bigints as decimal strings) with `--json`, else `human`.
   */
  print(json: Record<string, unknown>, human: string): void {
    this.io.out(this.json ? `${stringifyJson({ ok: true, ...json })}\n` : human.endsWith('\n') ? human : `${human}\n`);
  }

  /**
   * After a transaction is mined, wait until `--confirmations` blocks are on top of its block, with progress lines.
   * @throws CliError exit 5 on timeout
   */
  async confirm(receipt: TransactionReceipt): Promise<void> {
    const confirmations = await this.confirmations();
    if (confirmations === 0) return;
    const { provider } = await this.rpc();
    const start = Date.now();
    const until = start + this.timeoutMs;
    let last = -1;
    for (;;) {
      const head = await provider.getBlockNumber();
      const have = Math.max(0, head - receipt.blockNumber);
      if (have >= confirmations) return;
      if (have !== last)
        this.progress(
          `waiting for confirmations: ${have}/${confirmations} (block ${receipt.blockNumber}, head ${head})`,
        );
      last = have;
      // Under the default, a chain that mined nothing on top of the transaction for a while is taken for one that
      // mines only on transactions (a development node under another chain id): waiting longer would only time out.
      if (this.confirmationsOption === undefined && have === 0 && Date.now() - start >= IDLE_CHAIN_MS) {
        this.progress(
          `no new block for ${IDLE_CHAIN_MS / 1000} s: taking the chain for one that mines only on transactions (pass --confirmations to wait anyway)`,
        );
        return;
      }
      if (Date.now() > until) {
        throw new CliError(
          EXIT.NETWORK,
          'TIMEOUT',
          `transaction ${receipt.hash} mined in block ${receipt.blockNumber} but not confirmed in time`,
          {
            hint: 'it may still confirm: check with `trickle show`; on a local chain pass --confirmations 0',
          },
        );
      }
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }

  /** Release the provider and the store's open files. */
  async close(): Promise<void> {
    const rpc = this.#rpc;
    this.#rpc = undefined;
    this.#chain = undefined;
    const store = this.#store;
    this.#store = undefined;
    await store?.close?.().catch(() => {});
    if (rpc)
      await rpc.then(
        (c) => c.provider.destroy(),
        () => {},
      );
  }
}
