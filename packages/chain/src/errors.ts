/**
 * Decoding of contract reverts into {@link TrickleError}s with code `CHAIN_REVERTED`. Custom errors are decoded
 * from the compiled ABIs (adjudicator, OpenZeppelin libraries it uses, test tokens), never matched by string.
 */
import { ErrorFragment, Interface, isHexString, type Result } from 'ethers';
import { TrickleError } from '@trickle/protocol/errors';
import type { Hex } from '@trickle/protocol/types';
import * as artifacts from './generated/artifacts.js';

/** Details of a decoded revert, as carried in `TrickleError.details`. */
export interface ChainRevertDetails {
  /** Custom error name (e.g. `StaleVersion`), `Error` / `Panic` for the built-ins, or `unknown`. */
  readonly error: string;
  /** Positional arguments as decoded (bigints, checksummed addresses, hex strings). */
  readonly args: readonly unknown[];
  /** Arguments by parameter name. */
  readonly namedArgs: Readonly<Record<string, unknown>>;
  /** The raw revert data. */
  readonly data: Hex;
}

function collectErrors(): Interface {
  const seen = new Map<string, ErrorFragment>();
  for (const artifact of Object.values(artifacts)) {
    if (typeof artifact !== 'object' || artifact === null || !('abi' in artifact)) continue;
    for (const item of artifact.abi as readonly { type: string }[]) {
      if (item.type !== 'error') continue;
      const fragment = ErrorFragment.from(item);
      if (!seen.has(fragment.selector)) seen.set(fragment.selector, fragment);
    }
  }
  return new Interface([...seen.values()]);
}

/** Every custom error of every compiled contract, by selector. */
export const chainErrorsInterface: Interface = collectErrors();

const MAX_DEPTH = 6;

/**
 * The revert data carried by an error from ethers or a JSON-RPC node, wherever the layers put it.
 * @param e - anything caught around a call or transaction
 * @returns the hex revert data (possibly `0x`), or undefined when `e` carries none
 */
export function revertDataOf(e: unknown): Hex | undefined {
  const seen = new Set<unknown>();
  const visit = (v: unknown, depth: number): Hex | undefined => {
    if (v === null || typeof v !== 'object' || depth > MAX_DEPTH || seen.has(v)) return undefined;
    seen.add(v);
    const o = v as Record<string, unknown>;
    const data = o['data'];
    if (typeof data === 'string' && isHexString(data) && (data.length === 2 || data.length >= 10)) {
      return data.toLowerCase() as Hex;
    }
    for (const key of ['data', 'error', 'info', 'cause', 'revert']) {
      const found = visit(o[key], depth + 1);
      if (found !== undefined) return found;
    }
    return undefined;
  };
  return visit(e, 0);
}

function plain(v: unknown): unknown {
  if (v !== null && typeof v === 'object' && 'toArray' in v && typeof (v as Result).toArray === 'function') {
    return (v as Result).toArray().map(plain);
  }
  return v;
}

/**
 * Decode revert data against the compiled ABIs.
 * @param data - revert data
 * @returns the decoded error, or `undefined` when the selector is not known
 */
export function decodeRevertData(data: Hex): ChainRevertDetails | undefined {
  if (data.length < 10) return undefined;
  let parsed;
  try {
    parsed = chainErrorsInterface.parseError(data);
  } catch {
    return undefined;
  }
  if (parsed === null) return undefined;
  const args = parsed.args.toArray().map(plain);
  const namedArgs: Record<string, unknown> = {};
  parsed.fragment.inputs.forEach((input, i) => {
    namedArgs[input.name === '' ? String(i) : input.name] = args[i];
  });
  return { error: parsed.name, args, namedArgs, data };
}

/**
 * Turn anything thrown by a contract call or transaction into a {@link TrickleError}.
 *
 * - A revert becomes code `CHAIN_REVERTED` with {@link ChainRevertDetails} (`details.error` is the custom error's
 *   name, `details.args` its arguments); an undecodable one has `error: 'unknown'`.
 * - A TrickleError passes through unchanged; anything else becomes `INTERNAL` with the original as `cause`.
 * @param e - the caught value
 * @returns the error to throw
 * @example
 * ```ts
 * try { await adjudicator.challenge(signed) } catch (e) {
 *   const err = decodeChainError(e);
 *   if (err.details.error === 'StaleVersion') ...
 * }
 * ```
 */
export function decodeChainError(e: unknown): TrickleError {
  if (e instanceof TrickleError) return e;
  const data = revertDataOf(e);
  if (data !== undefined) {
    const decoded = decodeRevertData(data);
    if (decoded !== undefined) {
      const shown = decoded.args.map((a) => (typeof a === 'bigint' ? a.toString() : String(a))).join(', ');
      return new TrickleError('CHAIN_REVERTED', `${decoded.error}(${shown})`, {
        details: { ...decoded },
        cause: e,
      });
    }
    return new TrickleError('CHAIN_REVERTED', 'reverted without a known error', {
      details: { error: 'unknown', args: [], namedArgs: {}, data } satisfies ChainRevertDetails,
      cause: e,
    });
  }
  const code = (e as { code?: unknown } | null)?.code;
  if (code === 'CALL_EXCEPTION') {
    return new TrickleError('CHAIN_REVERTED', 'reverted without data', {
      details: { error: 'unknown', args: [], namedArgs: {}, data: '0x' as Hex } satisfies ChainRevertDetails,
      cause: e,
    });
  }
  const message = e instanceof Error ? ((e as { shortMessage?: string }).shortMessage ?? e.message) : String(e);
  return new TrickleError('INTERNAL', `chain request failed: ${message}`, {
    details: { ethersCode: typeof code === 'string' ? code : undefined },
    cause: e,
  });
}

/**
 * Whether `e` is a decoded revert with the given custom error name.
 * @example
 * ```ts
 * if (isChainRevert(err, 'ChallengePeriodOver')) ...
 * ```
 */
export function isChainRevert(e: unknown, errorName?: string): e is TrickleError {
  return (
    e instanceof TrickleError &&
    e.code === 'CHAIN_REVERTED' &&
    (errorName === undefined || (e.details as Partial<ChainRevertDetails>).error === errorName)
  );
}
