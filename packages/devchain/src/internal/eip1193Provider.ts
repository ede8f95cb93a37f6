import { JsonRpcApiProvider, Network, type JsonRpcError, type JsonRpcPayload, type JsonRpcResult } from 'ethers';

/** An EIP-1193 provider (what Hardhat/EDR exposes in process). */
export interface Eip1193 {
  request(args: { method: string; params?: unknown[] | undefined }): Promise<unknown>;
}

/** The JSON-RPC error object a failed EIP-1193 request maps to (code, message and revert data kept). */
export function rpcErrorOf(e: unknown): { code: number; message: string; data?: unknown } {
  const err = e as { code?: unknown; message?: unknown; data?: unknown };
  const code = typeof err?.code === 'number' ? err.code : -32603;
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return err?.data === undefined ? { code, message } : { code, message, data: err.data };
}

/**
 * An ethers provider over an in-process EIP-1193 provider: no HTTP, no batching, no caching (time travel must be
 * visible at once), fixed network.
 */
export class Eip1193JsonRpcProvider extends JsonRpcApiProvider {
  readonly #inner: Eip1193;

  constructor(inner: Eip1193, chainId: bigint) {
    const network = Network.from(chainId);
    super(network, { staticNetwork: network, batchMaxCount: 1, cacheTimeout: -1, pollingInterval: 20 });
    this.#inner = inner;
  }

  override async _send(payload: JsonRpcPayload | JsonRpcPayload[]): Promise<(JsonRpcResult | JsonRpcError)[]> {
    const list = Array.isArray(payload) ? payload : [payload];
    return Promise.all(
      list.map(async (p): Promise<JsonRpcResult | JsonRpcError> => {
        try {
          return { id: p.id, result: await this.#inner.request({ method: p.method, params: p.params as unknown[] }) };
        } catch (e) {
          return { id: p.id, error: rpcErrorOf(e) };
        }
      }),
    );
  }
}
