/**
 * Connecting to any EVM chain's JSON-RPC endpoint in a way that survives repeated transactions: a provider pinned to
 * one chain id (no network-detection retry loop), no request batching (local nodes stall on batches) and no
 * response cache (ethers' default 250 ms cache returns a stale pending nonce to the second transaction sent within
 * that window: "nonce has already been used"), and wallets that send one transaction at a time.
 */
import {
  encodeBase64,
  FetchRequest,
  JsonRpcProvider,
  Network,
  toUtf8Bytes,
  type JsonRpcApiProviderOptions,
  type JsonRpcPayload,
  type JsonRpcResult,
} from 'ethers';
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
 * @throws TrickleError `INVALID_ARGUMENT` for a chain id that is not a positive integer, or a URL with a user name or
 *   password over plain http to a host that is not loopback (`https://user:secret@host/` sends them as basic auth)
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
  const { href, user } = endpoint(url);
  const request = new FetchRequest(href);
  if (user) {
    request.setCredentials(user.name, user.password);
    request.allowInsecureAuthentication = true; // endpoint() refused plain http to anything but loopback
  }
  request.timeout = opts.timeoutMs ?? CONNECT_CHAIN_DEFAULTS.timeoutMs;
  const network = Network.from(id);
  return new RedactingProvider(
    request,
    network,
    {
      staticNetwork: network,
      batchMaxCount: 1,
      cacheTimeout: -1,
      pollingInterval: opts.pollingIntervalMs ?? CONNECT_CHAIN_DEFAULTS.pollingIntervalMs,
    },
    { secret: href, shown: redactUrl(href) },
  );
}

/**
 * A provider whose errors name the endpoint as {@link redactUrl} shows it. ethers writes the request URL into the
 * message and `info.requestUrl` of an error (a 5xx, a 401, a rate limit): the hub logged it at every failed chain poll,
 * and a hosted endpoint carries its API key in that URL's path (`https://eth-mainnet.g.alchemy.com/v2/<key>`).
 */
class RedactingProvider extends JsonRpcProvider {
  readonly #url: { readonly secret: string; readonly shown: string };

  constructor(
    request: FetchRequest,
    network: Network,
    options: JsonRpcApiProviderOptions,
    url: { readonly secret: string; readonly shown: string },
  ) {
    super(request, network, options);
    this.#url = url;
  }

  override async _send(payload: JsonRpcPayload | JsonRpcPayload[]): Promise<JsonRpcResult[]> {
    try {
      return await super._send(payload);
    } catch (e) {
      throw redactError(e, this.#url.secret, this.#url.shown);
    }
  }
}

/** `e` (changed in place: its code, class and the rest stay what ethers made) with `secret` written as `shown`. */
function redactError(e: unknown, secret: string, shown: string): unknown {
  if (secret === shown || e === null || typeof e !== 'object') return e;
  const scrub = (v: unknown) => (typeof v === 'string' ? v.split(secret).join(shown) : v);
  const err = e as { message?: unknown; stack?: unknown; info?: unknown };
  try {
    err.message = scrub(err.message);
    err.stack = scrub(err.stack);
    if (err.info !== null && typeof err.info === 'object') {
      const info = err.info as Record<string, unknown>;
      for (const k of Object.keys(info)) info[k] = scrub(info[k]);
    }
  } catch {
    // a property that cannot be written: the error goes as it is
  }
  return e;
}

/**
 * Ask `url` for its chain id (one `eth_chainId` request), check it against `expectChainId`, and return a provider
 * pinned to it.
 * @param url - http(s) JSON-RPC endpoint
 * @param opts - expected chain id, timeout, polling interval
 * @returns the connection
 * @throws TrickleError `DISCONNECTED` when the endpoint cannot be reached or gives no chain id (`details.url`, the
 *   network error as `cause`); `INVALID_ARGUMENT` when its chain id differs from `expectChainId` (`details.expected`,
 *   `details.actual`), or for a user name or password over plain http to a host that is not loopback (a URL's user
 *   info is sent as basic auth)
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
  const { href, user } = endpoint(url);
  let chainId: bigint;
  try {
    const res = await fetch(href, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(user && { authorization: `Basic ${encodeBase64(toUtf8Bytes(`${user.name}:${user.password}`))}` }),
      },
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
    const reason = causeCode(cause).split(url).join(shown).split(href).join(shown);
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
 * `url` as it may be printed: the password of its user info replaced by `***` (`http://user:***@host/`), and so are its
 * path and query past `/` — hosted endpoints take their API key there (`https://eth-mainnet.g.alchemy.com/v2/<key>`,
 * `https://mainnet.infura.io/v3/<key>`, `?apikey=`). Scheme, host and port are kept: they say which endpoint it is.
 * @param url - an endpoint URL (anything that does not parse as one is returned as given)
 * @returns the URL without its password, path or query
 * @example
 * ```ts
 * redactUrl('https://me:secret@rpc.example/'); // 'https://me:***@rpc.example/'
 * redactUrl('https://rpc.example/v3/key'); // 'https://rpc.example/***'
 * ```
 */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  const path = parsed.pathname !== '/' && parsed.pathname !== '';
  if (parsed.password === '' && !path && parsed.search === '' && parsed.hash === '') return url;
  if (parsed.password !== '') parsed.password = '***';
  if (path || parsed.search !== '' || parsed.hash !== '') {
    parsed.pathname = '/***';
    parsed.search = '';
    parsed.hash = '';
  }
  return parsed.href;
}

/**
 * `url` without its user info, and that user info (for an `Authorization: Basic` header: `fetch` refuses a URL that
 * carries it). A password is not sent in clear: with user info, plain http is refused unless the host is loopback.
 */
function endpoint(url: string): { href: string; user?: { name: string; password: string } } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { href: url }; // fetch names what is wrong with it
  }
  if (parsed.username === '' && parsed.password === '') return { href: url };
  const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(parsed.hostname);
  if (parsed.protocol !== 'https:' && !loopback)
    throw new TrickleError(
      'INVALID_ARGUMENT',
      `${redactUrl(url)}: a user name or password goes only over https (or to a loopback host)`,
      { details: { url: redactUrl(url) } },
    );
  const user = { name: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) };
  parsed.username = '';
  parsed.password = '';
  return { href: parsed.href, user };
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
