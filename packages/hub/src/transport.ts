import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type ServerOptions,
  type ServerResponse,
} from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type ServerOptions as WsServerOptions, type WebSocket } from 'ws';
import { selectWireProtocol, WIRE_PROTOCOLS, WIRE_PROTOCOLS_HEADER } from '@trickle/protocol/codec';
import type { Logger } from 'pino';
import { connectionsOverFdLimit } from './fd-limit.js';
import type { HubMetrics } from './metrics.js';
import type { HubLimits } from './options.js';
import { TokenBuckets } from './token-buckets.js';

/**
 * The hub's network edge: one HTTP server with the WebSocket endpoint at {@link WS_PATH} (`/`), `/metrics` and
 * `/health`.
 */
export interface Transport {
  readonly port: number;
  /** `ws` or `wss` (with TLS). */
  readonly scheme: 'ws' | 'wss';
  /** Stop accepting new connections (the port closes) and keep serving the open ones. */
  stopAccepting(): void;
  /**
   * Stop accepting, close open sockets with 1001 and give them up to `graceMs` (and each at most `closeGraceMs` after
   * its close frame) to finish the closing handshake (so frames queued before the close frame reach the peer), then
   * drop the rest and close the server.
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
  /**
   * A WebSocket passed the connection limits. Its socket counts toward `maxConnections` from its TCP connection until
   * it closes, and toward `maxHandshakesPerAddress` until `known` is called (its device authenticated and holds a
   * channel at this hub) or it closes.
   */
  readonly onConnection: (ws: WebSocket, known: () => void) => void;
  /**
   * `/health`: its JSON body, and whether this process can take payments now — answered 200 when it can, 503 (same
   * body) when it cannot, for load balancers and readiness probes, which read the status code only.
   */
  readonly health: () => { readonly serving: boolean; readonly body: Record<string, unknown> };
  /** Serve TLS (`https://`, `wss://`) with this certificate. */
  readonly tls?: TlsOptions | undefined;
  /** Other HTTP routes (the dashboard): return true when the request was handled. */
  readonly onRequest?: ((req: IncomingMessage, res: ServerResponse) => boolean) | undefined;
}

/**
 * Refused connections at most held to be told why (a 1013 close, waiting for the peer's closing frame, or a 503),
 * counted from their TCP connection; past it a refused socket is dropped at once.
 */
export const MAX_REFUSING = 1024;

/** Of {@link MAX_REFUSING}, at most this many from one IPv4 address (or IPv6 /64); past it its sockets are dropped. */
export const MAX_REFUSING_PER_ADDRESS = 16;

/**
 * The one path the WebSocket endpoint is served at (a query string is ignored): an upgrade request for any other path
 * is answered 404 without upgrading, so the hub does not speak its protocol under every URL a proxy or a scanner
 * tries (`/dashboard`, `/metrics`, …).
 */
export const WS_PATH = '/';

