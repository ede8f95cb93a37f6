import { statSync } from 'node:fs';
import { join } from 'node:path';
import { open, type RootDatabase, type Database } from 'lmdb';
import { TrickleError } from '@trickle/protocol/errors';
import type { ChannelId } from '@trickle/protocol/types';
import {
  channelRecordJson,
  decodeRecord,
  evidenceKey,
  encodeRecord,
  routeRetainFrom,
  HASH_META,
  ROUTE_META,
  type ChannelRecord,
  type EvidenceRecord,
  type HubStore,
  type PruneRoutesResult,
  type RouteRecord,
  type StoreWrite,
} from './types.js';
import { encodeEntry, lockLog, readEntries, WalFile, type WalOp, type WalWrite } from './wal.js';
import {
  HASH_SWEEP_KEY,
  HASH_SWEEP_PREFIXES,
  hashOfMeta,
  hashSweepValue,
  parseHashSweep,
  type HashSweep,
} from './hash-sweep.js';

/** Options of {@link openLmdbStore}. */
export interface LmdbStoreOptions {
  /** Directory of the database (or its file, when it is not a directory). */
  readonly path: string;
  /**
   * Bytes of each of the two write-ahead log files (default 8 MiB). When the next entry does not fit, the store
   * switches files and checkpoints: the file is reused only after LMDB has flushed everything logged in it.
   */
  readonly logBytes?: number;
}

const DB_NAMES = ['channels', 'routes', 'evidence', 'meta', 'route-index'] as const;
const [CHANNELS, ROUTES, EVIDENCE, META, ROUTE_INDEX] = [0, 1, 2, 3, 4] as const;
const EPOCH_KEY = 'epoch';
/**
 * The epoch at which the route index was last known whole: set with `epoch` by this code, so an older hub that opened
 * the store since (it bumps `epoch`, not this) leaves them different and the next open rebuilds the index.
 */
const INDEX_EPOCH_KEY = 'route-index-epoch';
/**
 * Prefixed to the epoch stored under {@link INDEX_EPOCH_KEY}: the index's layout. An index of another layout (one from
 * before the `h/` entries stored the bare epoch) is rebuilt at open, as one an older hub wrote beside.
 */
const INDEX_LAYOUT = 'h1:';
/**
 * How long logged writes wait in memory before they go to LMDB together (newest value per key). A hub whose devices
 * update several times a second writes each channel's record to LMDB once per period instead of once per update: at
 * 100 ms the LMDB transaction was ~10% of a loaded hub's event loop, at 1 s ~5% (`npm run bench -- --only hub
 * --profile`). Nothing waits for it: durability is the log's, and reads hand the pending writes over first.
 */
const APPLY_MS = 1000;
/** A transaction LMDB refused (a full disk) is tried again this much later. */
const APPLY_RETRY_MS = 500;

/**
 * The embedded default store: a write-ahead log for durability, LMDB for everything it holds.
 *
 * A `commit` is one log entry, written with one durable `pwrite` (see `wal.ts`); it resolves when that entry is on
 * disk, so an acked state survives a process kill or a power cut. Its writes wait in memory (newest value per key)
 * and go to LMDB together every {@link APPLY_MS} ms in one transaction, which lmdb-js flushes in the background
 * (`overlappingSync`, which keeps the database whole across a crash). When a log file is full the store switches to
 * the other one: the writes logged so far go to LMDB with the new epoch in one transaction, and the full file is
 * reused only after LMDB has flushed it. Opening the store replays the log entries LMDB may not hold (whole values,
 * in order: replaying over any earlier state is idempotent) and starts a fresh epoch.
 *
 * Why not LMDB's own durable commit: it syncs twice per transaction and costs, on this machine, ~0.45 ms and
 * ~260 µs of CPU per commit, against ~0.11 ms and ~40 µs for the log's one write
 * (`node packages/hub/bench/store-commit.mjs`, which measures both in one run).
 * @throws TrickleError('STORE_FAILURE') when the database or its log cannot be opened or replayed
 */
