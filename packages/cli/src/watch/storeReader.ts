/**
 * Reads a device's file store (one `<channelId>.channel` file per channel as `fileChannelStore` writes it, or a
 * `<channelId>.json` file of the earlier format) and hands each record's latest state to the watchtower. Files are
 * parsed by the device SDK's `readChannelRecordFile`, never here. A file is re-read only when its inode, size or
 * mtime changed, or while its mtime is recent (see {@link RACY_MS}); a record is handed over only when its latest
 * state differs from the one handed over last. A corrupt or refused file is logged once per change and does not
 * stop the others. A record refused for a reason that may pass (the watchtower's node does not show the channel yet,
 * the chain could not be read, the watchtower's database failed) is handed over again on later passes, after 1, 2, 4…
 * up to {@link MAX_RETRY_PASSES} passes, until it is taken or the file changes. Every file whose record is not
 * watched for a reason other than "nothing new" or "not for this watchtower" (corrupt, a newer format, a lock list that
 * does not match, a bad signature, not taken yet) is listed in `refused` until a pass takes it or it goes away. A record
 * of another chain or adjudicator is not refused (a store may hold records of several deployments) but counted in
 * `foreign`; when the store holds records and every one is such (`onlyForeign`: a watchtower started with the wrong
 * adjudicator, chain id or RPC), one `store-records-foreign` warning names the watched and one record's chain and
 * adjudicator, once until a record is watched again or the store holds none. A directory that cannot be listed
 * (removed, renamed, no permission) is logged once
 * (`store-unreadable`) and reported by `unreadable` until a pass lists it again (`store-readable`); the reader keeps
 * trying every pass.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CHANNEL_RECORD_FILE, readChannelRecordFile } from '@trickle/client/store';
import { isTrickleError, TrickleError } from '@trickle/protocol/errors';
import { stringifyJson } from '@trickle/protocol/json';
import type { StateSubmission } from './submission.js';
import { parseSubmission } from './submission.js';
import type { WatchLogger } from './log.js';

/**
 * A file whose mtime is less than this old (ms) when a pass starts is read again on the next pass even if its tag
 * has not changed. The device overwrites a slot in place: the size stays the same, and the kernel sets the mtime
 * when the write starts, so a read racing the write can see the new mtime with the previous record (the slot being
 * written fails its checksum); two saves may also share one mtime on file systems with coarse timestamps (up to
 * 1–2 s on some). Once the mtime is older than this, the content read is the content of that mtime.
 */
export const RACY_MS = 2_000;

/**
 * Codes of refusals that are normal when re-reading a store (nothing new, or not for this watchtower): not in
 * `refused`. WRONG_CHANNEL here is a channel of another chain or adjudicator (one not opened yet may pass: `mayPass`).
 */
const QUIET = new Set(['STALE_VERSION', 'INVALID_ARGUMENT', 'WRONG_CHANNEL']);
/** A refusal of a record of another chain or adjudicator (not one whose channel the node does not show yet). */
function isForeign(err: unknown): err is TrickleError {
  return isTrickleError(err) && err.code === 'WRONG_CHANNEL' && err.details['onChain'] === undefined;
}
/** Codes of failures on the watchtower's side, worth another try. */
const RETRY = new Set(['STORE_FAILURE', 'LIMIT_EXCEEDED', 'INTERNAL']);
/** Most passes between two tries of a refused record that may pass (over 5 minutes at the default `storePollMs`). */
export const MAX_RETRY_PASSES = 64;

/**
 * Whether a refusal may pass by itself: a failure on the watchtower's side, or a channel its node reads as never
 * opened — a node that lags (a load-balanced endpoint) reads a channel opened a moment ago so, and the device that
 * wrote the record may have gone offline since, never to write it again.
 */
function mayPass(err: unknown): boolean {
  if (!isTrickleError(err)) return true;
  return RETRY.has(err.code) || (err.code === 'WRONG_CHANNEL' && err.details['onChain'] === 'none');
}

