import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A JSON-RPC relay on loopback in front of the node at `target`, for tests of a node that misbehaves. Each request's
 * body goes to `intercept` first: it answers the request itself (and returns undefined), or returns the body to
 * forward (as it came, or rewritten); the node's answer is piped back.
 */
export function rpcRelay(
  target: string,
  intercept: (body: Buffer, res: ServerResponse, req: IncomingMessage) => Buffer | undefined,
): Promise<{ url: string; server: Server }> {
  const upstream = new URL(target);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = intercept(Buffer.concat(chunks), res, req);
      if (body === undefined) return;
      const up = request(
        {
          host: upstream.hostname,
          port: upstream.port,
          path: upstream.pathname,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
        },
        (r) => {
          res.writeHead(r.statusCode ?? 502, { 'content-type': 'application/json' });
          r.pipe(res);
        },
      );
      up.on('error', () => res.writeHead(502).end());
      up.end(body);
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server }),
    ),
  );
}

/**
 * A relay in front of `target` whose log index lags its state: `eth_getLogs` over a range holding `state.block` is
 * answered with no logs, `state.times` times (counted in `state.hidden`); everything else is forwarded.
 */
export async function logHidingRelay(target: string): Promise<{
  url: string;
  state: { block?: number; times: number; hidden: number };
  server: Server;
}> {
  const state: { block?: number; times: number; hidden: number } = { times: 0, hidden: 0 };
  const relay = await rpcRelay(target, (body, res) => {
    const msg = JSON.parse(body.toString('utf8')) as { id: unknown; method: string; params: unknown[] };
    if (msg.method !== 'eth_getLogs' || state.block === undefined || state.hidden >= state.times) return body;
    const f = msg.params[0] as { fromBlock: string; toBlock: string };
    if (Number(BigInt(f.fromBlock)) > state.block || Number(BigInt(f.toBlock)) < state.block) return body;
    state.hidden++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ jsonrpc: '2.0', id: msg.id, result: [] }));
    return undefined;
  });
  return { ...relay, state };
}
