/**
 * What every command gets: the resolved global options, lazily opened chain / wallet / store, and output helpers
 * (one JSON object on stdout with `--json`, human text otherwise, progress on stderr).
 */
import { readFileSync, statSync } from 'node:fs';
import { Wallet, type TransactionReceipt } from 'ethers';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { MalformedError } from '@trickle/protocol/errors';
import { toAddress, toBytes32 } from '@trickle/protocol/hex';
import { stringifyJson } from '@trickle/protocol/json';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { fileChannelStore, type ChannelStore } from '@trickle/client/store';
import { CliError, EXIT, usageError } from './exit.js';
import { connectRpc, type RpcConnection } from './rpc.js';

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

/** Parse a non-negative integer option. @throws CliError exit 1 */
export function intOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  if (!/^\d+$/.test(value)) throw usageError(`${name} must be a non-negative integer, got '${value}'`);
  return Number(value);
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
    throw usageError(`${name} '${value}' is not an address${e instanceof MalformedError ? ` (${e.shortMessage})` : ''}`);
  }
}

/**
 * Per-invocation context: options plus lazily created resources, closed by {@link CommandContext.close}.
 */
export class CommandContext {
  readonly options: GlobalOptions;
  readonly io: CliIo;
  /** Blocks to wait on top of a transaction's block before reporting it done. */
  readonly confirmations: number;
  /** Timeout for RPC requests and for waiting on confirmations, in milliseconds. */
  readonly timeoutMs: number;
  #chain: Promise<ChainHandle> | undefined;
  #wallet: Promise<Wallet> | undefined;
  #store: ChannelStore | undefined;

  constructor(options: GlobalOptions, io: CliIo) {
    this.options = options;
    this.io = io;
    this.confirmations = intOption(options.confirmations, '--confirmations', 1);
    this.timeoutMs = intOption(options.timeout, '--timeout', 120) * 1000;
  }

  /** Whether `--json` was given. */
  get json(): boolean {
    return this.options.json === true;
  }

  /** The chain and adjudicator. @throws CliError exit 1 without --rpc/--adjudicator, exit 5 when unreachable */
  chain(): Promise<ChainHandle> {
    return (this.#chain ??= (async () => {
      const { rpc, adjudicator } = this.options;
      if (!rpc) throw usageError('--rpc <url> (or TRICKLE_RPC_URL) is required');
      if (!adjudicator) throw usageError('--adjudicator <address> (or TRICKLE_ADJUDICATOR) is required');
      const address = addressArg(adjudicator, '--adjudicator');
      const conn = await connectRpc(rpc, this.timeoutMs);
      return { ...conn, adjudicator: new Adjudicator(address, conn.provider) };
    })());
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
        throw new CliError(EXIT.USAGE, 'INVALID_ARGUMENT', `cannot read key file ${path}: ${(cause as Error).message}`, { cause });
      }
      if (!/^0x[0-9a-fA-F]{64}$/.test(text)) {
        throw usageError(`key file ${path} must hold one 0x-prefixed 32-byte hex private key`);
      }
      try {
        if ((statSync(path).mode & 0o077) !== 0) this.progress(`warning: key file ${path} is readable by other users (chmod 600 it)`);
      } catch {
        /* stat after a successful read: ignore */
      }
      const { provider } = await this.chain();
      return new Wallet(text, provider);
    })());
  }

  /** The device store of `--store` (one per context, closed by {@link close}). @throws CliError exit 1 when `--store` is missing */
  store(purpose: string): ChannelStore {
    const dir = this.options.store;
    if (!dir) throw usageError(`--store <dir> (or TRICKLE_STORE) is required to ${purpose}`);
    return (this.#store ??= fileChannelStore(dir));
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
    if (this.confirmations === 0) return;
    const { provider } = await this.chain();
    const until = Date.now() + this.timeoutMs;
    let last = -1;
    for (;;) {
      const head = await provider.getBlockNumber();
      const have = Math.max(0, head - receipt.blockNumber);
      if (have >= this.confirmations) return;
      if (have !== last) this.progress(`waiting for confirmations: ${have}/${this.confirmations} (block ${receipt.blockNumber}, head ${head})`);
      last = have;
      if (Date.now() > until) {
        throw new CliError(EXIT.NETWORK, 'TIMEOUT', `transaction ${receipt.hash} mined in block ${receipt.blockNumber} but not confirmed in time`, {
          hint: 'it may still confirm: check with `trickle show`; on a local chain pass --confirmations 0',
        });
      }
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }

  /** Release the provider and the store's open files. */
  async close(): Promise<void> {
    const chain = this.#chain;
    this.#chain = undefined;
    const store = this.#store;
    this.#store = undefined;
    await store?.close?.().catch(() => {});
    if (chain) await chain.then((c) => c.provider.destroy(), () => {});
  }
}
