import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { pino } from 'pino';
import { nativeSigner } from '@trickle/protocol/native';
import { NO_LOCKS, type ChannelId } from '@trickle/protocol/types';
import { createHub, type Hub } from '@trickle/hub/hub';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import type { ChannelRecord } from '@trickle/hub';
import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

// The browser's globals, for the functions Playwright runs in the page (test/ compiles without the DOM lib).
interface PageElement {
  readonly textContent: string | null;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { readonly length: number };
};
declare const window: Record<string, unknown>;

const TOKEN = 'operator-token-for-the-dashboard-audit';
const repo = fileURLToPath(new URL('..', import.meta.url));
const auth = { authorization: `Bearer ${TOKEN}` };
const hex = (n: number | bigint, bytes: number): `0x${string}` => `0x${n.toString(16).padStart(bytes * 2, '0')}`;
const grouped = (s: string) => s.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
/** Markup that sets a global flag if it is ever parsed as HTML (or as an attribute break-out). */
const hostile = (tag: string) =>
  `"'><img src=x onerror="window.__xss=(window.__xss||[]).concat('${tag}')"><svg onload="window.__xss=1">${tag}`;

async function signIn(browser: Browser, base: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await context.newPage();
  await page.goto(`${base}dashboard`);
  await page.fill('#token', TOKEN);
  await Promise.all([page.waitForURL(`${base}dashboard`), page.click('button[type=submit]')]);
  return page;
}

/**
 * An audit of the operator dashboard as an attacker and as an operator would judge it: hostile strings reach the page
 * only as text, the API carries the security headers and no CORS grant, what the page shows is exact (bigints) and is
 * what the hub's API and metrics say, and a page on another site cannot spend the operator's sign-in attempts.
 */
