import { existsSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser } from 'playwright-core';
import * as nodeEntry from '@trickle/client';
import * as browserEntry from '@trickle/client/browser';
import { encodeChannelRecord } from '@trickle/client/store';
import { bundleClient } from '../bench/lib/bundle.mjs';
import { createWorld, type World } from './helpers/harness.js';
import { startSilentRelay } from './helpers/silent-relay.js';

/** What `@trickle/client` exports in Node and a browser imports on its own: the market (`@trickle/client/market`). */
const OPT_IN = ['MarketSession'];
/** What `@trickle/client` exports in Node only: the file store (node:fs) and the chain helper (ethers). */
const NODE_ONLY = [
  'fileChannelStore',
  'decodeChannelFile',
  'readChannelRecordFile',
  'CHANNEL_RECORD_FILE',
  'CHANNEL_FILE_SUFFIX',
  'LEGACY_CHANNEL_FILE_SUFFIX',
  'adjudicatorClientChain',
];
const CHROMIUM = '/usr/bin/chromium';

/**
 * The device client in a browser (functional, not timed): the package's browser entry bundles for
 * `platform: 'browser'` without a single Node built-in, exports all of the Node entry but its Node-only parts, and,
 * loaded in headless Chromium, resumes a channel and pays a real hub over a real WebSocket.
 */
