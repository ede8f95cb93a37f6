import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { pino } from 'pino';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { nativeSigner } from '@trickle/protocol/native';
import { NO_LOCKS } from '@trickle/protocol/types';
import { createHub } from '@trickle/hub/hub';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { adjudicatorHubChain } from '@trickle/hub/chain-watcher';
import type { ChannelRecord } from '@trickle/hub';
import type { ClientChannel } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

// The browser's `document`, for the functions Playwright runs in the page (test/ compiles without the DOM lib).
interface PageElement {
  readonly textContent: string | null;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
}
declare const document: {
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): { readonly length: number };
};

const TOKEN = 'operator-token-for-the-dashboard-test';
const repo = fileURLToPath(new URL('..', import.meta.url));

/**
 * The operator dashboard in a real headless Chromium, against a hub with streaming devices, a market and the
 * liquidity policy: the token is required (401 without it, never taken from the URL), the page shows the channels,
 * its numbers move while payments flow and settle on the hub's own state, and it loads nothing from anywhere else.
 */
describe('operator dashboard in headless Chromium', () => {
  let w: World;
  let browser: Browser;
  const channels: ClientChannel[] = [];

  beforeAll(async () => {
    // The page's bundle (uPlot included) is built by `npm run build`; build it here too so this file runs alone.
    execFileSync(process.execPath, [join(repo, 'packages/hub/scripts/build-dashboard.mjs')], { stdio: 'ignore' });
    w = await createWorld();
    await w.startHub({
      market: { roundMs: 1000, feeBps: 0n },
      more: { dashboard: { token: TOKEN }, liquidity: { autoDeposit: 2_000_000n, budget: 10_000_000n } },
    });
    for (const i of [2, 3]) {
      const c = await w.client(i);
      channels.push(await c.openChannel({ token: w.token, deposit: 50_000_000n }));
    }
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  });
  afterAll(async () => {
    await browser?.close();
    await w?.close();
  });

  it('refuses requests without the operator token, and takes it only from the header or the login cookie', async () => {
    const base = w.hub!.httpUrl;
    expect((await fetch(`${base}dashboard`)).status).toBe(401);
    expect((await fetch(`${base}api/summary`)).status).toBe(401);
    expect((await fetch(`${base}api/channels?token=${TOKEN}`)).status).toBe(401);
    expect(
      (await fetch(`${base}api/channels`, { headers: { authorization: 'Bearer wrong-token-wrong-token' } })).status,
    ).toBe(401);
    expect((await fetch(`${base}dashboard/app.js`)).status).toBe(401);
    const res = await fetch(`${base}api/channels?sort=version&order=desc`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(res.status).toBe(200);
    const page = (await res.json()) as { total: number; rows: { channelId: string }[] };
    expect(page.total).toBe(2);
    expect(page.rows.map((r) => r.channelId).sort()).toEqual(channels.map((c) => c.channelId).sort());
    const bad = await fetch(`${base}api/channels?sort=nope`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: string }).error).toBe('INVALID_ARGUMENT');
  });

  it('shows the channels, moves while payments stream, and settles on the hub’s own numbers', async () => {
    const hub = w.hub!;
    const base = hub.httpUrl;
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
    const page = await context.newPage();
    const foreign: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(base)) foreign.push(r.url());
    });

    const first = await page.goto(`${base}dashboard`);
    expect(first!.status()).toBe(401);
    await page.fill('#token', TOKEN);
    await Promise.all([page.waitForURL(`${base}dashboard`), page.click('button[type=submit]')]);
    await page.waitForSelector('tr[data-channel-id]');
    expect(await page.locator('tr[data-channel-id]').count()).toBe(2);
    expect(await page.locator('.uplot').count()).toBe(2); // the charts rendered (uPlot, bundled)

    // The liquidity policy topped up the hub's side of both new channels; the page shows it.
    await waitFor(() => channels.every((c) => hub.channels.get(c.channelId)!.funding.hub === 2_000_000n), 20_000);

    const [a, b] = channels as [ClientChannel, ClientChannel];
    const cell = (id: string, field: string) =>
      page.locator(`tr[data-channel-id="${id}"] td[data-field="${field}"]`).getAttribute('data-value');
    const before = BigInt((await cell(a.channelId, 'version')) ?? '0');

    // Stream payments from both devices, and trade one round on the market, while the page is open.
    let streaming = true;
    const stream = async (ch: ClientChannel) => {
      const pending: Promise<unknown>[] = [];
      while (streaming) {
        pending.push(ch.pay(3n));
        if (pending.length >= 20) await Promise.all(pending.splice(0));
        await new Promise((r) => setTimeout(r, 2));
      }
      await Promise.all(pending);
    };
    const streams = [stream(a), stream(b)];
    // A buyer and a seller trade in one market round: the page lists its clearing price and quantity.
    const [buyer, seller] = await Promise.all([w.client(4), w.client(5)]);
    const [cbuy, csell] = await Promise.all([
      buyer.openChannel({ token: w.token, deposit: 10_000_000n }),
      seller.openChannel({ token: w.token, deposit: 10_000_000n }),
    ]);
    const round = (await buyer.market.nextRound()) + 1n; // the next round: no race with the open one's close
    await Promise.all([
      buyer.market.submitOrder(cbuy, { market: 'kwh', side: 'bid', quantity: 4n, price: 1_300n, round }),
      seller.market.submitOrder(csell, { market: 'kwh', side: 'ask', quantity: 3n, price: 1_100n, round }),
    ]);

    // Numbers move: the version the page shows for channel a rises while the stream runs.
    let moved = before;
    const until = Date.now() + 15_000;
    while (moved <= before + 10n && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      moved = BigInt((await cell(a.channelId, 'version')) ?? '0');
    }
    expect(moved).toBeGreaterThan(before + 10n);
    await page.waitForFunction(
      () => Number(document.querySelector('[data-testid="total-updates"]')?.textContent?.replace(/,/g, '')) > 10,
    );
    await page.waitForFunction(() => document.querySelector('[data-testid="ack-p50"]')?.textContent !== '—');

    streaming = false;
    await Promise.all(streams);

    // Once payments stop, what the page shows is exactly the hub's state (within a couple of SSE ticks).
    for (const ch of channels) {
      const record = hub.channels.get(ch.channelId)!;
      const s = record.latest.state;
      const expected = {
        version: String(s.version),
        balanceDevice: String(record.funding.device - s.paidByDevice + s.paidByHub),
        balanceHub: String(record.funding.hub - s.paidByHub + s.paidByDevice),
      };
      expect(s.paidByDevice).toBe(ch.latest.state.paidByDevice);
      await page.waitForFunction(
        ({ id, e }) => {
          const row = document.querySelector(`tr[data-channel-id="${id}"]`);
          const v = (f: string) => row?.querySelector(`td[data-field="${f}"]`)?.getAttribute('data-value');
          return (
            v('version') === e.version && v('balanceDevice') === e.balanceDevice && v('balanceHub') === e.balanceHub
          );
        },
        { id: ch.channelId, e: expected },
        { timeout: 10_000 },
      );
    }
    // The liquidity deposits are listed as chain events (one per channel), the round with its clearing.
    await page.waitForFunction(
      () => document.querySelectorAll('[data-testid="chain-events"] tr[data-kind="deposit"]').length === 4,
    );
    await page.waitForSelector(`[data-testid="rounds"] tr[data-round="${round}"]`);
    const clearing = hub.stats.rounds.find((r) => r.round === String(round))!;
    expect(clearing.markets).toMatchObject([{ market: 'kwh', quantity: '3' }]);
    const price = BigInt(clearing.markets[0]!.price!);
    expect(price >= 1_100n && price <= 1_300n).toBe(true);
    const grouped = String(price).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    expect(await page.locator(`[data-testid="rounds"] tr[data-round="${round}"] td`).allTextContents()).toEqual([
      String(round),
      'kwh',
      grouped,
      '3',
    ]);
    // A device force-closes with a stale state: the hub challenges, the channel settles; the page lists each step.
    const cheater = await w.client(6);
    const xch = await cheater.openChannel({ token: w.token, deposit: 1_000_000n });
    await xch.pay(10n);
    const stale = xch.latest;
    await xch.pay(20n);
    await new Adjudicator(w.adjudicator, w.chain.wallet(6)).forceClose(stale);
    await waitFor(
      () => hub.stats.events.some((e) => e.kind === 'challengeSent' && e.channelId === xch.channelId),
      20_000,
    );
    await w.chain.increaseTime(3_601);
    await new Adjudicator(w.adjudicator, w.chain.wallet(0)).settle(xch.channelId);
    for (const kind of ['forceClosed', 'challenged', 'challengeSent', 'closed']) {
      await page.waitForSelector(`[data-testid="chain-events"] tr[data-kind="${kind}"]`, { timeout: 20_000 });
    }
    expect(hub.stats.events.find((e) => e.kind === 'forceClosed' && e.channelId === xch.channelId)).toMatchObject({
      version: String(stale.state.version),
      by: w.chain.addresses[6],
    });
    await page.waitForFunction(
      (id) => document.querySelector(`tr[data-channel-id="${id}"] td[data-field="status"]`)?.textContent === 'closed',
      xch.channelId,
    );

    // Sorting is done by the server: version ascending puts the channel with fewer updates first.
    await page.click('th[data-sort="version"]'); // desc
    await page.click('th[data-sort="version"]'); // asc
    await page.waitForFunction(() => document.querySelector('th[data-sort="version"]')?.textContent?.endsWith('▲'));
    const versions = await page
      .locator('td[data-field="version"]')
      .evaluateAll((tds) => tds.map((td) => BigInt(td.getAttribute('data-value')!)));
    expect(versions).toEqual([...versions].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)));

    expect(foreign).toEqual([]); // nothing from a CDN or any other origin
    const shot = join(w.dir, 'dashboard.png');
    await page.screenshot({ path: shot });
    expect(statSync(shot).size).toBeGreaterThan(10_000);
    // `TRICKLE_UPDATE_SCREENSHOT=1` refreshes the README's screenshot from this run.
    if (process.env['TRICKLE_UPDATE_SCREENSHOT'] === '1')
      await page.screenshot({ path: join(repo, 'docs/dashboard.png') });
    await context.close();
  });

  it('counts a channel whose final state both signed as final, not open, until its close is mined', async () => {
    const summary = async () =>
      (
        (await (
          await fetch(`${w.hub!.httpUrl}api/summary`, { headers: { authorization: `Bearer ${TOKEN}` } })
        ).json()) as { channels: { total: number; open: number; final: number; closing: number; closed: number } }
      ).channels;
    const c = await w.client(4);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
    const before = await summary();
    await ch.closeCooperative(); // signed by both, not yet sent on-chain
    const after = await summary();
    expect(after).toMatchObject({ total: before.total, open: before.open - 1, final: before.final + 1 });
    const row = (await (
      await fetch(`${w.hub!.httpUrl}api/channels?q=${ch.channelId}`, { headers: { authorization: `Bearer ${TOKEN}` } })
    ).json()) as { rows: { status: string }[] };
    expect(row.rows.map((r) => r.status)).toEqual(['final']);
  });

  it('pages 10,000 channels: the hub sorts and pages them, the page shows one page at a time', async () => {
    const hex = (n: number, bytes: number) => `0x${n.toString(16).padStart(bytes * 2, '0')}`;
    const hubAddress = w.hub!.address;
    const record = (i: number): ChannelRecord => {
      const channelId = hex(0xc0000 + i, 32);
      return {
        params: {
          chainId: w.chain.chainId,
          adjudicator: w.adjudicator,
          device: hex(0xd0000 + i, 20),
          hub: hubAddress,
          token: w.token,
          challengeDuration: 3600n,
          salt: hex(i, 32),
        },
        channelId,
        funding: { device: 1_000_000n, hub: BigInt(i % 7) * 1_000n },
        status: 'open',
        latest: {
          state: {
            channelId,
            version: BigInt((i * 7919) % 10_007),
            paidByDevice: BigInt(i),
            paidByHub: 0n,
            round: 0n,
            ...NO_LOCKS,
            isFinal: false,
          },
        },
        hubSignedVersion: 0n,
      } as unknown as ChannelRecord;
    };
    const path = join(w.dir, 'ten-thousand');
    const seed = openLmdbStore({ path });
    const records = Array.from({ length: 10_000 }, (_, i) => record(i));
    await seed.commit(records.map((r) => ({ kind: 'channel' as const, record: r })));
    await seed.close();
    const big = await createHub({
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
      expect(big.channels.size).toBe(10_000);
      const context = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
      const page = await context.newPage();
      await page.goto(`${big.httpUrl}dashboard`);
      await page.fill('#token', TOKEN);
      await Promise.all([page.waitForURL(`${big.httpUrl}dashboard`), page.click('button[type=submit]')]);
      await page.waitForFunction(() =>
        document.querySelector('[data-testid="page"]')?.textContent?.includes('page 1 of 400 · 10,000 channels'),
      );
      expect(await page.locator('tr[data-channel-id]').count()).toBe(25);

      // Version, highest first: the first row is the highest version of all 10,000.
      await page.click('th[data-sort="version"]');
      await page.waitForFunction(() => document.querySelector('th[data-sort="version"]')?.textContent?.endsWith('▼'));
      const top = records.reduce((m, r) => (r.latest.state.version > m ? r.latest.state.version : m), 0n);
      await page.waitForFunction(
        (v) => document.querySelector('tr[data-channel-id] td[data-field="version"]')?.getAttribute('data-value') === v,
        String(top),
      );

      // The next page continues the order; a filter finds one device among 10,000.
      const lastOnFirst = BigInt(
        (await page.locator('tr[data-channel-id] td[data-field="version"]').last().getAttribute('data-value'))!,
      );
      await page.click('text=Next ›');
      await page.waitForFunction(() =>
        document.querySelector('[data-testid="page"]')?.textContent?.includes('page 2 of 400'),
      );
      const firstOnSecond = BigInt(
        (await page.locator('tr[data-channel-id] td[data-field="version"]').first().getAttribute('data-value'))!,
      );
      expect(firstOnSecond <= lastOnFirst).toBe(true);
      const wanted = records[4_321]!;
      await page.fill('[data-testid="filter"]', wanted.params.device);
      await page.waitForFunction(
        (id) =>
          document.querySelectorAll('tr[data-channel-id]').length === 1 &&
          document.querySelector(`tr[data-channel-id="${id}"]`) !== null,
        wanted.channelId,
      );
      await context.close();
    } finally {
      await big.close();
    }
  });

  // Last in this file: it spends 127.0.0.1's sign-in attempts at this hub (the tests above sign in from there).
  it('wrong tokens in the login form: the page says to try again later (429, Retry-After), the right token too', async () => {
    const base = w.hub!.httpUrl;
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}dashboard`);
    const statuses: number[] = [];
    const started = Date.now();
    for (let i = 0; i < 30 && statuses.at(-1) !== 429; i++) {
      await page.fill('#token', `not-the-operator-token-${i}`);
      const [res] = await Promise.all([
        page.waitForResponse((r) => r.url() === `${base}dashboard/login`),
        page.click('button[type=submit]'),
      ]);
      statuses.push(res.status());
      if (res.status() === 429) expect(Number(await res.headerValue('retry-after'))).toBeGreaterThan(0);
    }
    // before: 401 and the login form again, for ever (the first test above spent one attempt with a wrong bearer)
    expect(statuses.slice(0, 9).every((s) => s === 401)).toBe(true);
    expect(statuses.at(-1)).toBe(429);
    // 10 at once, then one more every 6 s: a slow machine's attempts earn a few back while they are made.
    expect(statuses.length).toBeLessThanOrEqual(11 + Math.ceil((Date.now() - started) / 6_000));
    expect(await page.locator('[role="alert"]').textContent()).toMatch(/try again in \d+ s/);
    await page.fill('#token', TOKEN);
    const [res] = await Promise.all([
      page.waitForResponse((r) => r.url() === `${base}dashboard/login`),
      page.click('button[type=submit]'),
    ]);
    expect(res.status()).toBe(429);
    await context.close();
  });
});
