/**
 * Connecting to any EVM chain's JSON-RPC endpoint in a way that survives repeated transactions: a provider pinned to
 * one chain id (no network-detection retry loop), no request batching (local nodes stall on batches) and no
 * response cache (ethers' default 250 ms cache returns a stale pending nonce to the second transaction sent within
 * that window: "nonce has already been used"), and wallets that send one transaction at a time.
 */
import { FetchRequest, JsonRpcProvider, Network } from 'ethers';
import { TrickleError } from '@trickle/protocol/errors';
import type { Hex } from '@trickle/protocol/types';
import { SerialWallet } from './serialWallet.js';

/** Options of {@link connectChain}; every default is written out here. */
export interface ConnectChainOptions {
  /**
   * The chain id the caller expects (number or bigint). When given, a different chain id at the endpoint is
   * refused; a deployment or a payment on the wrong chain is the mistake this guards against.
   */
  readonly expectChainId?: number | bigint | undefined;
  /** Timeout of each JSON-RPC request, in milliseconds (default 30,000). */
  readonly timeoutMs?: number | undefined;
  /** How often receipts and blocks are polled, in milliseconds (default 250; 50 suits a local chain). */
  readonly pollingIntervalMs?: number | undefined;
}

/** Defaults of {@link ConnectChainOptions}. */
export const CONNECT_CHAIN_DEFAULTS = { timeoutMs: 30_000, pollingIntervalMs: 250 } as const;

/** An endpoint reached: its chain id and a provider pinned to it. */
export interface ChainConnection {
  readonly url: string;
  readonly chainId: bigint;
  readonly provider: JsonRpcProvider;
  /**
   * A wallet for `privateKey` on this provider; its transactions are sent one at a time, so concurrent callers
   * never read the same pending nonce.
   */
  wallet(privateKey: Hex | string): SerialWallet;
}

/**
 * An ethers provider for a known chain: static network, `batchMaxCount: 1`, no cache. Use it when the chain id
 * is already known; {@link connectChain} asks the endpoint.
 * @param url - http(s) JSON-RPC endpoint
 * @param chainId - the endpoint's chain id (number or bigint)
 * @param opts - timeout and polling interval
 * @returns the provider (call `destroy()` when done)
 * @throws TrickleError `INVALID_ARGUMENT` for a chain id that is not a positive integer
 * @example
 * ```ts
 * const provider = jsonRpcProvider('http://127.0.0.1:8545', 31337);
 * ```
 */
export function jsonRpcProvider(
  url: string,
  chainId: number | bigint,
  opts: Omit<ConnectChainOptions, 'expectChainId'> = {},
): JsonRpcProvider {
  const id = chainIdOf(chainId, 'chainId');
  const request = new FetchRequest(url);
  request.timeout = opts.timeoutMs ?? CONNECT_CHAIN_DEFAULTS.timeoutMs;
  const network = Network.from(id);
  return new JsonRpcProvider(request, network, {
    staticNetwork: network,
    batchMaxCount: 1,
    cacheTimeout: -1,
    pollingInterval: opts.pollingIntervalMs ?? CONNECT_CHAIN_DEFAULTS.pollingIntervalMs,
  });
}

/**
 * Ask `url` for its chain id (one `eth_chainId` request), check it against `expectChainId`, and return a provider
 * pinned to it.
 * @param url - http(s) JSON-RPC endpoint
 * @param opts - expected chain id, timeout, polling interval
 * @returns the connection
 * @throws TrickleError `DISCONNECTED` when the endpoint cannot be reached or gives no chain id (`details.url`, the
 *   network error as `cause`); `INVALID_ARGUMENT` when its chain id differs from `expectChainId` (`details.expected`,
 *   `details.actual`)
 * @example
 * ```ts
 * const chain = await connectChain('http://127.0.0.1:8545', { expectChainId: 31337 });
 * const adjudicator = await deployAdjudicator(chain.wallet(process.env.KEY!));
 * const second = await deployAdjudicator(chain.wallet(process.env.KEY!)); // same wallet, next nonce
 * chain.provider.destroy();
 * ```
 */
export async function connectChain(url: string, opts: ConnectChainOptions = {}): Promise<ChainConnection> {
  const timeoutMs = opts.timeoutMs ?? CONNECT_CHAIN_DEFAULTS.timeoutMs;
  const expected = opts.expectChainId === undefined ? undefined : chainIdOf(opts.expectChainId, 'expectChainId');
  let chainId: bigint;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_chainId', params: [] }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const body = (await res.json()) as { result?: unknown; error?: { message?: string } };
    if (typeof body.result !== 'string') throw new Error(body.error?.message ?? 'no eth_chainId result');
    chainId = BigInt(body.result);
  } catch (cause) {
    // The URL's password (and the error text that repeats the URL) is not printed: `***` stands for it.
    const shown = redactUrl(url);
    const reason = causeCode(cause).split(url).join(shown);
    throw new TrickleError('DISCONNECTED', `cannot reach the chain at ${shown} (${reason})`, {
      details: { url: shown, reason },
      cause,
    });
  }
  if (expected !== undefined && expected !== chainId) {
    const shown = redactUrl(url);
    throw new TrickleError(
      'INVALID_ARGUMENT',
      `the chain at ${shown} has chain id ${chainId}, not the expected ${expected}`,
      {
        details: { url: shown, expected, actual: chainId },
      },
    );
  }
  const provider = jsonRpcProvider(url, chainId, opts);
  const wallets = new Map<string, SerialWallet>();
  return {
    url,
    chainId,
    provider,
    wallet(privateKey) {
      let w = wallets.get(privateKey);
      if (w === undefined) wallets.set(privateKey, (w = new SerialWallet(privateKey, provider)));
      return w;
    },
  };
}

/**
 * `url` as it may be printed: the password of its user info replaced by `***` (`http://user:***@host/`).
 * @param url - an endpoint URL (anything that does not parse as one is returned as given)
 * @returns the URL without its password
 * @example
 * ```ts
 * redactUrl('https://me:secret@rpc.example/'); // 'https://me:***@rpc.example/'
 * ```
 */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  if (parsed.password === '') return url;
  parsed.password = '***';
  return parsed.href;
}

function chainIdOf(v: number | bigint, name: string): bigint {
  if ((typeof v === 'number' && Number.isSafeInteger(v) && v > 0) || (typeof v === 'bigint' && v > 0n))
    return BigInt(v);
  throw new TrickleError('INVALID_ARGUMENT', `${name} must be a positive integer (number or bigint)`, {
    details: { [name]: String(v), type: typeof v },
  });
}

/** The most telling code in an error's cause chain (ECONNREFUSED, ENOTFOUND, …), else the innermost message. */
function causeCode(e: unknown): string {
  let cur: unknown = e;
  let message = e instanceof Error ? e.message : String(e);
  for (let i = 0; i < 6 && cur !== null && typeof cur === 'object'; i++) {
    const c = cur as { code?: unknown; cause?: unknown; name?: unknown; message?: unknown };
    if (typeof c.code === 'string') return c.code;
    if (c.name === 'TimeoutError') return 'TIMEOUT';
    if (typeof c.message === 'string' && c.message !== '') message = c.message;
    cur = c.cause;
  }
  return message;
}
