import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type ServerOptions,
  type ServerResponse,
} from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { selectWireProtocol, WIRE_PROTOCOLS, WIRE_PROTOCOLS_HEADER } from '@trickle/protocol/codec';
import type { Logger } from 'pino';
import type { HubMetrics } from './metrics.js';
import type { HubLimits } from './options.js';

/** The hub's network edge: one HTTP server with the WebSocket endpoint at `/`, `/metrics` and `/health`. */
export interface Transport {
  readonly port: number;
  /** `ws` or `wss` (with TLS). */
  readonly scheme: 'ws' | 'wss';
  /** Stop accepting new connections (the port closes) and keep serving the open ones. */
  stopAccepting(): void;
  /**
   * Stop accepting, close open sockets with 1001 and give them up to `graceMs` to finish the closing handshake (so
   * frames queued before the close frame reach the peer), then drop the rest and close the server.
   */
  close(graceMs?: number): Promise<void>;
}

/** A certificate chain and its private key (PEM), to serve `https://` and `wss://`. */
export interface TlsOptions {
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
}

export interface TransportOptions {
  readonly port: number;
  readonly host: string;
  readonly limits: HubLimits;
  readonly metrics: HubMetrics;
  readonly logger: Logger;
  /** A WebSocket passed the connection limit. */
  readonly onConnection: (ws: WebSocket) => void;
  /** The body of `/health`. */
  readonly health: () => Record<string, unknown>;
  /** Serve TLS (`https://`, `wss://`) with this certificate. */
  readonly tls?: TlsOptions | undefined;
  /** Other HTTP routes (the dashboard): return true when the request was handled. */
  readonly onRequest?: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined;
}

/**
 * Listen for devices and operators. Connections beyond `maxConnections` are upgraded and closed with 1013 (try
 * again later), so well-behaved clients back off; frames above `maxFrameBytes` close with 1009 (ws `maxPayload`).
 */
export async function startTransport(o: TransportOptions): Promise<Transport> {
  const serve = (opts: ServerOptions, listener: RequestListener) =>
    o.tls ? createTlsServer({ ...opts, cert: o.tls.cert, key: o.tls.key }, listener) : createServer(opts, listener);
  // A request (the WebSocket upgrade included) must have sent its headers within the handshake timeout; Node
  // checks every connectionsCheckingInterval, so a peer dribbling bytes is dropped within about 1.25× of it.
  const hs = o.limits.handshakeTimeoutMs;
  const timeouts = {
    headersTimeout: hs,
    requestTimeout: hs,
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(hs / 4))),
  };
  const server = serve(timeouts, (req: IncomingMessage, res: ServerResponse) => {
    if (o.onRequest?.(req, res)) return;
    if (req.method === 'GET' && req.url === '/metrics') {
      o.metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': o.metrics.registry.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
      return;
    }
    if (req.method === 'GET' && req.url === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(o.health()));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: o.limits.maxFrameBytes,
    perMessageDeflate: false,
    clientTracking: true,
    // The wire version: the newest the client offered that this hub speaks; none offered is version 1 (no answer).
    handleProtocols: (offered) => selectWireProtocol(offered) ?? false,
  });
  let connections = 0;
  server.on('upgrade', (req, socket, head) => {
    if (selectWireProtocol(req.headers['sec-websocket-protocol']) === null) {
      // The client offered only wire versions this hub does not speak: no connection, and the versions it does.
      o.metrics.disconnects.inc({ reason: 'unsupported-protocol' });
      const body = `this hub speaks ${WIRE_PROTOCOLS.join(', ')}\n`;
      socket.end(
        'HTTP/1.1 426 Upgrade Required\r\n' +
          `${WIRE_PROTOCOLS_HEADER}: ${WIRE_PROTOCOLS.join(', ')}\r\n` +
          `content-type: text/plain\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n` +
          body,
      );
      return;
    }
    if (connections >= o.limits.maxConnections) {
      wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        o.metrics.disconnects.inc({ reason: 'server-full' });
        ws.close(1013, 'server full, try again later');
      });
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      connections++;
      ws.on('close', () => connections--);
      ws.on('error', () => {});
      o.onConnection(ws);
    });
  });
  wss.on('error', (e) => o.logger.warn({ err: e }, 'websocket server error'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  let closed: Promise<void> | undefined;
  const stopAccepting = () => {
    closed ??= new Promise<void>((r) => server.close(() => r()));
  };
  return {
    port: (server.address() as AddressInfo).port,
    scheme: o.tls ? 'wss' : 'ws',
    stopAccepting,
    async close(graceMs = 0) {
      stopAccepting();
      // Sockets still open (not yet authenticated, or not closed by their session) are told the server is going away.
      for (const ws of wss.clients) if (ws.readyState === ws.OPEN) ws.close(1001, 'server shutting down');
      const deadline = Date.now() + graceMs;
      while (wss.clients.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      for (const ws of wss.clients) ws.terminate();
      server.closeAllConnections();
      await closed;
    },
  };
}
