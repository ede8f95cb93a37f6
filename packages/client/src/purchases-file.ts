import { mkdir, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { TrickleError, isTrickleError } from '@trickle/protocol/errors';
import type { Receipt } from '@trickle/protocol/receipt';
import type { Bytes32 } from '@trickle/protocol/types';
import { replaceFile, syncDir } from './durable-file.js';
import { processAlive } from './pids.js';
import { decodePurchase, encodePurchase, type PurchaseStore } from './purchases.js';

/** Names of purchase files in `<store>/receipts/`: `<paymentId>.json`. */
const PURCHASE_FILE = /^(0x[0-9a-f]{64})\.json$/;
/** A purchase file being written (`<paymentId>.json.tmp-<pid>-<n>`): left behind by a process that died mid-write. */
const TEMP_FILE = /^0x[0-9a-f]{64}\.json\.tmp-(\d+)-\d+$/;

const failure = (what: string, path: string, cause: unknown): TrickleError =>
  cause instanceof TrickleError
    ? cause
    : new TrickleError('STORE_FAILURE', `cannot ${what} ${path}`, { details: { path }, cause });
/** A `.catch` for deleting or moving `path`: a file already gone is fine, any other error is a {@link failure}. */
const unlessGone =
  (what: string, path: string) =>
  (e: unknown): void => {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw failure(what, path, e);
  };

/**
 * A file store's receipt purchases: one file per purchase in `<dir>/receipts/`, each written atomically (a temporary
 * file written and synced, renamed over, the directory synced) before `savePurchase` resolves. `listPurchases` moves a
 * file it cannot read as a purchase aside (`<name>.damaged-<ms>`) and lists the others.
 */
export function filePurchases(dir: string): PurchaseStore {
  const sub = join(dir, 'receipts');
  const file = (id: Bytes32) => {
    if (!PURCHASE_FILE.test(`${id}.json`))
      throw new TrickleError('INVALID_ARGUMENT', 'a payment id is 0x followed by 64 lowercase hex digits', {
        details: { paymentId: id },
      });
    return join(sub, `${id}.json`);
  };
  let ready: Promise<void> | undefined;
  const ensureDir = () =>
    (ready ??= (async () => {
      const made = await mkdir(sub, { recursive: true });
      if (made !== undefined) await syncDir(dir); // the new directory's entry is durable too
    })().catch((e: unknown) => {
      ready = undefined;
      throw e;
    }));
  let seq = 0;
  return {
    async savePurchase(p) {
      const path = file(p.paymentId);
      try {
        await ensureDir();
        await replaceFile(path, encodePurchase(p), `${path}.tmp-${process.pid}-${seq++}`);
      } catch (e) {
        throw failure('write', path, e);
      }
    },
    async loadPurchase(id) {
      const path = file(id);
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw failure('read', path, e);
      }
      const p = decodePurchase(text);
      // A file renamed or copied under another id would answer for a payment it is not (receiptFor would ask the hub
      // for one id and check the receipt of another).
      if (p.paymentId !== id)
        throw new TrickleError('MALFORMED', `${path} holds the purchase of another payment id`, {
          details: { path, paymentId: p.paymentId },
        });
      return p;
    },
    async listPurchases() {
      let names: string[];
      try {
        names = await readdir(sub);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw failure('read', sub, e);
      }
      const out: Receipt[] = [];
      for (const name of names) {
        const temp = TEMP_FILE.exec(name);
        // Listed when expired purchases are forgotten: a temporary file of a process that died mid-write goes then.
        if (temp && Number(temp[1]) !== process.pid && !processAlive(Number(temp[1]))) {
          await unlink(join(sub, name)).catch(unlessGone('delete', join(sub, name)));
          continue;
        }
        const m = PURCHASE_FILE.exec(name);
        if (!m) continue;
        let p: Receipt | undefined;
        try {
          p = await this.loadPurchase(m[1] as Bytes32);
        } catch (e) {
          if (!isTrickleError(e, 'MALFORMED')) throw e;
          // A damaged file (torn by a disk fault, edited, copied under another id) failed every listing, and with it
          // each expiry sweep and the payForReceipt that ran it, until removed by hand. It is moved aside instead,
          // kept for an operator to look at: the purchases beside it are still listed and swept.
          const from = join(sub, name);
          await rename(from, `${from}.damaged-${Date.now()}`).catch(unlessGone('move aside', from));
          continue;
        }
        if (p) out.push(p);
      }
      return out;
    },
    async forgetPurchase(id) {
      const path = file(id);
      await unlink(path).catch(unlessGone('delete', path));
    },
  };
}