/** The typed answer to a request the HTTP parser refused (`clientError`): Node's status, a JSON body with a code. */
const CLIENT_ERRORS: Record<string, readonly [status: string, code: string, message: string]> = {
  HPE_HEADER_OVERFLOW: ['431 Request Header Fields Too Large', 'LIMIT_EXCEEDED', 'request headers too large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: ['413 Payload Too Large', 'LIMIT_EXCEEDED', 'chunk extensions too large'],
  ERR_HTTP_REQUEST_TIMEOUT: ['408 Request Timeout', 'TIMEOUT', 'request not received in time'],
};
const BAD_REQUEST = ['400 Bad Request', 'MALFORMED', 'malformed HTTP request'] as const;

/** A whole HTTP/1.1 response written on a raw socket (no upgrade), closing the connection. */
function rawResponse(status: string, headers: Record<string, string>, body: string): string {
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
  return (
    `HTTP/1.1 ${status}\r\n${lines.join('')}connection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n` +
    body
  );
}

/**
 * Listen for devices and operators. Every socket counts from its TCP connection (before its TLS handshake and HTTP
 * upgrade request, so peers dribbling bytes are counted too): toward `maxConnections` until it closes, and toward
 * `maxHandshakesPerAddress` of its IPv4 address (or IPv6 /64) until its device authenticates with a channel at this
 * hub or it closes (HTTP requests to the dashboard and `/metrics` count while their socket is open; one kept alive idle
 * between requests is closed to make room for a new connection that would otherwise be refused; one upgraded to a
 * WebSocket after requests, as a proxy's pooled socket may be, is a connection like any other). A connection over
 * either limit is refused: upgraded and closed with 1013 (try again later), so well-behaved clients back off, or
 * answered 503 to a plain HTTP request — while at most {@link MAX_REFUSING} refusals ({@link MAX_REFUSING_PER_ADDRESS}
 * from one address) are pending; past that it is dropped at its TCP connection. Frames above `maxFrameBytes` close with 1009
 * (ws `maxPayload`); a message in more fragments than {@link maxFragments}, or a frame unfinished over more socket reads
 * than {@link maxBufferedChunks}, with 1008. Upgrades are taken only at {@link WS_PATH}; `/metrics` renders at most once per
 * `metricsCacheMs`. Plain HTTP requests (not upgrades) are budgeted per address (`httpRequestsPerSecond`,
 * `httpRequestBurst`): past it a request is answered 429 with `Retry-After` and `Connection: close`. `/health` is 503
 * while `health()` says the hub is not serving. Warns (does not refuse) when the process's open-files limit cannot hold `maxConnections`.
 */
export async function startTransport(o: TransportOptions): Promise<Transport> {
  // Past the open-files limit, accepting a socket fails (EMFILE), and so may the store's files and the chain
  // endpoint's sockets, which the hub needs to answer a stale force close. Said at start, not refused: the limit can
  // be raised while the process runs (prlimit), and what else needs descriptors is an estimate.
  const short = connectionsOverFdLimit(o.limits.maxConnections);
  if (short)
    o.logger.warn(
      short,
      `maxConnections (${short.maxConnections}) is more than the open-files limit (${short.openFilesLimit}) leaves for connections (${short.fit}): connections past that fail to open (EMFILE), and so may the store's files and the chain endpoint's sockets; raise the limit (ulimit -n, systemd LimitNOFILE) or lower --max-connections`,
    );
  const serve = (opts: ServerOptions, listener: RequestListener) =>
    o.tls
      ? // The TLS handshake comes before any header: without its own timeout (Node's default 120 s) a socket that
        // never finishes it is held 12× longer than one that dribbles its headers.
        createTlsServer(
          { ...opts, handshakeTimeout: o.limits.handshakeTimeoutMs, cert: o.tls.cert, key: o.tls.key },
          listener,
        )
      : createServer(opts, listener);
  // A request (the WebSocket upgrade included) must have sent its headers within the handshake timeout; Node
  // checks every connectionsCheckingInterval, so a peer dribbling bytes is dropped within about 1.25× of it.
  const hs = o.limits.handshakeTimeoutMs;
  const timeouts = {
    headersTimeout: hs,
    requestTimeout: hs,
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(hs / 4))),
  };
  const budget = new RequestBudget(o.limits.httpRequestsPerSecond, o.limits.httpRequestBurst);
  /** The last rendering of `/metrics` (or the one in progress) and when it began (monotonic ms). */
  let rendered: { at: number; text: Promise<Buffer> } | undefined;
  const metricsText = (): Promise<Buffer> => {
    const now = performance.now();
    if (rendered === undefined || now - rendered.at >= o.limits.metricsCacheMs) {
      // Kept encoded: each scrape in between writes the same bytes without encoding the text again.
      const text = o.metrics.registry.metrics().then((t) => Buffer.from(t, 'utf8'));
      const entry = { at: now, text };
      rendered = entry;
      // A failed rendering is not served again: the next scrape renders anew (each waiting scrape answers 500).
      text.then(undefined, () => {
        if (rendered === entry) rendered = undefined;
      });
    }
    return rendered.text;
  };
  const server = serve(timeouts, (req: IncomingMessage, res: ServerResponse) => {
    const counted = sockets.get(socketKey(req.socket));
    if (counted === undefined || counted.refused !== undefined) {
      res.writeHead(503, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ error: 'LIMIT_EXCEEDED', message: counted?.refused ?? 'server full, try again later' }));
      return;
    }
    counted.busy();
    res.once('finish', counted.idle);
    const wait = budget.take(addressKey(req.socket.remoteAddress), performance.now());
    if (wait > 0) {
      // Past its address's budget: answered at once, without routing or rendering, and the connection closed, so
      // requests pipelined behind this one on it cost no more than this.
      o.metrics.httpRateLimited.inc();
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': String(wait), connection: 'close' });
      res.end(JSON.stringify({ error: 'RATE_LIMITED', message: 'too many HTTP requests from your address' }));
      return;
    }
    try {
      if (o.onRequest?.(req, res)) return;
    } catch (e) {
      // A throw from a request listener is an uncaught exception: it would end the hub (and every device's session).
      o.logger.error({ err: e, url: req.url }, 'HTTP request handler failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end();
      return;
    }
    if (req.method === 'GET' && req.url === '/metrics') {
      metricsText().then(
        (text) => {
          res.writeHead(200, { 'content-type': o.metrics.registry.contentType });
          res.end(text);
        },
        (e: unknown) => {
          o.logger.warn({ err: e }, 'rendering /metrics failed');
          res.writeHead(500);
          res.end();
        },
      );
      return;
    }
    if (req.method === 'GET' && req.url === '/health') {
      const { serving, body } = o.health();
      res.writeHead(serving ? 200 : 503, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(JSON.stringify(body));
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: o.limits.maxFrameBytes,
    // ws holds each fragment of an unfinished message, and each socket read of an unfinished frame, as an object of its
    // own (some 100 bytes of heap for a 7-byte fragment). At ws's defaults (16,384 fragments, 262,144 reads) a peer
    // holding a message open with one-byte fragments, before it even authenticated, kept 1.7 MB for 112 KB sent, and
    // the connections of a few addresses exhausted the heap. Bounded by what a message of maxPayload needs.
    maxFragments: maxFragments(o.limits.maxFrameBytes),
    maxBufferedChunks: maxBufferedChunks(o.limits.maxFrameBytes),
    // After a close frame of the hub's, ws reads on for the peer's until this passes, then destroys the socket: at its
    // default (30 s) a peer that never answered was read at full speed (every frame parsed, then dropped) for 30 s.
    closeTimeout: o.limits.closeGraceMs,
    perMessageDeflate: false,
    clientTracking: true,
    // The wire version: the newest the client offered that this hub speaks; none offered is version 1 (no answer).
    handleProtocols: (offered) => selectWireProtocol(offered) ?? false,
  } as WsServerOptions & { closeTimeout: number }); // ws 8.23 takes closeTimeout; @types/ws (8.18) lacks it
  /** Sockets from their TCP connection until they close, refusals not included. */
  let connections = 0;
  /** Of those, per {@link addressKey}, the ones not yet known (authenticated, with a channel here). */
  const handshakesFrom = new Map<string, number>();
  /** Refused sockets held to be told why, until they close: in all, and per address. */
  let refusing = 0;
  const refusingFrom = new Map<string, number>();
  /** Every open socket by {@link socketKey}. */
  const sockets = new Map<string, Counted>();
  /**
   * Per {@link addressKey}, the HTTP sockets kept alive between requests (a browser's or a scraper's): reclaimed, oldest
   * first, when a new connection from their address (or, when the hub is full, from anywhere) would be refused. Held,
   * they counted until the client's keep-alive ended, and a device behind the same address as a dashboard or a
   * health check was refused 1013 meanwhile.
   */
  const idleFrom = new Map<string, Set<Counted>>();
  const reclaimIdle = (peer: string | undefined): boolean => {
    const set = peer === undefined ? idleFrom.values().next().value : idleFrom.get(peer);
    const victim = set?.values().next().value;
    if (victim === undefined) return false;
    victim.reclaim();
    return true;
  };
  /**
   * A closed socket's entry goes, unless its key is already another socket's: a socket from the same address and port
   * (a NAT reusing a port after a reset) can be accepted before the old one's close is heard, and lost its entry to it
   * (its request was then refused, 503 or a dropped upgrade, on a hub far from full).
   */
  const forget = (key: string, entry: Counted) => {
    if (sockets.get(key) === entry) sockets.delete(key);
  };
  // A request the HTTP parser refused (headers past Node's 16 KiB, a header timeout, bad syntax) gets Node's status
  // with a typed JSON body instead of an empty one, before any handler runs.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    const sent = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
    if (socket.writable && !sent) {
      const [status, code, message] = CLIENT_ERRORS[err.code ?? ''] ?? BAD_REQUEST;
      socket.write(
        rawResponse(status, { 'content-type': 'application/json' }, JSON.stringify({ error: code, message })),
      );
    }
    socket.destroy();
  });
  // Counted at the TCP connection, not at the upgrade: a socket still sending its upgrade request (or, under TLS, its
  // handshake) holds a descriptor and memory for up to handshakeTimeoutMs, and peers opening thousands of them and
  // dribbling bytes were bounded by nothing. Found again from its request by remote address and port (under TLS the
  // request's socket wraps this one, with the same ends).
  server.on('connection', (socket: Socket) => {
    if (socket.remoteAddress === undefined) {
      socket.destroy(); // already reset by its peer
      return;
    }
    const peer = addressKey(socket.remoteAddress);
    const key = socketKey(socket);
    const full = () => connections >= o.limits.maxConnections;
    const crowded = () => (handshakesFrom.get(peer) ?? 0) >= o.limits.maxHandshakesPerAddress;
    while ((crowded() && reclaimIdle(peer)) || (full() && reclaimIdle(undefined)));
    const refused = full()
      ? 'server full, try again later'
      : crowded()
        ? 'too many new connections from your address, try again later'
        : undefined;
    if (refused !== undefined) {
      o.metrics.disconnects.inc({ reason: 'server-full' });
      // Held until its request comes, to be told why (1013 or 503), and then until the peer's closing frame (up to
      // closeGraceMs): past MAX_REFUSING of them, or MAX_REFUSING_PER_ADDRESS from its address, dropped at once, so
      // peers that never send a request or never answer the close cannot pile them up.
      if (refusing >= MAX_REFUSING || (refusingFrom.get(peer) ?? 0) >= MAX_REFUSING_PER_ADDRESS) {
        socket.destroy();
        return;
      }
      refusing++;
      bump(refusingFrom, peer, 1);
      const entry: Counted = {
        refused,
        known: () => {},
        busy: () => {},
        idle: () => {},
        upgrade: () => {},
        reclaim: () => {},
      };
      sockets.set(key, entry);
      socket.once('close', () => {
        refusing--;
        bump(refusingFrom, peer, -1);
        forget(key, entry);
      });
      return;
    }
    connections++;
    bump(handshakesFrom, peer, 1);
    let unknown = true;
    let open = true;
    /** A WebSocket now (upgraded, maybe on a socket kept alive after HTTP requests, as a proxy's pool does): never idle. */
    let upgraded = false;
    const known = () => {
      if (!unknown) return;
      unknown = false;
      bump(handshakesFrom, peer, -1);
    };
    const busy = () => {
      const set = idleFrom.get(peer);
      if (set?.delete(entry) === true && set.size === 0) idleFrom.delete(peer);
    };
    /** Stops counting at once (not at its close event, which comes a turn later), the socket's slot free for another. */
    const release = () => {
      if (!open) return;
      open = false;
      busy();
      connections--;
      known();
      forget(key, entry);
    };
    const entry: Counted = {
      refused: undefined,
      known,
      busy,
      idle: () => {
        if (!open || upgraded || socket.destroyed) return;
        let set = idleFrom.get(peer);
        if (set === undefined) idleFrom.set(peer, (set = new Set()));
        set.add(entry);
      },
      upgrade: () => {
        upgraded = true;
        busy();
      },
      reclaim: () => {
        release();
        o.metrics.disconnects.inc({ reason: 'idle-reclaimed' });
        socket.destroy();
      },
    };
    sockets.set(key, entry);
    socket.once('close', release);
  });
  server.on('upgrade', (req, socket, head) => {
    const target = req.url ?? '';
    const query = target.indexOf('?');
    if ((query === -1 ? target : target.slice(0, query)) !== WS_PATH) {
      // Not the WebSocket endpoint: no upgrade, no subprotocol talk; its slot is given back as its socket closes.
      o.metrics.disconnects.inc({ reason: 'wrong-path' });
      answerAndClose(socket, rawResponse('404 Not Found', { 'content-type': 'text/plain' }, 'not found\n'));
      return;
    }
    if (selectWireProtocol(req.headers['sec-websocket-protocol']) === null) {
      // The client offered only wire versions this hub does not speak: no connection, and the versions it does.
      o.metrics.disconnects.inc({ reason: 'unsupported-protocol' });
      answerAndClose(
        socket,
        rawResponse(
          '426 Upgrade Required',
          { [WIRE_PROTOCOLS_HEADER]: WIRE_PROTOCOLS.join(', '), 'content-type': 'text/plain' },
          `this hub speaks ${WIRE_PROTOCOLS.join(', ')}\n`,
        ),
      );
      return;
    }
    const counted = sockets.get(socketKey(req.socket));
    if (counted === undefined) {
      socket.destroy(); // closed while its request was read
      return;
    }
    const { refused, known } = counted;
    // No longer an HTTP socket between requests: a keep-alive socket that served requests before (a reverse proxy
    // reuses its pooled upstream sockets for upgrades) is a device's connection now, never reclaimed as idle.
    counted.upgrade();
    if (refused !== undefined) {
      wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
        // Frames still arrive until the peer's close frame; a bad one is an 'error' event, which unheard ends the process.
        ws.on('error', () => {});
        ws.close(1013, refused);
      });
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      ws.on('error', () => {});
      o.onConnection(ws, known);
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

/** Plain HTTP requests per address ({@link TokenBuckets}), with the wait said as `Retry-After` does: whole seconds. */
export class RequestBudget {
  readonly #buckets: TokenBuckets<string>;

  constructor(perSecond: number, burst: number) {
    this.#buckets = new TokenBuckets(perSecond, burst);
  }

  /**
   * Charge one request of `from` at `now` (monotonic ms).
   * @returns 0 when it is within the budget; else the whole seconds (at least 1) until `from` has a token again
   */
  take(from: string, now: number): number {
    const wait = this.#buckets.take(from, now);
    return wait === 0 ? 0 : Math.max(1, Math.ceil(wait / 1000));
  }

  /** Addresses remembered now. */
  get size(): number {
    return this.#buckets.size;
  }
}

/**
 * Fragments one message may come in (past it ws closes the connection with 1008): one per 4 KiB of `maxFrameBytes`, at
 * least 16. Browsers and ws send a message as one frame; a library that fragments writes frames of its buffer's size
 * (Go's gorilla/websocket: 4 KiB by default). Kept low because a fragment is a view of the socket read it came in: one
 * read padded with control frames (up to 64 KiB) is held whole until the message ends.
 */
export function maxFragments(maxFrameBytes: number): number {
  return Math.max(16, Math.ceil(maxFrameBytes / 4096));
}

/**
 * Socket reads ws may hold while a frame is unfinished (past it ws closes the connection with 1008): a frame of
 * `maxFrameBytes` (and its 14-byte header) read 256 bytes at a time, at least 64. A TCP segment carries at least 536
 * bytes on any path without a tiny MTU, and a read takes every segment already received.
 */
export function maxBufferedChunks(maxFrameBytes: number): number {
  return Math.max(64, Math.ceil((maxFrameBytes + 14) / 256));
}

/**
 * Answer an upgrade request without upgrading and close its socket once the answer is out. Past the upgrade event
 * Node's HTTP timeouts no longer watch a socket, and `end()` alone leaves it open until the peer closes its side: a peer
 * that never did held the socket, and its connection slot, for ever.
 */
function answerAndClose(socket: Duplex, response: string): void {
  socket.end(response, () => socket.destroy());
}

/**
 * How a socket counts: refused (and why), or taken, with the call that stops it counting toward its address; an HTTP
 * socket is `idle` between a finished response and its next request, when it may be reclaimed (closed, its slot given
 * to a new connection).
 */
interface Counted {
  readonly refused: string | undefined;
  readonly known: () => void;
  readonly busy: () => void;
  readonly idle: () => void;
  /** Upgraded to a WebSocket: never idle again. */
  readonly upgrade: () => void;
  readonly reclaim: () => void;
}

/** A socket's two ends as seen from the hub: the key of its {@link Counted}, the same for a TLS socket and its TCP one. */
function socketKey(s: {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
}): string {
  return `${s.remoteAddress ?? ''}|${s.remotePort ?? ''}`;
}

function bump(m: Map<string, number>, key: string, by: number): void {
  const n = (m.get(key) ?? 0) + by;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
}

/**
 * Whose share of the handshake limits a connection takes: its IPv4 address, or the /64 of its IPv6 address (one
 * subscriber is usually given a whole /64, so counting single IPv6 addresses would bound nothing).
 */
export function addressKey(remote: string | undefined): string {
  if (remote === undefined) return '';
  if (!remote.includes(':')) return remote;
  if (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(remote)) return remote.slice(7); // IPv4-mapped
  const [head = '', tail] = remote.toLowerCase().split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups =
    tail === undefined ? left : [...left, ...Array(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => (g === '' ? '0' : g.replace(/^0+(?=.)/, '')))
    .join(':')}::/64`;
}
