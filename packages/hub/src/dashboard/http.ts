import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import { stringifyJson } from '@trickle/protocol/json';
import type { ChannelRecord } from '../store/types.js';
import { addressKey } from '../transport.js';
import { pageChannels, parseChannelQuery } from './channels-view.js';
import type { DashboardStats } from './stats.js';

/** Options of the hub's dashboard (`createHub({ dashboard })`). */
export interface DashboardOptions {
  /**
   * The operator token: sent as `Authorization: Bearer <token>` (scripts) or through the login form, which sets it
   * as an HttpOnly cookie. Never accepted in a URL. At least 16 characters.
   */
  readonly token: string;
}

/** What the dashboard reads from the hub. */
export interface DashboardDeps {
  readonly options: DashboardOptions;
  readonly stats: DashboardStats;
  /** Cookies get `Secure` when the hub serves TLS. */
  readonly secure: boolean;
  readonly records: () => Iterable<ChannelRecord>;
  readonly isConnected: (record: ChannelRecord) => boolean;
  /** The body of `/api/summary`. */
  readonly summary: () => Record<string, unknown>;
  /** A monotonic clock in ms for the sign-in throttle. Default `performance.now`. */
  readonly now?: (() => number) | undefined;
}

/** The dashboard's HTTP side. */
export interface Dashboard {
  /** Route a request; false when it is not the dashboard's. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** Push an event to every live `/api/events` stream. */
  push(event: 'tick' | 'round' | 'chain', data: unknown): void;
  /** Whether any live stream is open (so the hub builds a tick's summary only for someone). */
  readonly live: boolean;
  /** End the live streams (hub shutdown). */
  close(): void;
}

const COOKIE = 'trickle_dashboard';
const MAX_STREAMS = 64;
const MAX_STREAM_BUFFER = 1 << 20;
/** Longest operator token: a longer one is refused at start, and a longer one presented is refused unread. */
export const MAX_TOKEN_CHARS = 512;
/** Wrong tokens one address (IPv4, or IPv6 /64) may present in a burst; then one more per {@link FAILED_REFILL_MS}. */
export const MAX_FAILED_ATTEMPTS = 10;
/** An address earns back one failed attempt per this many ms (10 a minute). */
export const FAILED_REFILL_MS = 6_000;
/**
 * Addresses whose failed attempts are remembered at once; past it the one whose last failure is oldest is forgotten
 * (an address is also forgotten once it has earned every attempt back), so the table is bounded whatever comes.
 */
export const MAX_THROTTLED_ADDRESSES = 10_000;
/** Bytes of a login form read at most (the form holds one token); past it the answer is 413 `LIMIT_EXCEEDED`. */
const MAX_LOGIN_BODY = 4096;

/** What a token may look like: printable ASCII without `; , " \`, 16 to {@link MAX_TOKEN_CHARS} characters. */
const wellFormed = (t: string) =>
  t.length >= 16 && t.length <= MAX_TOKEN_CHARS && /^[\x21-\x7e]+$/.test(t) && !/[;,"\\]/.test(t);

/**
 * Validate dashboard options once.
 * @throws TrickleError('INVALID_ARGUMENT') for a token shorter than 16 characters, longer than {@link MAX_TOKEN_CHARS},
 *   or with characters a cookie cannot hold
 */
export function resolveDashboard(o: DashboardOptions): DashboardOptions {
  if (typeof o.token !== 'string' || o.token.length < 16)
    throw new TrickleError('INVALID_ARGUMENT', 'dashboard token must be at least 16 characters');
  if (o.token.length > MAX_TOKEN_CHARS)
    throw new TrickleError('INVALID_ARGUMENT', `dashboard token must be at most ${MAX_TOKEN_CHARS} characters`);
  if (!wellFormed(o.token))
    throw new TrickleError('INVALID_ARGUMENT', 'dashboard token must be printable ASCII without ; , " or \\');
  return { token: o.token };
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * The credential a request presents: the bearer header first, then the cookie; never the query string. `malformed`
 * for one no token can look like (too long, characters a token cannot have, a bad escape): refused without hashing.
 */
function presented(req: IncomingMessage): string | 'malformed' | undefined {
  const auth = req.headers.authorization;
  // The scheme's name is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are this scheme too.
  if (auth !== undefined && auth.slice(0, 7).toLowerCase() === 'bearer ') {
    const token = auth.slice(7).trim();
    return wellFormed(token) ? token : 'malformed';
  }
  // Another scheme (a proxy's Basic credentials passed on) is not ours: the cookie is looked at then.
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== COOKIE) continue;
    const raw = part.slice(eq + 1).trim();
    if (raw.length > 3 * MAX_TOKEN_CHARS) return 'malformed';
    try {
      const token = decodeURIComponent(raw);
      return wellFormed(token) ? token : 'malformed';
    } catch {
      return 'malformed'; // a bad escape (URIError thrown from a request listener would end the process)
    }
  }
  return undefined;
}

