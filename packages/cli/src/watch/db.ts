/**
 * The watchtower's own durable store, on LMDB: the latest fully signed state of each watched channel, equivocation
 * evidence, the block cursor (number and hash of the last processed block, for catch-up and reorg detection) and
 * the chain / adjudicator the database belongs to, and the sending account's stuck replace-by-fee copies (so that a
 * restarted watchtower replaces one instead of queuing behind it). Every write is committed and flushed to disk before it resolves:
 * the HTTP API answers 200 only after.
 */
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { TrickleError } from '@trickle/protocol/errors';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import { decodeStuckCopies, encodeStuckCopies, type StuckCopyStore } from '@trickle/chain/types';
import { processAlive } from '@trickle/client/store';
import type { Lock } from '@trickle/protocol/locks';
import type { Address, Bytes32, ChannelId, ChannelParams, SignedState } from '@trickle/protocol/types';

/** A channel the watchtower guards. */
export interface WatchedChannel {
  readonly channelId: ChannelId;
  readonly params: ChannelParams;
  /** The newest state both parties signed that the watchtower was given. */
  readonly latest: SignedState;
  /** Wall-clock milliseconds when `latest` arrived. */
  readonly receivedAt: number;
  /** How it arrived. */
  readonly source: 'api' | 'store';
  /** The pending locks of `latest` in committed order (absent when none). */
  readonly locks?: readonly Lock[] | undefined;
  /** Preimages of `locks` the hub pays the device, to reveal on-chain when needed (absent when none). */
  readonly preimages?: readonly { readonly hash: Bytes32; readonly preimage: Bytes32 }[] | undefined;
}

/** Two different states both signed at one version, kept as evidence (never acted on). */
export interface WatchEvidence {
  readonly channelId: ChannelId;
  readonly held: SignedState;
  readonly offered: SignedState;
  readonly at: number;
}

/** The last block whose events were processed. `block: -1` before the first. */
export interface BlockCursor {
  readonly block: number;
  readonly hash: string;
}

/** Which chain and adjudicator a database belongs to (checked at every start). */
export interface DbBinding {
  readonly chainId: bigint;
  readonly adjudicator: Address;
}

/** The watchtower's store. Reads are synchronous (from an in-memory copy); writes are durable when they resolve. */
export interface WatchDb {
  binding(): DbBinding | undefined;
  setBinding(b: DbBinding): Promise<void>;
  cursor(): BlockCursor | undefined;
  setCursor(c: BlockCursor): Promise<void>;
  get(channelId: ChannelId): WatchedChannel | undefined;
  list(): WatchedChannel[];
  readonly size: number;
  put(ch: WatchedChannel): Promise<void>;
  putEvidence(e: WatchEvidence): Promise<void>;
  /**
   * The sending account's replace-by-fee copies left unmined by a send that gave up (`ReplaceOptions.stuckCopies` of
   * `@trickle/chain`): kept per account, a save durable when it resolves (`STORE_FAILURE` when it fails).
   */
  readonly stuckCopies: StuckCopyStore;
  close(): Promise<void>;
}

/** Databases this process has open (a second watchtower on one in-process is refused too). */
const held = new Set<string>();

/**
 * Take the database directory's lock: `watchtower.pid`, created exclusively, holding this process's id. Each
 * watchtower keeps the held states in memory and writes them over the database's, so a second one on the same database
 * would overwrite the newest state the first accepted with an older one handed to it (restarted, the watchtower would
 * hold the older state and let a force close with it stand), and both would send from one account. A lock whose
 * process is gone (killed) is taken over. @returns the release function
 * @throws TrickleError `STORE_FAILURE` naming the holder while a live process (or this one) has the database open
 */
