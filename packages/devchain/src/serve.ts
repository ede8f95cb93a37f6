/**
 * A JSON-RPC-over-HTTP server around the in-process chain (what the `trickle-chain` bin runs). Plain HTTP POST,
 * single and batch requests, permissive CORS for local dashboards; listens on loopback unless told otherwise.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { TrickleError } from '@trickle/protocol/errors';
import { rpcErrorOf } from './internal/eip1193Provider.js';
import { startLocalChain, type LocalChain, type LocalChainOptions } from './localChain.js';

/** Options of {@link serveChain}. */
export interface ServeChainOptions extends LocalChainOptions {
  /** Interface to bind (default `127.0.0.1`). */
  readonly host?: string | undefined;
  /** Port (default 8545; 0 picks a free one). */
  readonly port?: number | undefined;
  /** Largest request body accepted (default 16 MiB: a contract deployment is far below). */
  readonly maxBodyBytes?: number | undefined;
}

/** A chain being served. */
export interface ServedChain {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly chain: LocalChain;
  /** Stop listening and close the chain. */
  close(): Promise<void>;
}

interface RpcRequest {
  jsonrpc?: unknown;
  id?: unknown;
  method?: unknown;
  params?: unknown;
}

async function handleOne(chain: LocalChain, req: RpcRequest): Promise<object> {
  const id = req.id ?? null;
  if (typeof req.method !== 'string' || (req.params !== undefined && !Array.isArray(req.params))) {
    return { jsonrpc: '2.0', id, error: { code: -32600, message: 'invalid request' } };
  }
  try {
    const result = await chain.eip1193.request({
      method: req.method,
      params: (req.params as unknown[] | undefined) ?? [],
    });
    return { jsonrpc: '2.0', id, result: result ?? null };
  } catch (e) {
    return { jsonrpc: '2.0', id, error: rpcErrorOf(e) };
  }
}

function readBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        resolve(undefined);
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'access-control-allow-origin': '*',
  });
  res.end(text);
}

/**
 * Start an in-process chain and serve it over HTTP JSON-RPC.
 * @param opts - chain options plus host/port
 * @returns the URL, the chain and `close`
 * @throws TrickleError `INVALID_ARGUMENT` for a bad port; the listen error (e.g. `EADDRINUSE`) as `cause`
 * @example
 * ```ts
 * const served = await serveChain({ port: 0 });
 * const provider = new JsonRpcProvider(served.url, undefined, { batchMaxCount: 1, staticNetwork: true });
 * ```
 */
export async function serveChain(opts: ServeChainOptions = {}): Promise<ServedChain> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 8545;
  const maxBodyBytes = opts.maxBodyBytes ?? 16 * 1024 * 1024;
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new TrickleError('INVALID_ARGUMENT', 'port must be in [0, 65535]', { details: { port } });
  const chain = await startLocalChain(opts);

  const server = createServer((req, res) => {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'access-control-allow-origin': '*',
        'access-control-allow-methods': 'POST, OPTIONS',
        'access-control-allow-headers': 'content-type',
      });
      res.end();
      return;
    }
    if (req.method !== 'POST') {
      reply(res, 405, { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'use POST' } });
      return;
    }
    void (async () => {
      const body = await readBody(req, maxBodyBytes);
      if (body === undefined) {
        reply(res, 413, { jsonrpc: '2.0', id: null, error: { code: -32600, message: 'request too large' } });
        return;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        reply(res, 200, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } });
        return;
      }
      if (Array.isArray(parsed)) {
        // Sequentially: transactions in a batch must keep their order.
        const out: object[] = [];
        for (const r of parsed) out.push(await handleOne(chain, (r ?? {}) as RpcRequest));
        reply(res, 200, out);
      } else {
        reply(res, 200, await handleOne(chain, (parsed ?? {}) as RpcRequest));
      }
    })().catch((e: unknown) => {
      if (!res.headersSent) reply(res, 500, { jsonrpc: '2.0', id: null, error: rpcErrorOf(e) });
    });
  });
  server.keepAliveTimeout = 5_000;

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (cause) {
    await chain.close();
    const reason = (cause as { code?: string }).code ?? String(cause);
    throw new TrickleError('INVALID_ARGUMENT', `cannot listen on ${host}:${port} (${reason})`, {
      details: { host, port, reason },
      cause,
    });
  }
  const actual = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${actual}`,
    host,
    port: actual,
    chain,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await chain.close();
    },
  };
}