/**
 * Failed sign-ins per address, as a token bucket: {@link MAX_FAILED_ATTEMPTS} at once, one more per
 * {@link FAILED_REFILL_MS}. An address with none left is refused (429) on every dashboard path — with the right token
 * too, else the answer would tell a guesser which token was right — until it has earned one back.
 */
export class SignInThrottle {
  /** Per address: attempts left as of `at`. In order of last failure (oldest first), at most MAX_THROTTLED_ADDRESSES. */
  readonly #left = new Map<string, { left: number; at: number }>();

  /** Attempts `from` has left at `now` (forgets an address that has earned every attempt back). */
  #attempts(from: string, now: number): number {
    const e = this.#left.get(from);
    if (!e) return MAX_FAILED_ATTEMPTS;
    const left = Math.min(MAX_FAILED_ATTEMPTS, e.left + Math.max(0, now - e.at) / FAILED_REFILL_MS);
    if (left >= MAX_FAILED_ATTEMPTS) this.#left.delete(from);
    return left;
  }

  /** Seconds `from` must wait before its next attempt (0: it may try now). */
  retryAfter(from: string, now: number): number {
    const left = this.#attempts(from, now);
    return left >= 1 ? 0 : Math.max(1, Math.ceil(((1 - left) * FAILED_REFILL_MS) / 1000));
  }

  /** Addresses remembered now. */
  get size(): number {
    return this.#left.size;
  }

  /** Count one failed attempt from `from`. */
  failed(from: string, now: number): void {
    const left = this.#attempts(from, now) - 1;
    this.#left.delete(from); // re-inserted last: the map stays in order of last failure
    this.#left.set(from, { left, at: now });
    if (this.#left.size > MAX_THROTTLED_ADDRESSES) this.#left.delete(this.#left.keys().next().value!);
  }
}

/**
 * Whether a request is not one a browser sent from another site: its `Sec-Fetch-Site` is absent (not a browser, or an
 * old one), `same-origin`, or `none` (typed in the address bar). A proxy in front does not change it.
 */
const fromThisOrigin = (req: IncomingMessage) => {
  const site = req.headers['sec-fetch-site'];
  return site === undefined || site === 'same-origin' || site === 'none';
};