describe('operator dashboard audit (headless Chromium)', () => {
  let w: World;
  let browser: Browser;

  beforeAll(async () => {
    execFileSync(process.execPath, [join(repo, 'packages/hub/scripts/build-dashboard.mjs')], { stdio: 'ignore' });
    w = await createWorld();
    await w.startHub({ market: { roundMs: 1000, feeBps: 0n }, more: { dashboard: { token: TOKEN } } });
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  });
  afterAll(async () => {
    await browser?.close();
    await w?.close();
  });

  it('renders hostile strings (stored channel fields, market names, chain events) as text: no script runs', async () => {
    // A store holding strings no honest channel has, as a corrupted or hostile store would: the hub serves them as
    // they are, and the page must show them as text. Amounts at 18+ digits must come out exact.
    const big = 1_234_567_890_123_456_789n;
    const channelId = hex(0xabcdef, 32) as ChannelId;
    const record = {
      params: {
        chainId: w.chain.chainId,
        adjudicator: w.adjudicator,
        device: hostile('device'),
        hub: w.hub!.address,
        token: hostile('token'),
        challengeDuration: 3600n,
        salt: hex(1, 32),
      },
      channelId,
      funding: { device: big, hub: 2n ** 96n - 1n },
      status: 'open',
      latest: {
        state: {
          channelId,
          version: big + 2n,
          paidByDevice: 1n,
          paidByHub: 0n,
          round: 0n,
          ...NO_LOCKS,
          isFinal: false,
        },
      },
      hubSignedVersion: 0n,
    } as unknown as ChannelRecord;
    const path = join(w.dir, 'hostile-store');
    const seed = openLmdbStore({ path });
    await seed.commit([{ kind: 'channel' as const, record }]);
    await seed.close();
    const hub: Hub = await createHub({
      signer: nativeSigner(w.hubKey),
      store: openLmdbStore({ path }),
      chain: adjudicatorHubChain({
        provider: w.chain.provider,
        chainId: w.chain.chainId,
        adjudicator: w.adjudicator,
        runner: w.chain.wallet(1),
      }),
      logger: pino({ level: 'silent' }),
      dashboard: { token: TOKEN },
    });
    try {
      // Before the page loads (served by /api/rounds, /api/chain-events) and after (pushed over /api/events).
      hub.stats.round({
        round: '7',
        at: Date.now(),
        markets: [{ market: hostile('market'), price: String(big), quantity: '3' }],
        fee: '0',
      });
      hub.stats.chainEvent({ at: Date.now(), kind: 'forceClosed', channelId, version: '5', by: hostile('by') });
      const page = await signIn(browser, hub.httpUrl);
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.waitForSelector(`tr[data-channel-id="${channelId}"]`);
      hub.stats.round({
        round: '8',
        at: Date.now(),
        markets: [{ market: hostile('live-market'), price: '1', quantity: String(big) }],
        fee: '0',
      });
      hub.stats.chainEvent({ at: Date.now(), kind: 'deposit', channelId, amount: String(big) });
      await page.waitForSelector('[data-testid="rounds"] tr[data-round="8"]');
      await page.waitForSelector('[data-testid="chain-events"] tr[data-kind="deposit"]');
      await new Promise((r) => setTimeout(r, 500)); // any onerror of a broken <img> fires by now
      expect(await page.evaluate(() => window['__xss'])).toBeUndefined();
      expect(await page.locator('img, svg:not(.uplot svg)').count()).toBe(0);
      // The strings are there, as text.
      expect(await page.locator(`tr[data-channel-id="${channelId}"] td`).nth(1).getAttribute('title')).toBe(
        hostile('device'),
      );
      expect(await page.locator('[data-testid="rounds"] tr[data-round="7"] td').allTextContents()).toEqual([
        '7',
        hostile('market'),
        grouped(String(big)),
        '3',
      ]);
      // Exact uint256 amounts in the table: no float rounding anywhere between the store and the page.
      const cell = (f: string) => page.locator(`tr[data-channel-id="${channelId}"] td[data-field="${f}"]`);
      expect(await cell('depositDevice').textContent()).toBe(grouped(String(big)));
      expect(await cell('depositHub').textContent()).toBe(grouped(String(2n ** 96n - 1n)));
      expect(await cell('balanceDevice').getAttribute('data-value')).toBe(String(big - 1n));
      expect(await cell('balanceHub').getAttribute('data-value')).toBe(String(2n ** 96n));
      expect(await cell('version').getAttribute('data-value')).toBe(String(big + 2n));
      expect(await page.locator('[data-testid="chain-events"] tr[data-kind="deposit"] td').last().textContent()).toBe(
        `+${grouped(String(big))}`,
      );
      expect(errors).toEqual([]);
      await page.context().close();
    } finally {
      await hub.close();
    }
  });

  it('every dashboard answer carries CSP (frame-ancestors), nosniff, no-store and no CORS grant', async () => {
    const base = w.hub!.httpUrl;
    const origin = { origin: 'https://evil.example' };
    const answers = [
      await fetch(`${base}dashboard`, { headers: origin }),
      await fetch(`${base}dashboard`, { headers: { ...auth, ...origin } }),
      await fetch(`${base}dashboard/app.js`, { headers: { ...auth, ...origin } }),
      await fetch(`${base}api/summary`, { headers: { ...auth, ...origin } }),
      await fetch(`${base}api/channels`, { headers: { ...auth, ...origin } }),
      await fetch(`${base}api/channels?sort=<script>`, { headers: { ...auth, ...origin } }),
      await fetch(`${base}api/nope`, { headers: { ...auth, ...origin } }),
      await fetch(`${base}api/summary`, {
        method: 'OPTIONS',
        headers: {
          ...origin,
          'access-control-request-method': 'GET',
          'access-control-request-headers': 'authorization',
        },
      }),
    ];
    for (const res of answers) {
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toContain("default-src 'none'");
      expect(csp).not.toMatch(/script-src[^;]*(unsafe-inline|unsafe-eval|\*)/);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('cache-control')).toBe('no-store');
      expect(res.headers.get('access-control-allow-origin')).toBeNull();
      expect(res.headers.get('access-control-allow-credentials')).toBeNull();
      await res.arrayBuffer();
    }
    // The reflected sort key is JSON, never HTML.
    expect(answers[5]!.headers.get('content-type')).toBe('application/json');
  });

  it('the bearer scheme is read whatever its case (RFC 9110): a script sending `bearer` is let in with the token, not without', async () => {
    const base = w.hub!.httpUrl;
    for (const scheme of ['Bearer', 'bearer', 'BEARER', 'bEaReR']) {
      const ok = await fetch(`${base}api/summary`, { headers: { authorization: `${scheme} ${TOKEN}` } });
      expect(ok.status, scheme).toBe(200);
      await ok.arrayBuffer();
      const wrong = await fetch(`${base}api/summary`, {
        headers: { authorization: `${scheme} not-the-operator-token` },
      });
      expect(wrong.status, scheme).toBe(401);
      await wrong.arrayBuffer();
    }
    // Another scheme is not ours.
    const basic = await fetch(`${base}api/summary`, { headers: { authorization: `Basic ${TOKEN}` } });
    expect(basic.status).toBe(401);
    await basic.arrayBuffer();
  });

  it('the page’s figures are the hub’s: /api/summary, /api/channels and /metrics agree for a known scenario', async () => {
    const hub = w.hub!;
    const base = hub.httpUrl;
    const channels: ClientChannel[] = [];
    for (const i of [2, 3]) channels.push(await (await w.client(i)).openChannel({ token: w.token, deposit: 1_000n }));
    for (let i = 0; i < 7; i++) await channels[0]!.pay(3n);
    for (let i = 0; i < 4; i++) await channels[1]!.pay(5n);
    await waitFor(() => hub.stats.totalUpdates >= 11, 10_000);
    const page = await signIn(browser, base);
    type Summary = { channels: { total: number; open: number }; totalUpdates: number; connections: number };
    const summary = (await (await fetch(`${base}api/summary`, { headers: auth })).json()) as Summary;
    // /metrics is rendered at most once a second: wait for a render that holds every update.
    let metrics = '';
    for (const until = Date.now() + 10_000; Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
      metrics = await (await fetch(`${base}metrics`)).text();
      if (/^trickle_updates_total\{outcome="accepted"\} (\d+)/m.exec(metrics)?.[1] === String(summary.totalUpdates))
        break;
    }
    const gauge = (name: string) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(metrics)![1]);
    expect(summary.totalUpdates).toBe(hub.stats.totalUpdates);
    expect(summary.channels.total).toBe(gauge('trickle_channels'));
    expect(summary.connections).toBe(gauge('trickle_connections'));
    expect(summary.channels.open).toBe(hub.channels.size);
    // The tiles show the summary (the live stream refreshes it each second).
    const tile = (id: string) => page.locator(`[data-testid="${id}"]`).textContent();
    await page.waitForFunction(
      (n) => document.querySelector('[data-testid="total-updates"]')?.textContent === n,
      summary.totalUpdates.toLocaleString('en'),
    );
    expect(await tile('channels-open')).toBe(String(summary.channels.open));
    expect(await tile('connections')).toBe(String(summary.connections));
    // Each row's balances are deposit − paid + received, exactly the hub's record.
    for (const [ch, paid] of [
      [channels[0]!, 21n],
      [channels[1]!, 20n],
    ] as const) {
      const row = `tr[data-channel-id="${ch.channelId}"]`;
      await page.waitForFunction(
        ({ row, v }) =>
          document.querySelector(`${row} td[data-field="balanceDevice"]`)?.getAttribute('data-value') === v,
        { row, v: String(1_000n - paid) },
      );
      expect(hub.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(paid);
    }
    await page.context().close();
  });

  // Last in this file: before the fix it spent 127.0.0.1's sign-in attempts at this hub.
  it('a page on another site cannot spend the operator’s sign-in attempts by posting the login form (CSRF lockout)', async () => {
    const base = w.hub!.httpUrl;
    const port = new URL(base).port;
    // The attacker's page, on another site (localhost is not 127.0.0.1's site): it posts wrong tokens to the hub's
    // login form from the operator's browser, as many as it likes, in a hidden frame and with no-cors fetches.
    const evil: Server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><body><script>
        (async () => {
          for (let i = 0; i < 15; i++)
            await fetch('http://127.0.0.1:${port}/dashboard/login', {
              method: 'POST', mode: 'no-cors', credentials: 'include',
              headers: { 'content-type': 'application/x-www-form-urlencoded' },
              body: 'token=attacker-guess-number-' + i,
            }).catch(() => {});
          document.title = 'done';
        })();
      </script></body>`);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    try {
      const context = await browser.newContext();
      const attack = await context.newPage();
      await attack.goto(`http://localhost:${(evil.address() as AddressInfo).port}/`);
      await attack.waitForFunction(() => (document as unknown as { title: string }).title === 'done', undefined, {
        timeout: 20_000,
      });
      // The operator, in the same browser, signs in with the right token: it works.
      const page = await context.newPage();
      await page.goto(`${base}dashboard`);
      await page.fill('#token', TOKEN);
      const [res] = await Promise.all([
        page.waitForResponse((r) => r.url() === `${base}dashboard/login`),
        page.click('button[type=submit]'),
      ]);
      expect(res.status()).toBe(303);
      await page.waitForSelector('[data-testid="channels"]');
      await context.close();
    } finally {
      await new Promise((r) => evil.close(r));
    }
  });
});
