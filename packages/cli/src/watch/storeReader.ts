/**
 * Reads a device's file store (`<channelId>.json` per channel, written atomically by `fileChannelStore`) and hands
 * each record's latest state to the watchtower. Files are re-read only when their size or mtime changed; a corrupt
 * or refused file is logged once per change and does not stop the others.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isTrickleError } from '@trickle/protocol/errors';
import { parseJson } from '@trickle/protocol/json';
import type { StateSubmission } from './submission.js';
import { parseSubmission } from './submission.js';
import type { WatchLogger } from './log.js';

const RECORD_FILE = /^0x[0-9a-f]{64}\.json$/;

/** Codes of refusals that are normal when re-reading a store (nothing new, or not for this watchtower). */
const QUIET = new Set(['STALE_VERSION', 'INVALID_ARGUMENT', 'WRONG_CHANNEL']);
/** Codes of failures on the watchtower's side, worth another try. */
const RETRY = new Set(['STORE_FAILURE', 'LIMIT_EXCEEDED', 'INTERNAL']);

/**
 * A reader of one store directory.
 * @param dir - the device store directory
 * @param add - hands a state to the watchtower (throws a TrickleError when it refuses it)
 * @param log - logger
 * @param maxFiles - most record files read per pass (bounds memory and time)
 * @returns `scan()`, to call periodically; it never throws
 */
export function storeReader(dir: string, add: (s: StateSubmission, source: 'store') => Promise<unknown>, log: WatchLogger, maxFiles: number) {
  const seen = new Map<string, string>();
  return {
    async scan(): Promise<void> {
      let names: string[];
      try {
        names = (await readdir(dir)).filter((n) => RECORD_FILE.test(n)).slice(0, maxFiles);
      } catch (err) {
        if (!seen.has('')) log('warn', 'store-unreadable', { dir, err });
        seen.set('', 'x');
        return;
      }
      seen.delete('');
      for (const name of names) {
        const path = join(dir, name);
        let tag: string;
        try {
          const s = await stat(path);
          tag = `${s.size}:${s.mtimeMs}`;
        } catch {
          continue; // replaced between readdir and stat: next pass
        }
        if (seen.get(name) === tag) continue;
        seen.set(name, tag);
        try {
          await add(parseSubmission(parseJson(await readFile(path, 'utf8'))), 'store');
        } catch (err) {
          const quiet = isTrickleError(err) && QUIET.has(err.code);
          log(quiet ? 'debug' : 'warn', 'store-record-refused', { file: path, err });
          // A refusal of the record itself stands until the file changes; a failure of ours is retried next pass.
          if (isTrickleError(err) && RETRY.has(err.code)) seen.delete(name);
        }
      }
    },
  };
}