/** What the reader remembers of a file. */
interface Seen {
  /** `ino:size:mtimeMs` when it was last read. */
  readonly tag: string;
  /** Whether that mtime was older than {@link RACY_MS} when read (the file need not be read again until it changes). */
  readonly settled: boolean;
  /** The latest state handed over (or the failure logged) from it last: the same one is not handed over twice. */
  readonly key: string;
  /** A refusal that may pass: how many tries so far, and the pass from which it is handed over again. */
  readonly retry?: { readonly tries: number; readonly at: number } | undefined;
}

/** A store file whose record the watchtower does not watch (see {@link storeReader}'s `refused`). */
export interface StoreRefusal {
  readonly file: string;
  /** The refusal's code (`MALFORMED`, `BAD_SIGNATURE`, `WRONG_CHANNEL`…), or the read's (`EACCES`…). */
  readonly code: string;
  readonly message: string;
}

/** Node's error code of a failed file-system call (its message when it has none). */
function fsCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : err instanceof Error ? err.message : String(err);
}

/**
 * Check that a device store directory can be listed: a watchtower given a path that does not exist (a typo) would
 * otherwise run watching nothing from it.
 * @param dir - the device store directory
 * @throws TrickleError `INVALID_ARGUMENT` naming `dir` (details `{ storeDir, reason }`: `ENOENT`, `ENOTDIR`, `EACCES`…)
 */
export async function checkStoreDir(dir: string): Promise<void> {
  try {
    await readdir(dir);
  } catch (err) {
    const reason = fsCode(err);
    const what =
      reason === 'ENOENT'
        ? 'does not exist'
        : reason === 'ENOTDIR'
          ? 'is not a directory'
          : `cannot be read (${reason})`;
    throw new TrickleError('INVALID_ARGUMENT', `the store directory ${dir} ${what}`, {
      details: { storeDir: dir, reason },
      cause: err,
    });
  }
}

/**
 * A reader of one store directory.
 * @param dir - the device store directory
 * @param add - hands a state to the watchtower (throws a TrickleError when it refuses it)
 * @param log - logger
 * @param maxFiles - most channels read per pass (bounds memory and time)
 * @param racyMs - see {@link RACY_MS} (tests only)
 * @returns `scan()`, to call periodically (it never throws), `unreadable`: why the last pass could not list `dir`
 *   (an error code such as `ENOENT`), undefined when it could, `refused`: the files whose record is refused,
 *   `foreign`: how many files hold a record of another chain or adjudicator, and `onlyForeign`: whether the store holds
 *   records and all of them are such
 */
