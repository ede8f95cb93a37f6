/**
 * Connecting to a chain's JSON-RPC endpoint through `@trickle/chain/rpc`'s `connectChain`: one probe for the chain id
 * (so ethers never starts its network-detection retry loop, which logs to the console and never gives up), then a
 * provider pinned to it, without batching or a response cache.
 */
import type { JsonRpcProvider, Provider } from 'ethers';
import { connectChain, redactUrl } from '@trickle/chain/rpc';
import { isTrickleError } from '@trickle/protocol/errors';
import { CliError, EXIT } from './exit.js';

/** A provider and the chain id it is pinned to. */
export interface RpcConnection {
  /** The endpoint as it may be shown: a password in it reads `***` (messages and `--json` output carry this). */
  readonly url: string;
  readonly chainId: bigint;
  readonly provider: JsonRpcProvider;
}

/**
 * Probe `url` for its chain id and return a provider pinned to it.
 * @param url - http(s) JSON-RPC endpoint
 * @param timeoutMs - per-request timeout
 * @param pollingMs - how often the provider polls for receipts
 * @returns the connection
 * @throws CliError exit 1 for a URL that is no http(s) URL (or sends a password in clear), exit 5 when the endpoint
 *   cannot be reached or does not answer `eth_chainId`
 * @example
 * ```ts
 * const { provider, chainId } = await connectRpc('http://127.0.0.1:8545', 30_000);
 * ```
 */
export async function connectRpc(url: string, timeoutMs: number, pollingMs = 250): Promise<RpcConnection> {
  // No URL, or not one a JSON-RPC endpoint has: the user's mistake (exit 1), not a node that is down (exit 5, retried).
  let protocol: string | undefined;
  try {
    protocol = new URL(url).protocol;
  } catch {
    protocol = undefined;
  }
  if (protocol !== 'http:' && protocol !== 'https:')
    throw new CliError(EXIT.USAGE, 'INVALID_ARGUMENT', `--rpc must be an http(s) URL, got '${redactUrl(url)}'`, {
      hint: 'e.g. --rpc http://127.0.0.1:8545 (or TRICKLE_RPC_URL)',
    });
  try {
    const { chainId, provider } = await connectChain(url, { timeoutMs, pollingIntervalMs: pollingMs });
    return { url: redactUrl(url), chainId, provider };
  } catch (cause) {
    // A user name or password over plain http to a host that is not loopback: refused before anything is sent.
    if (isTrickleError(cause, 'INVALID_ARGUMENT'))
      throw new CliError(EXIT.USAGE, 'INVALID_ARGUMENT', `--rpc: ${cause.shortMessage}`, { cause });
    const reason = isTrickleError(cause) ? String(cause.details['reason'] ?? cause.shortMessage) : String(cause);
    throw new CliError(EXIT.NETWORK, 'INTERNAL', `cannot reach the chain at ${redactUrl(url)}: ${reason}`, {
      cause,
      hint: 'check --rpc (or TRICKLE_RPC_URL) and that the node is running',
    });
  }
}

/**
 * The chain's clock: the latest block's timestamp (what the adjudicator compares deadlines with), in seconds.
 * @throws whatever the provider throws
 */
export async function chainTime(provider: Provider): Promise<bigint> {
  const block = await provider.getBlock('latest');
  if (block === null) throw new CliError(EXIT.NETWORK, 'INTERNAL', 'the node returned no latest block');
  return BigInt(block.timestamp);
}
