import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Logger } from 'pino';
import type { HubMetrics } from './metrics.js';
import type { HubLimits } from './options.js';

/** The hub's network edge: one HTTP server with the WebSocket endpoint at `/`, `/metrics` and `/health`. */
export interface Transport {
  readonly port: number;
  /** Stop accepting, drop every socket, close the server. */
  close(): Promise<void>;
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
}

/**
 * Listen for devices and operators. Connections beyond `maxConnections` are upgraded and closed with 1013 (try
 * again later), so well-behaved clients back off; frames above `maxFrameBytes` close with 1009 (ws `maxPayload`).
 */
export async function startTransport(o: TransportOptions): Promise<Transport> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
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
  const wss = new WebSocketServer({ noServer: true, maxPayload: o.limits.maxFrameBytes, perMessageDeflate: false, clientTracking: true });
  let connections = 0;
  server.on('upgrade', (req, socket, head) => {
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
  return {
    port: (server.address() as AddressInfo).port,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