export function storeReader(
  dir: string,
  add: (s: StateSubmission, source: 'store') => Promise<unknown>,
  log: WatchLogger,
  maxFiles: number,
  racyMs = RACY_MS,
) {
  const seen = new Map<string, Seen>();
  let unreadable: string | undefined;
  let pass = 0;
  /** By file name. */
  const refused = new Map<string, StoreRefusal>();
  /** By file name: the refusal's details (`submitted`, `watched`) of a record of another chain or adjudicator. */
  const foreign = new Map<string, Record<string, unknown>>();
  let listedCount = 0;
  let warnedForeign = false;
  /** Whether the last listing held records and every one is of another chain or adjudicator. */
  const onlyForeign = () => listedCount > 0 && foreign.size === listedCount;
  const refuse = (name: string, file: string, err: unknown) =>
    refused.set(name, {
      file,
      code: isTrickleError(err) ? err.code : fsCode(err),
      message: err instanceof Error ? err.message : String(err),
    });
  return {
    get unreadable(): string | undefined {
      return unreadable;
    },
    get refused(): StoreRefusal[] {
      return [...refused.values()];
    },
    get foreign(): number {
      return foreign.size;
    },
    get onlyForeign(): boolean {
      return unreadable === undefined && onlyForeign();
    },
    async scan(): Promise<void> {
      const started = Date.now();
      pass++;
      let names: string[];
      try {
        names = await readdir(dir);
      } catch (err) {
        if (unreadable === undefined) log('warn', 'store-unreadable', { dir, err });
        unreadable = fsCode(err);
        return;
      }
      if (unreadable !== undefined) log('info', 'store-readable', { dir });
      unreadable = undefined;
      // One file per channel: the `.channel` file when a migration left a `.json` file next to it.
      const byChannel = new Map<string, string>();
      for (const name of names) {
        const m = CHANNEL_RECORD_FILE.exec(name);
        if (m && (m[2] === 'channel' || !byChannel.has(m[1]!))) byChannel.set(m[1]!, name);
      }
      const files = [...byChannel.values()].slice(0, maxFiles);
      const listed = new Set(files);
      for (const name of seen.keys()) if (!listed.has(name)) seen.delete(name);
      for (const name of refused.keys()) if (!listed.has(name)) refused.delete(name);
      for (const name of foreign.keys()) if (!listed.has(name)) foreign.delete(name);
      listedCount = files.length;
      for (const name of files) {
        const path = join(dir, name);
        let tag: string;
        let settled: boolean;
        try {
          const s = await stat(path);
          tag = `${s.ino}:${s.size}:${s.mtimeMs}`;
          settled = s.mtimeMs < started - racyMs;
        } catch {
          continue; // replaced or removed between readdir and stat: next pass
        }
        const prev = seen.get(name);
        const retry = prev?.retry !== undefined && pass >= prev.retry.at;
        if (prev?.tag === tag && prev.settled && !retry) continue;
        let submission: StateSubmission;
        try {
          submission = parseSubmission(await readChannelRecordFile(path));
        } catch (err) {
          foreign.delete(name);
          const key = `unreadable:${tag}`;
          if (prev?.key !== key) log('warn', 'store-record-refused', { file: path, err });
          seen.set(name, { tag, settled, key });
          refuse(name, path, err);
          continue;
        }
        // A claim adds a preimage to the record without a new state: that is news for the watchtower too; so is a lock
        // list written again (one that did not match the state was refused).
        const key = stringifyJson([submission.latest, submission.locks ?? [], submission.preimages ?? []]);
        const again = prev?.key === key;
        if (again && !retry) {
          // Re-read while racy, or rewritten with the same latest state: handed over already (or when its retry is due).
          seen.set(name, { tag, settled, key, retry: prev.retry });
          continue;
        }
        seen.set(name, { tag, settled, key });
        foreign.delete(name);
        try {
          await add(submission, 'store');
          refused.delete(name);
        } catch (err) {
          if (mayPass(err)) {
            refuse(name, path, err);
            const tries = (again ? (prev.retry?.tries ?? 0) : 0) + 1;
            const wait = Math.min(MAX_RETRY_PASSES, 2 ** (tries - 1));
            seen.set(name, { tag, settled, key, retry: { tries, at: pass + wait } });
            log(tries === 1 ? 'warn' : 'debug', 'store-record-refused', {
              file: path,
              err,
              tries,
              retryInPasses: wait,
            });
            continue;
          }
          // A refusal of the record itself stands until the file changes.
          const quiet = isTrickleError(err) && QUIET.has(err.code);
          log(quiet ? 'debug' : 'warn', 'store-record-refused', { file: path, err });
          if (quiet) refused.delete(name);
          else refuse(name, path, err);
          if (isForeign(err)) foreign.set(name, { file: path, ...err.details });
        }
      }
      // Every record of the store is another chain's or adjudicator's: most likely the watchtower's configuration
      // (adjudicator, chain id, RPC) is wrong. Said once, until a record is watched or the store holds none.
      const only = onlyForeign();
      if (only && !warnedForeign) {
        const one = foreign.values().next().value!;
        log('warn', 'store-records-foreign', {
          dir,
          records: foreign.size,
          watched: one['watched'],
          record: { file: one['file'], ...(one['submitted'] as Record<string, unknown>) },
        });
      }
      warnedForeign = only;
    },
  };
}
