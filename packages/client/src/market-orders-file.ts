import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TrickleError } from '@trickle/protocol/errors';
import { replaceFile } from './durable-file.js';
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
  let tail: Promise<unknown> = Promise.resolve();
  const write = async (text: string) => {
    try {
      await mkdir(dir, { recursive: true });
      await replaceFile(path, text);
    } catch (e) {
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