function lockDb(path: string): () => void {
  const dir = resolve(path);
  const file = join(dir, 'watchtower.pid');
  const inUse = (pid: number) =>
    new TrickleError('STORE_FAILURE', `the watchtower database at ${path} is in use by process ${pid}`, {
      details: { dbPath: path, pid },
    });
  if (held.has(dir)) throw inUse(process.pid);
  try {
    mkdirSync(dir, { recursive: true });
    for (let attempt = 0; ; attempt++) {
      try {
        writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
        const holder = Number.parseInt(readFileSync(file, 'utf8'), 10);
        // Our own id in the file and the database not open here: left by an earlier process that had our id.
        if (Number.isSafeInteger(holder) && holder > 0 && holder !== process.pid && processAlive(holder))
          throw inUse(holder);
        unlinkSync(file); // stale: its process is gone
      }
    }
  } catch (cause) {
    if (cause instanceof TrickleError) throw cause;
    throw new TrickleError('STORE_FAILURE', `cannot lock the watchtower database at ${path}`, { cause });
  }
  held.add(dir);
  return () => {
    held.delete(dir);
    try {
      unlinkSync(file);
    } catch {
      /* already gone: nothing to release */
    }
  };
}

/**
 * Open (or create) the watchtower database at `path` (a directory), for this watchtower only (see {@link lockDb}).
 * @throws TrickleError `STORE_FAILURE` when it cannot be opened, or another watchtower has it open
 * @example
 * ```ts
 * const db = openWatchDb('/var/lib/trickle/watch');
 * ```
 */
export function openWatchDb(path: string): WatchDb {
  let root: RootDatabase;
  let channels: Database<string, string>;
  let evidence: Database<string, string>;
  let meta: Database<string, string>;
  const unlock = lockDb(path);
  try {
    root = open({ path, compression: false });
    channels = root.openDB<string, string>({ name: 'channels', encoding: 'string' });
    evidence = root.openDB<string, string>({ name: 'evidence', encoding: 'string' });
    meta = root.openDB<string, string>({ name: 'meta', encoding: 'string' });
  } catch (cause) {
    unlock();
    throw new TrickleError('STORE_FAILURE', `cannot open the watchtower database at ${path}`, { cause });
  }
  const cache = new Map<ChannelId, WatchedChannel>();
  try {
    for (const { key, value } of channels.getRange()) cache.set(key as ChannelId, parseJson<WatchedChannel>(value));
  } catch (cause) {
    void root.close().then(unlock, unlock);
    throw new TrickleError('STORE_FAILURE', `cannot read the watchtower database at ${path}`, { cause });
  }
  const readMeta = <T>(key: string): T | undefined => {
    const v = meta.get(key);
    return v === undefined ? undefined : parseJson<T>(v);
  };
  let cursor = readMeta<BlockCursor>('cursor');
  const write = async (fn: () => void): Promise<void> => {
    try {
      await root.transaction(fn);
      await root.flushed;
    } catch (cause) {
      throw new TrickleError('STORE_FAILURE', 'watchtower database write failed', { cause });
    }
  };
  return {
    binding: () => readMeta<DbBinding>('binding'),
    setBinding: (b) => write(() => void meta.put('binding', stringifyJson(b))),
    cursor: () => cursor,
    async setCursor(c) {
      await write(() => void meta.put('cursor', stringifyJson(c)));
      cursor = c;
    },
    get: (id) => cache.get(id),
    list: () => [...cache.values()],
    get size() {
      return cache.size;
    },
    async put(ch) {
      await write(() => void channels.put(ch.channelId, stringifyJson(ch)));
      cache.set(ch.channelId, ch);
    },
    putEvidence: (e) =>
      write(() => void evidence.put(`${e.channelId}:${e.held.state.version}:${e.at}`, stringifyJson(e))),
    stuckCopies: {
      load: async (account) => {
        const kept = meta.get(`stuck-copies/${account}`);
        return kept === undefined ? [] : decodeStuckCopies(kept);
      },
      save: (account, copies) => write(() => void meta.put(`stuck-copies/${account}`, encodeStuckCopies(copies))),
    },
    async close() {
      try {
        await root.close();
      } finally {
        unlock();
      }
    },
  };
}
