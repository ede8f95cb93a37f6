/**
 * Exit codes of the `trickle` command and the one error type its commands throw. Exit codes are API: scripts and
 * supervisors branch on them, so a code never changes meaning once released.
 */
import { TrickleError, type ErrorCode, type TrickleErrorOptions } from '@trickle/protocol/errors';

/** Exit codes, documented in `trickle --help` and the package README. */
export const EXIT = {
  /** Done. */
  OK: 0,
  /** Bad arguments or options, a missing option, an unreadable key file, or an invalid input file. */
  USAGE: 1,
  /** The adjudicator refused the transaction (a revert, decoded from its custom error). */
  REVERTED: 2,
  /** Nothing to do: already closed, nothing newer to challenge, nothing owed, deadline not reached… */
  NOTHING_TO_DO: 3,
  /** No such channel on-chain, or no (suitable) state in the store. */
  NOT_FOUND: 4,
  /** The chain's JSON-RPC endpoint failed or timed out. */
  NETWORK: 5,
} as const;

/** One of {@link EXIT}'s values. */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit-code table as printed at the end of `--help`. */
export const EXIT_CODES_HELP = `
Exit codes:
  0  ok
  1  usage error (bad arguments, missing option, unreadable key file, invalid input file)
  2  refused by the contract (the transaction reverted; the custom error is shown)
  3  nothing to do (already closed, nothing newer to challenge, deadline not reached, nothing owed)
  4  not found (no such channel on-chain, no state in the store)
  5  network / RPC failure (the chain's JSON-RPC endpoint failed or timed out)`;

/** Options of {@link CliError}. */
export interface CliErrorOptions extends TrickleErrorOptions {
  /** What the user should do next, one line ("run `trickle settle <id>`"). */
  hint?: string | undefined;
}

/**
 * A failure a command reports to its user: a {@link TrickleError} (stable `code`) with the process exit code and a
 * hint saying what to do.
 * @example
 * ```ts
 * throw new CliError(EXIT.NOTHING_TO_DO, 'STALE_VERSION', 'nothing newer to challenge', { hint: 'run `trickle settle`' });
 * ```
 */
export class CliError extends TrickleError {
  override readonly name = 'CliError';
  readonly exitCode: ExitCode;
  readonly hint: string | undefined;

  /**
   * @param exitCode - the process exit code
   * @param code - the closest stable Trickle error code
   * @param shortMessage - one line saying what is wrong
   * @param options - hint, details, cause
   */
  constructor(exitCode: ExitCode, code: ErrorCode, shortMessage: string, options: CliErrorOptions = {}) {
    super(code, shortMessage, options);
    this.exitCode = exitCode;
    this.hint = options.hint;
  }
}

/** A usage error (exit 1). */
export function usageError(message: string, hint?: string): CliError {
  return new CliError(EXIT.USAGE, 'INVALID_ARGUMENT', message, { hint });
}

/** Error codes of Node and ethers that mean the endpoint could not be reached or did not answer. */
const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'NETWORK_ERROR',
  'SERVER_ERROR',
  'TIMEOUT',
  'UNKNOWN_ERROR',
  'INSUFFICIENT_FUNDS',
  'NONCE_EXPIRED',
  'REPLACEMENT_UNDERPRICED',
  'TRANSACTION_REPLACED',
  'BAD_DATA',
]);

/**
 * Whether `e` (or anything in its `cause` chain) is a failure to talk to the JSON-RPC endpoint, or a transaction
 * the node itself refused before it reached the contract (no gas money, nonce clash).
 */
export function isNetworkFailure(e: unknown): boolean {
  const seen = new Set<unknown>();
  let cur: unknown = e;
  for (let depth = 0; depth < 8 && cur !== null && typeof cur === 'object' && !seen.has(cur); depth++) {
    seen.add(cur);
    const o = cur as { code?: unknown; details?: { ethersCode?: unknown }; cause?: unknown };
    if (typeof o.code === 'string' && NETWORK_CODES.has(o.code)) return true;
    if (typeof o.details?.ethersCode === 'string') return true;
    cur = o.cause;
  }
  return false;
}
