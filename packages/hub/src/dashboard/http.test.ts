import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isTrickleError } from '@trickle/protocol/errors';
import { createDashboard, resolveDashboard, type Dashboard } from './http.js';
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
