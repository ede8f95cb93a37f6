/**
 * The watchtower's HTTP API (loopback by default):
 * - `POST /states` — body: a channel record `{ params, latest }` (or `{ record }`, `{ params, signed }`); the state
 *   authenticates itself (both signatures are verified). 200 `{ ok, status: 'accepted' | 'duplicate', channelId,
 *   version }` once durable; errors are `{ ok: false, error: { code, message } }` with HTTP 400 (MALFORMED,
 *   BAD_SIGNATURE, WRONG_CHANNEL, INVALID_ARGUMENT), 409 (STALE_VERSION, EQUIVOCATION), 413 (FRAME_TOO_LARGE),
 *   429 (LIMIT_EXCEEDED), 500 (STORE_FAILURE, INTERNAL).
 * - `GET /health` — liveness and where the follower is.
 * - `GET /channels` — every watched channel with its dispute view.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { MalformedError, TrickleError, isTrickleError, type ErrorCode } from '@trickle/protocol/errors';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import { parseSubmission, type StateSubmission } from './submission.js';
import type { WatchLogger } from './log.js';

/** HTTP status of each error code the API returns. */
export const API_STATUS: Partial<Record<ErrorCode, number>> = {
  MALFORMED: 400,
  BAD_SIGNATURE: 400,
  WRONG_CHANNEL: 400,
  INVALID_ARGUMENT: 400,
  STALE_VERSION: 409,
  EQUIVOCATION: 409,
  FRAME_TOO_LARGE: 413,
  LIMIT_EXCEEDED: 429,
  STORE_FAILURE: 500,
  INTERNAL: 500,
};

/** What the API serves. */
export interface ApiHandlers {
  addState(s: StateSubmission, source: 'api'): Promise<Record<string, unknown>>;
  health(): Record<string, unknown>;
  channels(): Record<string, unknown>[];
}

/** A listening API. */
export interface ApiServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

function reply(res: ServerResponse, status: number, body: Record<string, unknown>): void {
  const text = stringifyJson(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function replyError(res: ServerResponse, e: unknown): void {
  const err = isTrickleError(e) ? e : new TrickleError('INTERNAL', 'internal error');
  reply(res, API_STATUS[err.code] ?? 500, { ok: false, error: { code: err.code, message: err.shortMessage } });
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new TrickleError('FRAME_TOO_LARGE', `body larger than ${maxBytes} bytes`);
    // Refused bodies are not buffered; Node discards the rest after the reply (bounded by the request timeout).
    if (Number(req.headers['content-length'] ?? '0') > maxBytes) return reject(tooLarge());
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        chunks.length = 0;
        reject(tooLarge());
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/**
 * Start the API.
 * @param o - port (0: any free one), host, body limit, handlers, logger
 * @returns the URL and `close`
 */
export async function startApi(o: {
  port: number;
  host: string;
  maxBodyBytes: number;
  handlers: ApiHandlers;
  log: WatchLogger;
}): Promise<ApiServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const route = async (): Promise<void> => {
      if (path === '/health' || path === '/channels') {
        if (req.method !== 'GET')
          return reply(res, 405, { ok: false, error: { code: 'INVALID_ARGUMENT', message: 'use GET' } });
        return reply(
          res,
          200,
          path === '/health' ? { ok: true, ...o.handlers.health() } : { ok: true, channels: o.handlers.channels() },
        );
      }
      if (path === '/states') {
        if (req.method !== 'POST')
          return reply(res, 405, { ok: false, error: { code: 'INVALID_ARGUMENT', message: 'use POST' } });
        const text = await readBody(req, o.maxBodyBytes);
        let body: unknown;
        try {
          body = parseJson(text);
        } catch {
          throw new MalformedError('body is not JSON');
        }
        return reply(res, 200, { ok: true, ...(await o.handlers.addState(parseSubmission(body), 'api')) });
      }
      return reply(res, 404, {
        ok: false,
        error: { code: 'INVALID_ARGUMENT', message: `no route ${req.method} ${path}` },
      });
    };
    route().catch((e: unknown) => {
      if (!isTrickleError(e) || (API_STATUS[e.code] ?? 500) >= 500) o.log('error', 'api-error', { path, err: e });
      if (!res.headersSent) replyError(res, e);
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    // The address taken, not this machine's, or a privileged port: the operator's choice to change (not "retry").
    const refused = (e: NodeJS.ErrnoException) =>
      reject(
        new TrickleError('INVALID_ARGUMENT', `cannot listen on ${o.host}:${o.port} (${e.code ?? e.message})`, {
          details: { host: o.host, port: o.port, reason: e.code },
          cause: e,
        }),
      );
    server.once('error', refused);
    server.listen(o.port, o.host, () => {
      server.off('error', refused);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  return {
    url: `http://${host}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