export function openLmdbStore(options: LmdbStoreOptions): HubStore {
  const logBytes = options.logBytes ?? 8 << 20;
  let root: RootDatabase;
  let dbs: Database<Buffer, string>[];
  let wal: Database<Buffer, string>;
  let files: [WalFile, WalFile];
  let epoch: number;
  let unlock: (() => void) | undefined;
  let opened: RootDatabase | undefined;
  try {
    // eventTurnBatching off: lmdb-js (3.5.6) starts each event turn's batch with a write whose commit promise no
    // caller holds, and rejects it unhandled when the commit fails (a full disk), which ends a process on Node's
    // defaults. Every write here is in a transaction, which reports its own failure.
    root = opened = open({ path: options.path, compression: false, overlappingSync: true, eventTurnBatching: false });
    dbs = DB_NAMES.map((name) => root.openDB<Buffer, string>({ name, encoding: 'binary' }));
    wal = root.openDB<Buffer, string>({ name: 'wal', encoding: 'binary' });
    const base = statSync(options.path).isDirectory()
      ? join(options.path, 'trickle-wal-')
      : `${options.path}.trickle-wal-`;
    unlock = lockLog(`${base}lock`);
    files = [new WalFile(`${base}0`, logBytes), new WalFile(`${base}1`, logBytes)];
    // Recovery: LMDB holds everything logged before epoch `stored` began; replay that epoch's file, then the next
    // one's (written during a switch whose flush may not have finished), and start an epoch no file can hold yet.
    const stored = Number(Buffer.from(wal.get(EPOCH_KEY) ?? Buffer.from('0')).toString('utf8'));
    const indexed = wal.get(INDEX_EPOCH_KEY);
    const indexWhole =
      (indexed === undefined ? undefined : Buffer.from(indexed).toString('utf8')) ===
      (wal.get(EPOCH_KEY) === undefined ? undefined : `${INDEX_LAYOUT}${stored}`);
    const replay = [stored, stored + 1].flatMap((e) => readEntries(files[e % 2]!.read(), e));
    epoch = stored + 2;
    root.transactionSync(() => {
      for (const ops of replay) for (const op of ops) apply(dbs, op);
      // A store from before the route index (or one an older hub wrote to since): build it once from every route.
      if (!indexWhole) rebuildRouteIndex(dbs);
      wal.putSync(EPOCH_KEY, Buffer.from(String(epoch)));
      wal.putSync(INDEX_EPOCH_KEY, Buffer.from(`${INDEX_LAYOUT}${epoch}`));
    });
  } catch (cause) {
    unlock?.();
    void opened?.close();
    throw new TrickleError(
      'STORE_FAILURE',
      `cannot open LMDB store at ${options.path}: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
  }
  let offset = 0;
  /** Logged writes not yet handed to LMDB: the newest op per database and key. */
  let pending = new Map<string, WalOp>();
  let applyTimer: NodeJS.Timeout | undefined;
  /** The last LMDB transaction issued. */
  let applied: Promise<unknown> = Promise.resolve();
  /** Resolves when LMDB has flushed everything logged before the current epoch: the other file is then free. */
  let checkpoint: Promise<unknown> = Promise.resolve();
  /**
   * Set while LMDB refuses transactions (a full disk): the writes stay in the log and in `pending`, are retried, and
   * reads fail with STORE_FAILURE until a transaction succeeds again.
   */
  let applyError: unknown;
  /**
   * Set when a commit was refused because the log is full and LMDB could not take its writes: every commit then tries
   * that checkpoint again first, however small its entry. Without it a small write (the hub's store probe) still fit in
   * what was left of the file and succeeded, so /health said the store worked (200) while every payment got
   * STORE_FAILURE, flapping with each probe.
   */
  let logFull = false;
  let closed = false;
  /**
   * Commits go through one at a time, in order: log order is apply order. The first waits for LMDB to flush the
   * replay, since the new epoch's file is the one just replayed.
   */
  let tail: Promise<unknown> = Promise.resolve(root.flushed);

  /** Hands every pending write to LMDB in one transaction (with `extra` writes after them); resolves when committed. */
  const applyPending = (extra?: () => void): Promise<unknown> => {
    clearTimeout(applyTimer);
    applyTimer = undefined;
    if (closed) return applied;
    const batch = pending;
    pending = new Map();
    let txn: Promise<unknown>;
    try {
      txn = root.transaction(() => {
        for (const op of batch.values()) apply(dbs, op);
        extra?.();
      });
    } catch (e) {
      txn = Promise.reject(e);
    }
    applied = txn.then(
      () => {
        applyError = undefined;
      },
      (e: unknown) => {
        // LMDB refused (a full disk): the writes are safe in the log. Keep them (newer writes win) and try again.
        for (const [k, op] of batch) if (!pending.has(k)) pending.set(k, op);
        applyError = e;
        // lmdb-js rejects a second promise with the cause (`commitError`); it is this same failure, recorded here.
        const cause = (e as { commitError?: PromiseLike<unknown> } | undefined)?.commitError;
        // Only while this failure is still the current one: the promise settles from lmdb-js's write callback, and a
        // failure reported after a later transaction succeeded must not refuse reads again.
        if (cause && typeof cause.then === 'function')
          cause.then(undefined, (c: unknown) => {
            if (applyError === e) applyError = c;
          });
        if (!closed) applyTimer ??= setTimeout(applyPending, APPLY_RETRY_MS).unref();
      },
    );
    return applied;
  };

  /** Everything logged so far goes to LMDB with `next` as its epoch; resolves with the error when that failed. */
  const makeCheckpoint = (next: number): Promise<unknown> =>
    applyPending(() => {
      wal.putSync(EPOCH_KEY, Buffer.from(String(next)));
      wal.putSync(INDEX_EPOCH_KEY, Buffer.from(`${INDEX_LAYOUT}${next}`));
    })
      .then(() => (applyError === undefined ? root.flushed : Promise.reject(applyError)))
      .then(
        () => undefined,
        (e: unknown) => e ?? new Error('LMDB flush failed'),
      );

  /**
   * Payment ids whose route or meta keys were logged, and lock hashes of the routes and hash keys ({@link HASH_META})
   * logged, one set per `pruneRoutes` batch reading meanwhile.
   */
  const watchers = new Set<Set<string>>();
  const commitNow = (writes: readonly StoreWrite[]) => logOps(writes.map(toOp));
  const logOps = async (ops: readonly WalWrite[]) => {
    if (watchers.size > 0)
      for (const op of ops) {
        const id = op.db === ROUTES ? op.key : op.db === META ? paymentOfMeta(op.key) : undefined;
        if (id !== undefined) for (const w of watchers) w.add(id);
        const hash =
          op.db === ROUTES
            ? op.value === undefined
              ? undefined
              : routeFacts(op.value).lock?.hash
            : op.db === META
              ? hashOfMeta(op.key)
              : undefined;
        if (hash !== undefined) for (const w of watchers) w.add(hash);
      }
    // The values LMDB gets later are views of their bytes in the log entry (no second copy).
    const values: (Buffer | undefined)[] = new Array(ops.length);
    let entry = encodeEntry(epoch, ops, values);
    if (offset > 0 && (logFull || offset + entry.length > logBytes)) {
      // Switch files. The other one is free once the previous switch's flush is done; this epoch's writes go to LMDB
      // with the next epoch's number, and this file is free once that is flushed.
      let failed = await checkpoint;
      if (failed !== undefined) {
        // The last switch's checkpoint did not reach the disk: try it again now; refuse this commit if it fails.
        checkpoint = makeCheckpoint(epoch);
        failed = await checkpoint;
        logFull = failed !== undefined;
        if (failed !== undefined)
          throw new TrickleError(
            'STORE_FAILURE',
            'LMDB cannot take the logged writes (disk full?); the log is full until it can',
            { cause: failed },
          );
      }
      const next = epoch + 1;
      checkpoint = makeCheckpoint(next);
      epoch = next;
      offset = 0;
      entry = encodeEntry(epoch, ops, values);
    }
    const at = offset;
    offset += entry.length;
    try {
      await files[epoch % 2]!.append(entry, at);
    } catch (e) {
      // The next entry goes where this one failed: recovery reads the log only up to its first entry that is not
      // whole, so an entry written after a hole would be lost with the hole after a crash (commits are serial here).
      offset = at;
      throw e;
    }
    for (let i = 0; i < ops.length; i++) {
      const { db, key } = ops[i]!;
      pending.set(`${db}:${key}`, { db, key, value: values[i] });
    }
    applyTimer ??= setTimeout(applyPending, APPLY_MS).unref();
  };

  /** Every commit made so far is in LMDB (committed, maybe not flushed) once this resolves. */
  const drain = async () => {
    await tail;
    if (pending.size > 0) await applyPending();
    else {
      await applied;
      // The apply under way may have been issued while the disk was full and failed after room came back (a retry
      // that a read or close met): its writes are pending again, and one transaction made now decides.
      if (applyError !== undefined && pending.size > 0) await applyPending();
    }
    await applied;
  };
  /** Reads see every resolved commit. */
  const caughtUp = async () => {
    await drain();
    if (applyError !== undefined)
      throw new TrickleError('STORE_FAILURE', 'LMDB refuses writes (disk full?); reads would miss logged writes', {
        cause: applyError,
      });
  };
  const range = (db: number, prefix?: string) =>
    prefix ? dbs[db]!.getRange({ start: prefix, end: `${prefix}\uffff` }) : dbs[db]!.getRange();
  const values = async <T>(db: number, prefix?: string): Promise<T[]> => {
    await caughtUp();
    const out: T[] = [];
    for (const { value } of range(db, prefix)) out.push(decodeRecord<T>(value));
    return out;
  };
  return {
    loadChannels: () => values<ChannelRecord>(CHANNELS),
    async loadPendingRoutes() {
      await caughtUp();
      // Through the index of pending routes: finished ones are not read.
      const out: RouteRecord[] = [];
      for (const key of dbs[ROUTE_INDEX]!.getKeys({ start: PENDING, end: `${PENDING}\uffff` })) {
        const v = dbs[ROUTES]!.get(key.slice(PENDING.length));
        const r = v === undefined ? undefined : decodeRecord<RouteRecord>(v);
        if (r?.status === 'pending') out.push(r);
      }
      return out;
    },
    async loadRoute(paymentId) {
      // Asked for every routed payment (the router refuses an id the store holds): read through the writes not yet in
      // LMDB instead of handing them over now (caughtUp), which would make a transaction of every route. Exact: a
      // write is pending, in the transaction under way (back in pending if LMDB refuses it), or in LMDB.
      const key = `${ROUTES}:${paymentId}`;
      for (;;) {
        const op = pending.get(key);
        if (op) return op.value === undefined ? undefined : decodeRecord<RouteRecord>(op.value);
        const issued = applied;
        await issued;
        if (applied === issued && !pending.has(key)) break;
      }
      const v = dbs[ROUTES]!.get(paymentId);
      return v === undefined ? undefined : decodeRecord<RouteRecord>(v);
    },
    loadEvidence: (channelId: ChannelId) => values<EvidenceRecord>(EVIDENCE, channelId),
    async getMeta(key) {
      await caughtUp();
      const v = dbs[META]!.get(key);
      return v === undefined ? undefined : Buffer.from(v).toString('utf8');
    },
    async loadMetaPrefix(prefix) {
      await caughtUp();
      const out: { key: string; value: string }[] = [];
      for (const { key, value } of range(META, prefix)) out.push({ key, value: Buffer.from(value).toString('utf8') });
      return out;
    },
    async pruneRoutes({ before, now, limit }) {
      if (!Number.isSafeInteger(limit) || limit < 1 || !Number.isFinite(before) || !Number.isSafeInteger(now))
        throw new TrickleError('INVALID_ARGUMENT', 'pruneRoutes: limit ≥ 1, before and now in ms');
      // The reads happen beside the commits (a batch never holds them up for its reads); the payment ids whose route
      // or markers a commit logs meanwhile are watched, and left to a later batch.
      const touched = new Set<string>();
      watchers.add(touched);
      try {
        await caughtUp(); // every commit resolved before the watch began is readable in LMDB
        const index = dbs[ROUTE_INDEX]!;
        const candidates: { id: string; ops: WalWrite[]; stamp: boolean; hash?: string | undefined }[] = [];
        const stale: string[] = [];
        // Finished routes without a time: given `now` (the index then files them under it).
        let unstamped = 0;
        for (const key of index.getKeys({ start: UNSTAMPED, end: `${UNSTAMPED}\uffff`, limit })) {
          unstamped++;
          const v = dbs[ROUTES]!.get(key.slice(UNSTAMPED.length));
          const r = v === undefined ? undefined : decodeRecord<RouteRecord>(v);
          if (!r || r.status === 'pending' || r.finishedAt !== undefined) stale.push(key);
          else
            candidates.push({
              id: r.paymentId,
              ops: [{ db: ROUTES, key: r.paymentId, value: encodeRecord({ ...r, finishedAt: now }) }],
              stamp: true,
            });
        }
        const end = `${FINISHED}${retainKey(Math.max(0, Math.min(Math.floor(before), Number.MAX_SAFE_INTEGER)))}/\uffff`;
        let seen = 0;
        for (const key of index.getKeys({ start: FINISHED, end, limit })) {
          seen++;
          const at = Number(key.slice(FINISHED.length, FINISHED.length + 16));
          const id = key.slice(FINISHED.length + 17);
          const v = dbs[ROUTES]!.get(id);
          const facts = v === undefined ? undefined : routeFacts(v);
          // Written again since it was filed here (a later finish, or its payment id reused): not this entry's.
          if (facts === undefined || routeRetainFrom(facts) !== at) {
            stale.push(key);
            continue;
          }
          const ops: WalWrite[] = [{ db: ROUTES, key: id, value: undefined }];
          const credited = `${ROUTE_META.credited}${id}/`;
          for (const k of dbs[META]!.getKeys({ start: credited, end: `${credited}\uffff` }))
            ops.push({ db: META, key: k, value: undefined });
          if (dbs[META]!.get(`${ROUTE_META.refused}${id}`) !== undefined)
            ops.push({ db: META, key: `${ROUTE_META.refused}${id}`, value: undefined });
          candidates.push({ id, ops, stamp: false, hash: facts.lock?.hash });
        }
        // A lock hash's keys go with the last route on it: with this batch's routes on the hash, when no other route on
        // it is stored. (An `h/` entry whose route is gone, or is on another hash since, is passed by.)
        const byHash = new Map<string, WalWrite[]>();
        const gone = new Set(candidates.filter((c) => !c.stamp).map((c) => c.id));
        for (const c of candidates) {
          if (c.hash === undefined || byHash.has(c.hash)) continue;
          const ops: WalWrite[] = [];
          if (!routeLeftOn(dbs, c.hash, gone)) {
            const claimed = `${HASH_META.claimed}${c.hash}/`;
            for (const k of dbs[META]!.getKeys({ start: claimed, end: `${claimed}\uffff` }))
              ops.push({ db: META, key: k, value: undefined });
            for (const k of [`${HASH_META.preimage}${c.hash}`, `${HASH_META.revealed}${c.hash}`])
              if (dbs[META]!.get(k) !== undefined) ops.push({ db: META, key: k, value: undefined });
          }
          byHash.set(c.hash, ops);
        }
        const sweep = sweepBatch(dbs, { before, now, limit });
        // The index is derived from the routes (see `indexRoute`): a stale entry is dropped without a log entry (an
        // entry dropped wrongly would only keep its route for ever; the route itself is never touched here).
        if (stale.length > 0)
          await root.transaction(() => {
            for (const k of stale) index.removeSync(k);
          });
        // In the commit order: one log entry for the whole batch, without what a commit touched since the reads.
        const done = tail.then(async (): Promise<PruneRoutesResult> => {
          // A route on a hash a commit touched since (a route on it written, one of its keys) is left to a later batch
          // with the hash's keys: its keys go with the last route on the hash, which the later batch then sees.
          const kept = candidates.filter((c) => !touched.has(c.id) && (c.hash === undefined || !touched.has(c.hash)));
          const hashOps = [...byHash].flatMap(([hash, ops]) =>
            candidates.every((c) => c.hash !== hash || kept.includes(c)) ? ops : [],
          );
          // The sweep's batch waits whole for the next one if a commit touched one of its hashes meanwhile.
          const sweepOps = [...sweep.hashes].some((h) => touched.has(h)) ? [] : sweep.ops;
          if (kept.length > 0 || sweepOps.length > 0)
            await logOps([...kept.flatMap((c) => c.ops), ...hashOps, ...sweepOps]);
          const stamped = kept.filter((c) => c.stamp).length;
          return {
            pruned: kept.length - stamped,
            stamped,
            more: unstamped === limit || seen === limit || sweep.more,
          };
        });
        tail = done.then(
          () => undefined,
          () => undefined,
        );
        return await done;
      } catch (cause) {
        throw cause instanceof TrickleError
          ? cause
          : new TrickleError('STORE_FAILURE', 'pruneRoutes failed', { cause });
      } finally {
        watchers.delete(touched);
      }
    },
    commit(writes: readonly StoreWrite[]) {
      if (writes.length === 0) return Promise.resolve();
      const done = tail.then(() => commitNow(writes));
      tail = done.then(
        () => undefined,
        () => undefined, // only the order of commits continues here; this one's failure is returned to its caller below
      );
      return done.catch((cause: unknown) => {
        throw cause instanceof TrickleError ? cause : new TrickleError('STORE_FAILURE', 'commit failed', { cause });
      });
    },
    async close() {
      await drain();
      let failed = await checkpoint;
      // A checkpoint that failed while the disk was full is tried once more, as the next log switch would: the disk
      // may have room again by now (else the close below reports it and the next open replays the log).
      if (failed !== undefined || applyError !== undefined) {
        checkpoint = makeCheckpoint(epoch);
        failed = await checkpoint;
      }
      closed = true;
      clearTimeout(applyTimer);
      if (failed !== undefined || applyError !== undefined) {
        // What LMDB lacks is in the log: the next open replays it. Close without claiming a clean flush.
        for (const f of files) f.close();
        unlock?.();
        await root.close();
        throw new TrickleError(
          'STORE_FAILURE',
          'closed with logged writes LMDB could not take; the next open replays them',
          { cause: failed ?? applyError },
        );
      }
      await root.flushed;
      await root.close();
      for (const f of files) f.close();
      unlock?.();
    },
  };
}

function toOp(w: StoreWrite): WalWrite {
  switch (w.kind) {
    case 'channel':
      return { db: CHANNELS, key: w.record.channelId, value: channelRecordJson(w.record) };
    case 'route':
      return { db: ROUTES, key: w.route.paymentId, value: encodeRecord(w.route) };
    case 'evidence':
      return {
        db: EVIDENCE,
        key: evidenceKey(w.evidence),
        value: encodeRecord(w.evidence),
      };
    case 'meta':
      return { db: META, key: w.key, value: w.value };
    case 'deleteMeta':
      return { db: META, key: w.key, value: undefined };
    case 'outbox':
      // Only a cluster hands payments to an outbox, and a cluster runs on PostgreSQL.
      throw new TrickleError('INVALID_ARGUMENT', 'the LMDB store keeps no routing outbox (a cluster needs PostgreSQL)');
  }
}

/**
 * The route index (database `route-index`), kept by {@link apply} in the transaction that writes each route, so it is
 * never logged and a replay rebuilds it with the routes: `p/<paymentId>` for a pending route (what
 * `loadPendingRoutes` reads), `u/<paymentId>` for a finished route without `finishedAt`, `f/<retainFrom, 16
 * digits>/<paymentId>` for a finished one by the time its retention counts from ({@link routeRetainFrom}), so the
 * pruner reads the expired ones in order; and `h/<lock hash>/<paymentId>` for a conditional route, pending or not, so
 * the pruner knows whether a route on a hash is left. An `f/` entry left by a record written again later is dropped by
 * the pruner; an `h/` one (a payment id written again with another lock while its route was kept) is passed by.
 */
const PENDING = 'p/';
const BY_HASH = 'h/';
const UNSTAMPED = 'u/';
const FINISHED = 'f/';
const retainKey = (at: number) => String(at).padStart(16, '0');

/**
 * What the index needs of a stored route, parsed without `decodeRecord`'s reviver (the index reads a route per route
 * write, and the reviver was most of that).
 */
function routeFacts(bytes: Uint8Array | string): RouteFacts {
  const o = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('utf8')) as {
    status: RouteRecord['status'];
    finishedAt?: number;
    lock?: { expiry: string; hash: string };
  };
  return {
    status: o.status,
    finishedAt: o.finishedAt,
    lock: o.lock && { expiry: BigInt(o.lock.expiry), hash: o.lock.hash },
  };
}
type RouteFacts = Pick<RouteRecord, 'status' | 'finishedAt'> & {
  readonly lock?: { readonly expiry: bigint; readonly hash: string } | undefined;
};

/** The payment id of a `credited/<paymentId>/<channelId>` or `route-refused/<paymentId>` key. */
function paymentOfMeta(key: string): string | undefined {
  if (key.startsWith(ROUTE_META.credited)) return key.slice(ROUTE_META.credited.length, key.lastIndexOf('/'));
  if (key.startsWith(ROUTE_META.refused)) return key.slice(ROUTE_META.refused.length);
  return undefined;
}

/** Whether a route on `hash` is stored (through its `h/` index entries), leaving out the payment ids in `gone`. */
function routeLeftOn(dbs: Database<Buffer, string>[], hash: string, gone?: ReadonlySet<string>): boolean {
  const prefix = `${BY_HASH}${hash}/`;
  for (const key of dbs[ROUTE_INDEX]!.getKeys({ start: prefix, end: `${prefix}\uffff` })) {
    const id = key.slice(prefix.length);
    if (gone?.has(id)) continue;
    const v = dbs[ROUTES]!.get(id);
    if (v !== undefined && routeFacts(v).lock?.hash === hash) return true;
  }
  return false;
}

/**
 * One batch of the sweep of lock-hash keys without a route ({@link HASH_SWEEP_KEY}), read now and logged with the
 * pruner's batch: the deletes of at most `limit` keys' worth and the progress. @returns its ops, the hashes whose keys
 * it deletes, and whether keys are left to look at
 */
function sweepBatch(
  dbs: Database<Buffer, string>[],
  o: { before: number; now: number; limit: number },
): { ops: WalWrite[]; hashes: Set<string>; more: boolean } {
  const meta = dbs[META]!;
  const stored = meta.get(HASH_SWEEP_KEY);
  const state = parseHashSweep(stored === undefined ? undefined : Buffer.from(stored).toString('utf8'));
  const progress = (s: HashSweep): WalWrite => ({ db: META, key: HASH_SWEEP_KEY, value: hashSweepValue(s) });
  const hashes = new Set<string>();
  if (state === undefined) return { ops: [progress({ since: o.now, after: '' })], hashes, more: false };
  if (state === 'done' || state.since > o.before) return { ops: [], hashes, more: false };
  const ops: WalWrite[] = [];
  const orphan = new Map<string, boolean>();
  let after = state.after;
  let seen = 0;
  for (const prefix of HASH_SWEEP_PREFIXES) {
    const end = `${prefix}\uffff`;
    if (after >= end) continue; // done with this prefix's keys
    for (const key of meta.getKeys({ start: after > prefix ? after : prefix, end })) {
      if (key === after) continue;
      if (seen === o.limit) {
        ops.push(progress({ since: state.since, after }));
        return { ops, hashes, more: true };
      }
      seen++;
      after = key;
      const hash = hashOfMeta(key)!;
      let none = orphan.get(hash);
      if (none === undefined) orphan.set(hash, (none = !routeLeftOn(dbs, hash)));
      if (none) {
        ops.push({ db: META, key, value: undefined });
        hashes.add(hash);
      }
    }
  }
  ops.push(progress('done'));
  return { ops, hashes, more: false };
}

/** Index one route write (before it is applied: a removal reads the record it removes). */
function indexRoute(dbs: Database<Buffer, string>[], key: string, value: Uint8Array | undefined): void {
  const index = dbs[ROUTE_INDEX]!;
  if (value === undefined) {
    const old = dbs[ROUTES]!.get(key);
    const facts = old === undefined ? undefined : routeFacts(old);
    const at = facts === undefined ? undefined : routeRetainFrom(facts);
    if (at !== undefined) index.removeSync(`${FINISHED}${retainKey(at)}/${key}`);
    if (facts?.lock) index.removeSync(`${BY_HASH}${facts.lock.hash}/${key}`);
  }
  index.removeSync(`${PENDING}${key}`);
  index.removeSync(`${UNSTAMPED}${key}`);
  if (value !== undefined) fileRoute(index, key, routeFacts(value));
}

function fileRoute(index: Database<Buffer, string>, key: string, r: RouteFacts): void {
  const at = routeRetainFrom(r);
  const entry =
    r.status === 'pending'
      ? `${PENDING}${key}`
      : at === undefined
        ? `${UNSTAMPED}${key}`
        : `${FINISHED}${retainKey(at)}/${key}`;
  index.putSync(entry, MARK);
  if (r.lock) index.putSync(`${BY_HASH}${r.lock.hash}/${key}`, MARK);
}
const MARK = Buffer.from([1]);

/** The route index from every stored route (inside the open's transaction). */
function rebuildRouteIndex(dbs: Database<Buffer, string>[]): void {
  const index = dbs[ROUTE_INDEX]!;
  for (;;) {
    const keys = [...index.getKeys({ limit: 10_000 })];
    if (keys.length === 0) break;
    for (const key of keys) index.removeSync(key);
  }
  for (const { key, value } of dbs[ROUTES]!.getRange()) fileRoute(index, key, routeFacts(value));
}

/** Applies one op inside an LMDB transaction's callback (`put` and `remove` join that transaction). */
function apply(dbs: Database<Buffer, string>[], op: WalOp): void {
  // Only the stored databases are named in the log; the route index is derived here.
  const db = op.db === ROUTE_INDEX ? undefined : dbs[op.db];
  if (db === undefined) throw new Error(`log entry names database ${op.db}`);
  if (op.db === ROUTES) indexRoute(dbs, op.key, op.value);
  // Inside a transaction's callback the synchronous forms write into that transaction; its promise reports failure.
  if (op.value === undefined) db.removeSync(op.key);
  else db.putSync(op.key, op.value as Buffer);
}

/**
 * lmdb-js 3.5.6, when a write transaction fails to commit (a full disk: ENOSPC), rejects the transaction's promise —
 * which the LMDB store handles: it keeps the writes in its log, retries, and fails commits with STORE_FAILURE once
 * the log is full, so the channels freeze and thaw — and, with its event-turn batching on, also an internal promise
 * of its write batch that no caller can reach, with `Error('Commit failed (see commitError for details)')` carrying
 * the batch's `commitError` promise. The store turns that batching off, so no such rejection arises from it; this
 * recognises that second rejection, and only it, for a process that opens other LMDB environments with lmdb-js's
 * defaults (the `trickle-hub` bin keeps it as a guard and lets every other rejection end the process).
 * @param reason - an unhandled rejection's reason
 * @returns whether it is lmdb-js's unreachable echo of a failed commit (the store has the failure already)
 */
export function isLmdbCommitEcho(reason: unknown): boolean {
  if (!(reason instanceof Error) || reason.message !== 'Commit failed (see commitError for details)') return false;
  const cause = (reason as { commitError?: unknown }).commitError;
  if (!(cause instanceof Promise)) return false;
  cause.then(undefined, () => {}); // the store has the same failure from its own transaction's commitError
  return true;
}
