/**
 * Connecting to a chain's JSON-RPC endpoint: one probe for the chain id (so ethers never starts its
 * network-detection retry loop, which logs to the console and never gives up), then a provider pinned to it.
 */
import { FetchRequest, JsonRpcProvider, Network, type Provider } from 'ethers';
import { CliError, EXIT } from './exit.js';

/** A provider and the chain id it is pinned to. */
export interface RpcConnection {
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
 * @throws CliError exit 5 when the endpoint cannot be reached or does not answer `eth_chainId`
 * @example
 * ```ts
 * const { provider, chainId } = await connectRpc('http://127.0.0.1:8545', 30_000);
 * ```
 */
export async function connectRpc(url: string, timeoutMs: number, pollingMs = 250): Promise<RpcConnection> {
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
    if (typeof body.result !== 'string') throw new Error(body.error?.message ?? 'no result');
    chainId = BigInt(body.result);
  } catch (cause) {
    throw new CliError(EXIT.NETWORK, 'INTERNAL', `cannot reach the chain at ${url}: ${(cause as Error).message ?? String(cause)}`, {
      cause,
      hint: 'check --rpc (or TRICKLE_RPC_URL) and that the node is running',
    });
  }
  const request = new FetchRequest(url);
  request.timeout = timeoutMs;
  const network = Network.from(chainId);
  const provider = new JsonRpcProvider(request, network, { staticNetwork: network, batchMaxCount: 1, cacheTimeout: -1, pollingInterval: pollingMs });
  return { url, chainId, provider };
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