describe('the device client bundled for a browser', () => {
  it('bundles with esbuild for the browser without importing any Node built-in', async () => {
    const b = await bundleClient();
    expect(b.nodeImports).toEqual([]);
    expect(b.inputs.some((i) => i.file.includes('client/dist/browser.js'))).toBe(true);
    // no chain part, no native backends, no hub rules of the channel engine, no Node socket (`ws`)
    expect(
      b.inputs.filter((i) =>
        /ethers|client\/dist\/chain\.js|client\/dist\/store\.js|protocol\/dist\/native\.js|protocol\/dist\/engine-hub\.js|client\/dist\/socket-node\.js|(^|\/)ws\//.test(
          i.file,
        ),
      ),
    ).toEqual([]);
    // nor SHA-256 and HMAC: the client only recovers signers with noble (it signs with the Signer its app gives it),
    // and noble needs those hashes only to sign (nobleSigner sets them up when called)
    expect(b.inputs.filter((i) => /@noble\/hashes\/(sha2|hmac|_md)\.js/.test(i.file))).toEqual([]);
    // nor the market, unless the app imports it (`@trickle/client/market`)
    expect(b.inputs.filter((i) => /client\/dist\/market\.js|@trickle\/market|packages\/market\//.test(i.file))).toEqual(
      [],
    );
    // nor the wire spec's prose (MESSAGE_MEANINGS, SCALAR_KINDS): the codec reads only the schema's tables
    expect(b.code).not.toContain('first frame on every connection');
    expect(b.code).not.toContain('any MessagePack integer width');
  });

  it('the browser entry exports everything the Node entry does except the Node-only parts', () => {
    const missing = Object.keys(nodeEntry).filter(
      (k) => !(k in browserEntry) && !NODE_ONLY.includes(k) && !OPT_IN.includes(k),
    );
    expect(missing).toEqual([]);
    expect(Object.keys(browserEntry).filter((k) => OPT_IN.includes(k))).toEqual([]);
    expect(Object.keys(browserEntry).filter((k) => NODE_ONLY.includes(k))).toEqual([]);
  });

  describe.skipIf(!existsSync(CHROMIUM))('in headless Chromium', () => {
    let w: World;
    let browser: Browser;
    beforeAll(async () => {
      w = await createWorld({ accounts: 4 });
      await w.startHub();
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    });
    afterAll(async () => {
      await browser?.close();
      await w?.close();
    });

    it('resumes a channel from its record and pays the hub', async () => {
      // The channel is opened on-chain from Node (a browser app would bring its own ClientChain), then handed over.
      const c = await w.client(2);
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await ch.pay(7n);
      await c.disconnect();
      const record = encodeChannelRecord(await storeRecord(ch.channelId));
      const b = await bundleClient({
        contents:
          "import * as T from '@trickle/client'; import { MarketSession } from '@trickle/client/market'; import { nobleSigner } from '@trickle/protocol/signer'; globalThis.Trickle = { ...T, MarketSession, nobleSigner };",
      });
      expect(b.nodeImports).toEqual([]);
      // Served from loopback like the hub (Chromium refuses a page from nowhere opening a socket to a local address).
      const site = createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(`<!doctype html><script type="module">${b.code.replaceAll('</script', '<\\/script')}</script>`);
      });
      await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(String(e)));
      await page.goto(`http://127.0.0.1:${(site.address() as AddressInfo).port}/`);
      await page.waitForFunction(() => 'Trickle' in globalThis);
      const paid = await page.evaluate(
        async ({ url, key, record, channelId }) => {
          // eslint-disable-next-line @typescript-eslint/no-explicit-any
          const T = (globalThis as any).Trickle;
          const store = T.memoryChannelStore();
          await store.save(T.decodeChannelRecord(record));
          // Without the market option a browser client has none (it is opt-in there)...
          const client = await T.TrickleClient.connect({ url, signer: T.nobleSigner(key), store });
          let noMarket = '';
          try {
            void client.market;
          } catch (e) {
            noMarket = (e as { code: string }).code;
          }
          const channel = client.channel(channelId);
          await channel.pay(5n);
          await client.disconnect();
          // ...and with it, one.
          const trader = await T.TrickleClient.connect({
            url,
            signer: T.nobleSigner(key),
            store,
            market: T.MarketSession,
          });
          const round = typeof trader.market.round;
          await trader.channel(channelId).pay(6n);
          const total = String(trader.channel(channelId).latest.state.paidByDevice);
          await trader.disconnect();
          return `${noMarket} ${round} ${total}`;
        },
        { url: w.hub!.url, key: w.chain.accounts[2]!, record, channelId: ch.channelId },
      );
      site.close();
      expect(errors).toEqual([]);
      expect(paid).toBe('INVALID_ARGUMENT bigint 18');
      expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(18n);
    }, 60_000);

    it('detects a hub gone silent after the handshake (a ping frame unanswered), dials again and pays', async () => {
      const c = await w.client(3);
      const ch = await c.openChannel({ token: w.token, deposit: 1_000_000n });
      await c.disconnect();
      const record = encodeChannelRecord(await storeRecord(ch.channelId, 3));
      const b = await bundleClient({
        contents:
          "import * as T from '@trickle/client'; import { nobleSigner } from '@trickle/protocol/signer'; globalThis.Trickle = { ...T, nobleSigner };",
      });
      const site = createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end(`<!doctype html><script type="module">${b.code.replaceAll('</script', '<\\/script')}</script>`);
      });
      await new Promise<void>((r) => site.listen(0, '127.0.0.1', r));
      const relay = await startSilentRelay(w.hub!.url);
      const page = await browser.newPage();
      try {
        const errors: string[] = [];
        page.on('pageerror', (e) => errors.push(String(e)));
        await page.goto(`http://127.0.0.1:${(site.address() as AddressInfo).port}/`);
        await page.waitForFunction(() => 'Trickle' in globalThis);
        await page.evaluate(
          async ({ url, key, record, channelId }) => {
            // eslint-disable-next-line @typescript-eslint/no-explicit-any
            const g = globalThis as any;
            const T = g.Trickle;
            const store = T.memoryChannelStore();
            await store.save(T.decodeChannelRecord(record));
            g.client = await T.TrickleClient.connect({
              url,
              signer: T.nobleSigner(key),
              store,
              livenessTimeoutMs: 1_000,
              reconnect: { initialDelayMs: 20, maxDelayMs: 200 },
            });
            g.channel = g.client.channel(channelId);
            await g.channel.pay(5n);
          },
          { url: relay.url, key: w.chain.accounts[3]!, record, channelId: ch.channelId },
        );
        // Idle and alive: the page's ping frames are answered, the one socket stays up.
        const idle = relay.accepted;
        await new Promise((r) => setTimeout(r, 2_500));
        expect(relay.accepted).toBe(idle);
        relay.silenceHub();
        const paid = await page.evaluate(async () => {
          // eslint-disable-next-line @typescript-eslint/no-explicit-any
          const g = globalThis as any;
          const pay = g.channel.pay(7n).then(() => String(g.channel.latest.state.paidByDevice));
          // Without a probe the page hears nothing on the silent socket and the payment waits for ever.
          const outcome = await Promise.race([pay, new Promise((r) => setTimeout(() => r('pending'), 15_000))]);
          await g.client.disconnect();
          return outcome;
        });
        expect(errors).toEqual([]);
        expect(paid).toBe('12');
        expect(relay.accepted).toBeGreaterThan(idle);
        expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(12n);
      } finally {
        await page.close();
        await relay.close();
        site.close();
      }
    }, 60_000);

    async function storeRecord(channelId: string, device = 2): Promise<nodeEntry.DeviceChannelRecord> {
      const { fileChannelStore } = nodeEntry;
      const r = await fileChannelStore(`${w.dir}/device-${device}`).load(channelId as never);
      if (!r) throw new Error('no record');
      return r;
    }
  });
});
