import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TrickleError } from '@trickle/protocol/errors';
import { decodeMarketOrders, encodeMarketOrders, type MarketOrderStore } from './market-orders.js';

/** The file of a store directory that holds the device's market orders not settled yet. */
export const MARKET_ORDERS_FILE = 'market.json';

const failure = (what: string, path: string, cause: unknown): TrickleError =>
  new TrickleError('STORE_FAILURE', `cannot ${what} ${path}`, { details: { path }, cause });

/**
 * A file store's market orders: `<dir>/market.json`, replaced atomically on each save (a temporary file written and
 * synced, renamed over, the directory synced) before `saveOrders` resolves. Saves run one at a time, in call order.
 */
export function fileMarketOrders(dir: string): MarketOrderStore {
  const path = join(dir, MARKET_ORDERS_FILE);
  let seq = 0;
  let tail: Promise<unknown> = Promise.resolve();
  const write = async (text: string) => {
    const tmp = join(dir, `.${MARKET_ORDERS_FILE}.${process.pid}.${seq++}.tmp`);
    try {
      await mkdir(dir, { recursive: true });
      const fh = await open(tmp, 'wx', 0o600);
      try {
        await fh.writeFile(text);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
      const d = await open(dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    } catch (e) {
      await unlink(tmp).catch((u: unknown) => {
        if ((u as NodeJS.ErrnoException).code !== 'ENOENT') throw failure('write', path, e);
      });
      throw failure('write', path, e);
    }
  };
  return {
    async loadOrders() {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw failure('read', path, e);
      }
      return decodeMarketOrders(text);
    },
    saveOrders(orders) {
      const text = encodeMarketOrders(orders);
      const run = tail.then(() => write(text));
      tail = run.catch(() => undefined); // the next save runs after a failed one; this one's caller gets the failure
      return run;
    },
  };
}
