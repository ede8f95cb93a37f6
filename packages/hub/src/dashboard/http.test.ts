import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isTrickleError } from '@trickle/protocol/errors';
import {
  FAILED_REFILL_MS,
  MAX_FAILED_ATTEMPTS,
  MAX_THROTTLED_ADDRESSES,
  MAX_TOKEN_CHARS,
  SignInThrottle,
  createDashboard,
  resolveDashboard,
  type Dashboard,
} from './http.js';
import { DashboardStats } from './stats.js';

const TOKEN = 'sixteen-chars-or-more-token';

describe('dashboard HTTP: operator token, login cookie, API, live events', () => {
  let server: Server;
  let dashboard: Dashboard;
  let base: string;
  let dir: string;
  const stats = new DashboardStats();

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trickle-dash-'));
    writeFileSync(join(dir, 'app.js'), 'console.log("app")');
    writeFileSync(join(dir, 'app.css'), 'body{}');
    dashboard = createDashboard(
      {
        options: { token: TOKEN },
        stats,
        secure: false,
        records: () => [],
        isConnected: () => false,
        summary: () => ({ hub: '0xhub', n: 1n }),
      },
      pathToFileURL(`${dir}/`),
    );
    server = createServer((req, res) => {
      if (!dashboard.handle(req, res)) {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    dashboard.close();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('validates its options and needs its bundled assets', () => {
    for (const token of ['short', 'has spaces in it here', 'has;semicolon;in;it;x']) {
      expect(() => resolveDashboard({ token })).toThrow(/dashboard token/);
    }
    let err: unknown;
    try {
      createDashboard(
        {
          options: { token: TOKEN },
          stats,
          secure: false,
          records: () => [],
          isConnected: () => false,
          summary: () => ({}),
        },
        pathToFileURL(`${dir}/missing/`),
      );
    } catch (e) {
      err = e;
    }
    expect(isTrickleError(err, 'INVALID_ARGUMENT')).toBe(true);
  });

  it('answers 401 without the token, and never takes it from the query string', async () => {
    const page = await fetch(`${base}/dashboard`);
    expect(page.status).toBe(401);
    expect(await page.text()).toContain('action="/dashboard/login"');
    expect((await fetch(`${base}/api/summary`)).status).toBe(401);
    expect((await fetch(`${base}/api/summary?token=${TOKEN}`)).status).toBe(401);
    expect((await fetch(`${base}/dashboard/app.js`)).status).toBe(401);
    expect((await fetch(`${base}/api/summary`, { headers: { authorization: `Bearer ${TOKEN}x` } })).status).toBe(401);
    expect((await fetch(`${base}/elsewhere`)).status).toBe(404); // not the dashboard's
  });

  it('the login form sets an HttpOnly, SameSite=Strict cookie that opens the page and the API', async () => {
    const wrong = await fetch(`${base}/dashboard/login`, {
      method: 'POST',
      body: new URLSearchParams({ token: 'nope-nope-nope-nope' }),
      redirect: 'manual',
    });
    expect(wrong.status).toBe(401);
    const ok = await fetch(`${base}/dashboard/login`, {
      method: 'POST',
      body: new URLSearchParams({ token: TOKEN }),
      redirect: 'manual',
    });
    expect(ok.status).toBe(303);
    const cookie = ok.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    expect(cookie).not.toMatch(/Secure/); // plain http here; TLS hubs add it
    const jar = cookie.split(';')[0]!;
    const page = await fetch(`${base}/dashboard`, { headers: { cookie: jar } });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toMatch(/default-src 'none'; script-src 'self'/);
    expect(await page.text()).toContain('src="/dashboard/app.js"');
    expect(await (await fetch(`${base}/dashboard/app.js`, { headers: { cookie: jar } })).text()).toBe(
      'console.log("app")',
    );
    const summary = await fetch(`${base}/api/summary`, { headers: { cookie: jar } });
    expect(await summary.json()).toEqual({ hub: '0xhub', n: '1' }); // bigints as decimal strings
    const logout = await fetch(`${base}/dashboard/logout`, {
      method: 'POST',
      headers: { cookie: jar },
      redirect: 'manual',
    });
    expect(logout.headers.get('set-cookie')).toMatch(/Max-Age=0/);
  });

  it('streams pushed events over Server-Sent Events', async () => {
    const got = new Promise<string>((resolve, reject) => {
      const req = request(`${base}/api/events`, { headers: { authorization: `Bearer ${TOKEN}` } }, (res) => {
        expect(res.headers['content-type']).toBe('text/event-stream');
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => {
          text += c;
          if (text.includes('\n\nevent: round')) {
            req.destroy();
            resolve(text);
          }
        });
        setTimeout(() => dashboard.push('round', { round: 7n, markets: [] }), 50);
      });
      req.on('error', reject);
      req.end();
    });
    expect(await got).toContain('event: round\ndata: {"round":"7","markets":[]}');
  });
});

describe('dashboard HTTP: wrong tokens are throttled per address, hostile ones refused typed', () => {
  let server: Server;
  let port: number;
  let dir: string;
  let clock = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'trickle-dash-'));
    writeFileSync(join(dir, 'app.js'), '');
    writeFileSync(join(dir, 'app.css'), '');
    const dashboard = createDashboard(
      {
        options: { token: TOKEN },
        stats: new DashboardStats(),
        secure: false,
        records: () => [],
        isConnected: () => false,
        summary: () => ({ ok: true }),
        now: () => clock,
      },
      pathToFileURL(`${dir}/`),
    );
    server = createServer((req, res) => {
      if (!dashboard.handle(req, res)) {
        res.writeHead(404);
        res.end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  /** One request from `from` (any of 127/8 is loopback: a distinct source address per test). */
  const call = (
    from: string,
    path: string,
    o: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {},
  ) =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          path,
          localAddress: from,
          method: o.method ?? 'GET',
          headers: o.headers,
          agent: false,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
        },
      );
      req.on('error', reject);
      req.end(o.body);
    });
  const bearer = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });
  const WRONG = 'wrong-token-wrong-token';
  const form = (token: string) => ({
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token }).toString(),
  });

  it(`${MAX_FAILED_ATTEMPTS} wrong tokens from one address, then 429 RATE_LIMITED with Retry-After on every path (the right token too) until it earns an attempt back; other addresses unaffected`, async () => {
    const a = '127.0.0.2';
    for (let i = 0; i < MAX_FAILED_ATTEMPTS; i++)
      expect((await call(a, '/api/summary', bearer(WRONG))).status).toBe(401);
    // before: 401 for ever, as fast as the guesser could send
    const refused = await call(a, '/api/summary', bearer(WRONG));
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe(String(FAILED_REFILL_MS / 1000));
    expect(JSON.parse(refused.body).error).toBe('RATE_LIMITED');
    // the right token is refused alike: a guesser out of attempts learns nothing from the answer
    expect((await call(a, '/api/summary', bearer(TOKEN))).status).toBe(429);
    const page = await call(a, '/dashboard');
    expect([page.status, page.body]).toEqual([429, expect.stringContaining('role="alert"')]);
    expect((await call(a, '/dashboard/login', form(TOKEN))).status).toBe(429);
    expect((await call(a, '/dashboard/login', form(TOKEN))).headers['retry-after']).toBe('6');
    // another address signs in meanwhile
    expect((await call('127.0.0.3', '/api/summary', bearer(TOKEN))).status).toBe(200);
    // one attempt back per FAILED_REFILL_MS: the right token then works, and is no failure
    clock += FAILED_REFILL_MS - 1;
    expect((await call(a, '/api/summary', bearer(TOKEN))).headers['retry-after']).toBe('1');
    clock += 1;
    expect((await call(a, '/api/summary', bearer(TOKEN))).status).toBe(200);
    expect((await call(a, '/api/summary', bearer(TOKEN))).status).toBe(200);
    expect((await call(a, '/api/summary', bearer(WRONG))).status).toBe(401);
    expect((await call(a, '/api/summary', bearer(WRONG))).status).toBe(429);
    // a login form is a guess like any other; a request without a credential is none
    clock += MAX_FAILED_ATTEMPTS * FAILED_REFILL_MS;
    for (let i = 0; i < 5; i++) expect((await call(a, '/api/summary')).status).toBe(401);
    for (let i = 0; i < MAX_FAILED_ATTEMPTS; i++)
      expect((await call(a, '/dashboard/login', form(WRONG))).status).toBe(401);
    expect((await call(a, '/dashboard/login', form(WRONG))).status).toBe(429);
  });

  it('hostile credentials — huge, non-ASCII, hundreds of cookie headers, a bad escape, a huge login form — get typed refusals and count as wrong tokens', async () => {
    const a = '127.0.0.4';
    const unauthorized = async (o: Parameters<typeof call>[2], path = '/api/summary') => {
      const r = await call(a, path, o);
      expect([r.status, JSON.parse(r.body).error]).toEqual([401, 'UNAUTHORIZED']);
    };
    await unauthorized(bearer('x'.repeat(12_000)));
    await unauthorized(bearer('é'.repeat(24)));
    await unauthorized({
      headers: { cookie: Array.from({ length: 400 }, (_, i) => `c${i}=1`).concat(`trickle_dashboard=${WRONG}`) },
    });
    await unauthorized({ headers: { cookie: 'trickle_dashboard=%E0%A4%A' } });
    await unauthorized({ headers: { cookie: `trickle_dashboard=${'%41'.repeat(2_000)}` } });
    // a login form past 4 KiB: before, the socket was destroyed with no answer at all
    const big = await call(a, '/dashboard/login', { ...form('x'.repeat(64 * 1024)) });
    expect([big.status, JSON.parse(big.body).error]).toEqual([413, 'LIMIT_EXCEEDED']);
    expect((await call(a, '/dashboard/login', form('ö'.repeat(20)))).status).toBe(401);
    // another scheme's credentials (a proxy's Basic, passed on) are not a guess here
    await unauthorized({ headers: { authorization: 'Basic dXNlcjpwYXNz' } });
    await unauthorized(bearer(WRONG));
    await unauthorized(bearer(WRONG));
    await unauthorized(bearer(WRONG)); // the tenth wrong one
    expect((await call(a, '/api/summary', bearer(TOKEN))).status).toBe(429);
    expect(() => resolveDashboard({ token: 'a'.repeat(MAX_TOKEN_CHARS + 1) })).toThrow(/at most 512 characters/);
    expect(resolveDashboard({ token: 'a'.repeat(MAX_TOKEN_CHARS) }).token).toHaveLength(MAX_TOKEN_CHARS);
  });
});