const ASSETS: Record<string, string> = {
  'app.js': 'text/javascript; charset=utf-8',
  'app.css': 'text/css; charset=utf-8',
};
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const loginPage = (
  notice = '',
) => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Trickle hub — sign in</title>
<style>body{font:15px system-ui,sans-serif;background:#0f172a;color:#e2e8f0;display:grid;place-items:center;height:100vh;margin:0}
form{background:#1e293b;padding:2rem;border-radius:8px;display:grid;gap:.8rem;min-width:20rem}input,button{font:inherit;padding:.5rem;border-radius:4px;border:1px solid #475569}
button{background:#38bdf8;color:#0f172a;border:0;cursor:pointer}</style></head><body>
<form method="post" action="/dashboard/login"><h1 style="margin:0;font-size:1.2rem">Trickle hub dashboard</h1>${notice}
<label for="token">Operator token</label><input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></body></html>`;
const LOGIN_PAGE = loginPage();

const PAGE = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Trickle hub</title>
<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="stylesheet" href="/dashboard/app.css"></head>
<body><div id="app"></div><script type="module" src="/dashboard/app.js"></script></body></html>`;

/**
 * The dashboard: `GET /dashboard` (the page), `POST /dashboard/login` (form: sets the cookie), `POST /dashboard/logout`,
 * and the JSON API the page uses — `GET /api/summary`, `GET /api/channels?sort=&order=&page=&pageSize=&q=`,
 * `GET /api/rounds`, `GET /api/chain-events`, and `GET /api/events` (Server-Sent Events: `tick` each second,
 * `round` and `chain` as they happen). Everything but the login form answers 401 without the token. An address that
 * presented {@link MAX_FAILED_ATTEMPTS} wrong tokens in a row gets 429 `RATE_LIMITED` with `Retry-After` on every
 * dashboard path until it earns an attempt back (one per {@link FAILED_REFILL_MS}).
 * @param deps - what it reads from the hub
 * @param assetsDir - where the bundled page script and styles are (`app.js`, `app.css`)
 */
export function createDashboard(deps: DashboardDeps, assetsDir: URL): Dashboard {
  const want = digest(deps.options.token);
  const now = deps.now ?? (() => performance.now());
  const throttle = new SignInThrottle();
  // Both sides hashed to 32 bytes: the comparison takes the same time whatever the presented token shares with it.
  const matches = (token: string) => timingSafeEqual(digest(token), want);
  const assets = new Map<string, Buffer>();
  for (const name of Object.keys(ASSETS)) {
    try {
      assets.set(name, readFileSync(new URL(name, assetsDir)));
    } catch (e) {
      throw new TrickleError(
        'INVALID_ARGUMENT',
        `dashboard asset ${name} is missing: build it with \`npm run build\` (packages/hub/scripts/build-dashboard.mjs)`,
        { cause: e },
      );
    }
  }
  const streams = new Set<ServerResponse>();

  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json', ...SECURITY_HEADERS });
    res.end(stringifyJson(body));
  };
  const html = (res: ServerResponse, status: number, body: string) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', ...SECURITY_HEADERS });
    res.end(body);
  };

  const login = (req: IncomingMessage, res: ServerResponse, from: string) => {
    let body = '';
    let over = false;
    req.setEncoding('latin1');
    req.on('data', (chunk: string) => {
      if (over) return;
      body += chunk;
      if (body.length <= MAX_LOGIN_BODY) return;
      // Answered, not just dropped: the sender learns why; the connection closes after the answer.
      over = true;
      throttle.failed(from, now());
      res.writeHead(413, { 'content-type': 'application/json', connection: 'close', ...SECURITY_HEADERS });
      res.end(
        stringifyJson({ error: 'LIMIT_EXCEEDED', message: `a login form holds at most ${MAX_LOGIN_BODY} bytes` }),
      );
    });
    req.on('end', () => {
      if (over) return;
      const token = new URLSearchParams(body).get('token') ?? '';
      if (!wellFormed(token) || !matches(token)) {
        throttle.failed(from, now());
        html(res, 401, LOGIN_PAGE);
        return;
      }
      const cookie = `${COOKIE}=${encodeURIComponent(token)}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200${deps.secure ? '; Secure' : ''}`;
      res.writeHead(303, { location: '/dashboard', 'set-cookie': cookie, ...SECURITY_HEADERS });
      res.end();
    });
  };

  const events = (req: IncomingMessage, res: ServerResponse) => {
    if (streams.size >= MAX_STREAMS) {
      json(res, 503, { error: 'RATE_LIMITED', message: 'too many live dashboard streams' });
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', connection: 'keep-alive', ...SECURITY_HEADERS });
    res.write(': trickle hub events\n\n');
    streams.add(res);
    req.on('close', () => streams.delete(res));
  };

  return {
    handle(req, res) {
      // A request target the URL parser refuses (`//`, `/\\`) is not the dashboard's: the transport answers it 404.
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://hub');
      } catch {
        return false;
      }
      const path = url.pathname;
      if (path !== '/dashboard' && !path.startsWith('/dashboard/') && !path.startsWith('/api/')) return false;
      // The throttle first: an address out of attempts costs no parsing of its credential, no hash, no body read.
      const from = addressKey(req.socket.remoteAddress);
      const wait = throttle.retryAfter(from, now());
      if (wait > 0) {
        const message = `too many wrong operator tokens from your address: try again in ${wait} s`;
        const headers = { 'retry-after': String(wait), connection: 'close', ...SECURITY_HEADERS };
        if (path.startsWith('/api/')) {
          res.writeHead(429, { 'content-type': 'application/json', ...headers });
          res.end(stringifyJson({ error: 'RATE_LIMITED', message }));
        } else {
          res.writeHead(429, { 'content-type': 'text/html; charset=utf-8', ...headers });
          res.end(loginPage(`<p role="alert">${message}</p>`));
        }
        return true;
      }
      // A form posted from another site (a page the operator has open elsewhere, in the same browser) is refused
      // before it is read: it cannot spend the operator's sign-in attempts, nor sign the browser out.
      if (req.method === 'POST' && !fromThisOrigin(req)) {
        const message = 'a form posted from another site';
        if (path.startsWith('/api/')) json(res, 403, { error: 'UNAUTHORIZED', message });
        else html(res, 403, loginPage(`<p role="alert">${message} is refused: sign in here</p>`));
        return true;
      }
      if (req.method === 'POST' && path === '/dashboard/login') {
        login(req, res, from);
        return true;
      }
      const got = presented(req);
      if (got === undefined || got === 'malformed' || !matches(got)) {
        if (got !== undefined) throttle.failed(from, now()); // no credential at all is no guess
        if (path.startsWith('/api/'))
          json(res, 401, { error: 'UNAUTHORIZED', message: 'operator token required (Authorization: Bearer)' });
        else html(res, 401, LOGIN_PAGE);
        return true;
      }
      if (req.method === 'POST' && path === '/dashboard/logout') {
        res.writeHead(303, {
          location: '/dashboard',
          'set-cookie': `${COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`,
          ...SECURITY_HEADERS,
        });
        res.end();
        return true;
      }
      if (req.method !== 'GET') {
        json(res, 405, { error: 'INVALID_ARGUMENT', message: 'method not allowed' });
        return true;
      }
      const asset = path.startsWith('/dashboard/') ? path.slice('/dashboard/'.length) : '';
      if (path === '/dashboard' || path === '/dashboard/') html(res, 200, PAGE);
      else if (ASSETS[asset]) {
        res.writeHead(200, { 'content-type': ASSETS[asset]!, ...SECURITY_HEADERS });
        res.end(assets.get(asset));
      } else if (path === '/api/summary') json(res, 200, deps.summary());
      else if (path === '/api/channels') {
        try {
          const q = parseChannelQuery(url.searchParams);
          json(
            res,
            200,
            pageChannels(deps.records(), q, {
              connected: deps.isConnected,
              lastActivity: (r) => deps.stats.lastActivity(r.channelId),
            }),
          );
        } catch (e) {
          json(res, 400, {
            error: isTrickleError(e) ? e.code : 'INTERNAL',
            message: isTrickleError(e) ? e.shortMessage : 'bad request',
          });
        }
      } else if (path === '/api/series') json(res, 200, deps.stats.series());
      else if (path === '/api/rounds') json(res, 200, deps.stats.rounds);
      else if (path === '/api/chain-events') json(res, 200, deps.stats.events);
      else if (path === '/api/events') events(req, res);
      else json(res, 404, { error: 'INVALID_ARGUMENT', message: 'no such dashboard path' });
      return true;
    },
    get live() {
      return streams.size > 0;
    },
    push(event, data) {
      if (streams.size === 0) return;
      const frame = `event: ${event}\ndata: ${stringifyJson(data)}\n\n`;
      for (const res of streams) {
        // A reader that stopped reading is dropped rather than buffered without bound.
        if (res.writableLength > MAX_STREAM_BUFFER) {
          res.destroy();
          streams.delete(res);
        } else res.write(frame);
      }
    },
    close() {
      for (const res of streams) res.end();
      streams.clear();
    },
  };
}