describe('sign-in throttle', () => {
  it(`remembers at most ${MAX_THROTTLED_ADDRESSES} addresses, forgetting the one whose last failure is oldest, and forgets one that earned every attempt back`, () => {
    const t = new SignInThrottle();
    const exhaust = (from: string, now: number) => {
      for (let i = 0; i < MAX_FAILED_ATTEMPTS; i++) t.failed(from, now);
    };
    for (let i = 0; i < MAX_THROTTLED_ADDRESSES; i++) exhaust(`10.0.${i >> 8}.${i & 255}`, 0);
    expect(t.size).toBe(MAX_THROTTLED_ADDRESSES);
    expect(t.retryAfter('10.0.0.0', 0)).toBe(6);
    exhaust('10.1.0.0', 1);
    expect(t.size).toBe(MAX_THROTTLED_ADDRESSES);
    expect(t.retryAfter('10.0.0.0', 1)).toBe(0); // forgotten: the oldest
    expect(t.retryAfter('10.0.0.1', 1)).toBe(6);
    expect(t.retryAfter('10.1.0.0', 1)).toBe(6);
    expect(t.retryAfter('10.1.0.0', 1 + MAX_FAILED_ATTEMPTS * FAILED_REFILL_MS)).toBe(0);
    expect(t.size).toBe(MAX_THROTTLED_ADDRESSES - 1);
  });
});
