import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { TrickleError } from '@trickle/protocol/errors';
import type { Address, ChannelId } from '@trickle/protocol/types';
import { fencedError, type ChannelLeases } from '../leases.js';
import type { MarketRounds } from '../market-rounds.js';
import { createPostgresMarket, type PostgresMarket } from './postgres-market.js';
import { withPoolClient } from './pg-client.js';
import { checkOutboxCredits, createRouteOutbox, writeOutbox, type RouteOutbox } from './postgres-outbox.js';
import { HASH_SWEEP_KEY, HASH_SWEEP_PREFIXES, hashOfMeta, hashSweepValue, parseHashSweep } from './hash-sweep.js';
import {
  decodeRecord,
  encodeChannelRecord,
  evidenceKey,
  encodeRecord,
  routeRetainFrom,
  HASH_META,
  ROUTE_META,
  type ChannelRecord,
  type EvidenceRecord,
  type HubStore,
  type RouteRecord,
  type StoreWrite,
} from './types.js';

/** Options of {@link openPostgresStore}. */
export interface PostgresStoreOptions {
  /** Connection string, `postgres://user:password@host:port/database`. */
  readonly url: string;
  /** Connections kept open for commits, reads and leases (default 4). */
  readonly poolSize?: number;
  /**
   * Several hub processes on this database: channels are leased (see {@link ChannelLeases}); absent, the store
   * assumes it is the only writer, as the LMDB store does.
   */
  readonly cluster?: {
    /** How long a lease lasts without renewal (default 5,000 ms). A dead process's channels move after this. */
    readonly leaseMs?: number;
    /** This process's public URL, stored with its leases so operators (and a redirecting hub) can find the owner. */
    readonly url?: string;
  };
}

/** A {@link HubStore} on PostgreSQL, with the cluster's channel leases when opened with `cluster`. */
export interface PostgresStore extends HubStore {
  /** The channel leases of this process (cluster mode only). */
  readonly leases: ChannelLeases | undefined;
  /** The cluster's market: its round lease and its state's transactions (cluster mode only); `createHub`'s `marketRounds`. */
  readonly market: MarketRounds | undefined;
  /** The outbox of routed payments between channels held by different processes (cluster mode only). */
  readonly outbox: RouteOutbox | undefined;
  /** The schema version this code writes; a database at a newer one is refused. */
  readonly schemaVersion: number;
}

/**
 * Schema migrations, applied in order at open; `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
 * Keys are `COLLATE "C"` so prefix scans and ordering are bytewise, as in LMDB. Records are the same JSON the LMDB
 * store writes (bigints as decimal strings), as text.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE trickle_channels (channel_id text COLLATE "C" PRIMARY KEY, device text NOT NULL, record text NOT NULL);
   CREATE INDEX trickle_channels_device ON trickle_channels (device);
   CREATE TABLE trickle_routes (payment_id text COLLATE "C" PRIMARY KEY, status text NOT NULL, record text NOT NULL);
   CREATE INDEX trickle_routes_pending ON trickle_routes (payment_id) WHERE status = 'pending';
   CREATE TABLE trickle_evidence (key text COLLATE "C" PRIMARY KEY, channel_id text COLLATE "C" NOT NULL, record text NOT NULL);
   CREATE INDEX trickle_evidence_channel ON trickle_evidence (channel_id);
   CREATE TABLE trickle_meta (key text COLLATE "C" PRIMARY KEY, value text NOT NULL);
   CREATE TABLE trickle_leases (channel_id text COLLATE "C" PRIMARY KEY, device text NOT NULL, owner text NOT NULL,
     owner_url text, epoch bigint NOT NULL, expires_at timestamptz NOT NULL);
   CREATE INDEX trickle_leases_owner ON trickle_leases (owner);`,
  // 1 → 2: the outbox of routed payments between channels held by different processes (`store/postgres-outbox.ts`).
  // One row per payment (the payment id is the idempotency key), written in the payer's commit; `to_channel` is the
  // payee channel it is credited on; `settled` once the payer's route record has its outcome.
  `CREATE TABLE trickle_outbox (payment_id text COLLATE "C" PRIMARY KEY, from_channel text COLLATE "C" NOT NULL,
     payer text NOT NULL, payee text NOT NULL, to_channel text COLLATE "C" NOT NULL, token text NOT NULL,
     amount numeric(78, 0) NOT NULL, lock text,
     status text NOT NULL CHECK (status IN ('pending', 'taken', 'delivered', 'refused', 'refunded')),
     taker text, attempts integer NOT NULL DEFAULT 0, reason text, settled boolean NOT NULL DEFAULT false,
     created_at timestamptz NOT NULL DEFAULT clock_timestamp(), updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
   CREATE INDEX trickle_outbox_open ON trickle_outbox (to_channel) WHERE status IN ('pending', 'taken');
   CREATE INDEX trickle_outbox_answered ON trickle_outbox (from_channel)
     WHERE status IN ('delivered', 'refused', 'refunded') AND NOT settled;`,
  // 2 → 3: conditional (hashlocked) routes in the outbox. `lock` holds the lock's hash, `lock_expiry` the expiry of the
  // hub's lock toward the payee (T − Δ, computed by the payer's process), `preimage` the preimage once the payee
  // showed it (written in the payee's commit that made it durable). Two more statuses: `locked` (the payee
  // countersigned the hub's lock) and `claimed` (the preimage is known: the payer channel's holder claims upstream).
  `ALTER TABLE trickle_outbox DROP CONSTRAINT trickle_outbox_status_check,
     ADD CONSTRAINT trickle_outbox_status_check
       CHECK (status IN ('pending', 'taken', 'locked', 'claimed', 'delivered', 'refused', 'refunded')),
     ADD COLUMN lock_expiry numeric(78, 0), ADD COLUMN preimage text;
   CREATE INDEX trickle_outbox_lock ON trickle_outbox (lock) WHERE lock IS NOT NULL AND NOT settled;
   CREATE INDEX trickle_outbox_conditional ON trickle_outbox (from_channel) WHERE lock IS NOT NULL AND NOT settled;`,
  // 3 → 4: retention of finished routes. `retain_from` (ms) is when a finished route's retention window counts from
  // (`routeRetainFrom`: it finished, or its payer's lock expires if later); NULL while pending, and on routes finished
  // before this column, which the pruner stamps (`trickle_routes_unstamped`) the first time it sees them.
  `ALTER TABLE trickle_routes ADD COLUMN retain_from bigint;
   CREATE INDEX trickle_routes_retain ON trickle_routes (retain_from) WHERE retain_from IS NOT NULL;
   CREATE INDEX trickle_routes_unstamped ON trickle_routes (payment_id) WHERE retain_from IS NULL AND status <> 'pending';`,
  // 4 → 5: the entries of a market round's clearing record counted by the database for the whole cluster
  // (`store/postgres-market.ts`): one row per round still open to entries (the open round, the next), made from the
  // stored orders and escrows the first time it is needed (so a round opened before this version is counted too),
  // updated by each placement and escrow commit in its transaction, deleted by the round's clearing.
  `CREATE TABLE trickle_market_entries (round bigint PRIMARY KEY, entries bigint NOT NULL);`,
  // 5 → 6: a conditional route's lock hash (`lock_hash`, from its record; NULL on plain routes), so the pruner knows
  // whether a route on a hash is left and deletes the hash's meta keys (`HASH_META`) with the last one.
  `ALTER TABLE trickle_routes ADD COLUMN lock_hash text COLLATE "C";
   UPDATE trickle_routes SET lock_hash = record::jsonb #>> '{lock,hash}' WHERE record::jsonb #>> '{lock,hash}' IS NOT NULL;
   CREATE INDEX trickle_routes_lock_hash ON trickle_routes (lock_hash) WHERE lock_hash IS NOT NULL;`,
  // 6 → 7: a route written without its lock hash — by a process still running schema-5 code during a rolling upgrade
  // (its INSERT names no `lock_hash`) — gets it from its record, at the insert and once here for those written since
  // 6. Without it the pruner would see no route left on that hash and delete the preimage a pending route needs.
  `CREATE OR REPLACE FUNCTION trickle_routes_lock_hash() RETURNS trigger LANGUAGE plpgsql AS $$
   BEGIN
     IF NEW.lock_hash IS NULL AND strpos(NEW.record, '"lock"') > 0 THEN
       NEW.lock_hash := NEW.record::jsonb #>> '{lock,hash}';
     END IF;
     RETURN NEW;
   END $$;
   CREATE TRIGGER trickle_routes_lock_hash BEFORE INSERT ON trickle_routes
     FOR EACH ROW EXECUTE FUNCTION trickle_routes_lock_hash();
   UPDATE trickle_routes SET lock_hash = record::jsonb #>> '{lock,hash}'
     WHERE lock_hash IS NULL AND strpos(record, '"lock"') > 0 AND record::jsonb #>> '{lock,hash}' IS NOT NULL;`,
  // 7 → 8: a channel record never goes back. An update that would lower the version of the latest state both signed,
  // put another state at that version, or lower the version the hub signed last fails (SQLSTATE `TR001`, see
  // `STALE_WRITE`), and its whole commit with it: a write computed from an older copy of the channel (a commit whose
  // outcome was unknown landed after all, unseen) must not erase what landed — its payment, signed and acked, and the
  // route, outbox and markers written with it. A record rewritten at its version with other metadata (funding, status,
  // a proposal, a refused credit) passes. A trigger, so that a process still running older code is held to it too;
  // replaced if there, as a database set back to an older schema version may hold it.
  `CREATE OR REPLACE FUNCTION trickle_channels_forward() RETURNS trigger LANGUAGE plpgsql AS $$
   DECLARE
     o jsonb;
     n jsonb;
     ov numeric;
     nv numeric;
   BEGIN
     IF NEW.record = OLD.record THEN
       RETURN NEW;
     END IF;
     o := OLD.record::jsonb;
     n := NEW.record::jsonb;
     ov := (o #>> '{latest,state,version}')::numeric;
     nv := (n #>> '{latest,state,version}')::numeric;
     IF nv < ov OR (nv = ov AND n #> '{latest,state}' <> o #> '{latest,state}')
       OR (n ->> 'hubSignedVersion')::numeric < (o ->> 'hubSignedVersion')::numeric THEN
       RAISE EXCEPTION USING ERRCODE = 'TR001', DETAIL = OLD.channel_id,
         MESSAGE = format('channel %s is stored at version %s (hub-signed %s): a write at %s (hub-signed %s) would take it back',
           OLD.channel_id, ov, o ->> 'hubSignedVersion', nv, n ->> 'hubSignedVersion');
     END IF;
     RETURN NEW;
   END $$;
   DROP TRIGGER IF EXISTS trickle_channels_forward ON trickle_channels;
   CREATE TRIGGER trickle_channels_forward BEFORE UPDATE ON trickle_channels
     FOR EACH ROW EXECUTE FUNCTION trickle_channels_forward();`,
];

/** The schema version this code knows. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;
/** Serialises concurrent starters' migrations (any constant; the key of `pg_advisory_xact_lock`). */
const MIGRATION_LOCK = 0x7472_6963;
/**
 * The first key of the per-hash advisory locks (`pg_advisory_xact_lock(HASH_LOCK, hashtext(hash))`, see
 * {@link lockHashes}): a commit writing a route on a lock hash or one of its keys ({@link HASH_META}) and a pruner
 * deleting the hash's keys hold it to their transaction's end.
 */
const HASH_LOCK = 0x7472_6964;
/** How long the migration's transaction may stay idle, and each of its statements (the lock wait) may run. */
const MIGRATION_BOUND_MS = 60_000;

const DEFAULTS = { poolSize: 4, leaseMs: 5000 };

/**
 * The PostgreSQL store: the same contract as the LMDB store, for hubs that outgrow one machine.
 *
 * Each `commit` is one transaction holding every write handed to it (the committer gives it a whole turn's writes:
 * group commit), and resolves after `COMMIT` returned with `synchronous_commit` on (set for every connection), so
 * the writes are on the server's disk before the hub acks. Writes to one key in a batch collapse to the last, as in
 * LMDB. Opening applies the pending schema migrations in one transaction under an advisory lock, and refuses a
 * database whose schema is newer than {@link POSTGRES_SCHEMA_VERSION}.
 *
 * With `cluster`, every channel write is fenced: the transaction first locks the channel's lease row (`FOR SHARE`)
 * and requires this process as owner at the epoch it holds, with the lease unexpired by the database's clock; a
 * takeover (`UPDATE … epoch + 1`) waits for that lock, so it lands either before the write (which is then refused)
 * or after it (and the new owner reads it). A refused write fails the commit with `STORE_FAILURE` whose
 * `details.fenced` lists the channels. A commit storing market escrows past its round's bound (counted for the whole
 * cluster, see `postgres-market.ts`) is refused, not failed: a `StoreRefusal` (`LIMIT_EXCEEDED`) naming the
 * channels of the escrows that do not fit, nothing written. A channel record is never written over by one that would
 * take it back (an older latest state, another state at its version, a lower hub-signed version): such a commit fails
 * with `STORE_FAILURE` whose `details.stale` names the channel (`staleChannels`), nothing written.
 *
 * Returns at once; the connection and the migrations happen on first use, and their failure fails that call.
 * @throws TrickleError('STORE_FAILURE') from any method when the database cannot be reached, a migration fails, or
 * the schema is newer than this code
 * @example
 * ```ts
 * const hub = await createHub({ signer, chain, store: openPostgresStore({ url: 'postgres://hub@db/trickle' }) });
 * ```
 */
export function openPostgresStore(options: PostgresStoreOptions): PostgresStore {
  const poolSize = options.poolSize ?? DEFAULTS.poolSize;
  if (!Number.isInteger(poolSize) || poolSize < 2)
    throw new TrickleError('INVALID_ARGUMENT', 'poolSize must be an integer ≥ 2');
  const leaseMs = options.cluster?.leaseMs ?? DEFAULTS.leaseMs;
  if (options.cluster && (!Number.isFinite(leaseMs) || leaseMs < 200))
    throw new TrickleError('INVALID_ARGUMENT', 'cluster.leaseMs must be ≥ 200');
  // Bounds, so that nothing waits forever on a paused peer or a dead server: a transaction left idle (its process
  // paused between statements) is ended by the server, releasing its lease-row lock so a takeover can proceed (its
  // COMMIT then fails); any statement, a lock wait included, ends after the lease time (or 30 s); so does connecting.
  const idleTxMs = options.cluster ? Math.max(100, Math.floor(leaseMs / 2)) : 10_000;
  const statementMs = options.cluster ? leaseMs : 30_000;
  const pool = new pg.Pool({
    connectionString: options.url,
    max: poolSize,
    connectionTimeoutMillis: statementMs,
    options: `-c synchronous_commit=on -c idle_in_transaction_session_timeout=${idleTxMs} -c statement_timeout=${statementMs}`,
    // The server's bounds need a server that answers. One partitioned away without a reset (a failover, a network
    // split) answers nothing and the kernel gives up on the connection only after ~15 min, while every later commit
    // waits behind the one in flight. So a statement unanswered a little past the server's own bound fails here
    // (`Query read timeout`: the connection is discarded, see `readTimedOut`), and keep-alive probes find an idle
    // connection whose peer vanished.
    query_timeout: clientBound(statementMs),
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // An idle connection the server dropped (a restart) is discarded by the pool; the next query opens a new one.
  pool.on('error', () => undefined);
  let reachable = false;

  const fail = (what: string, cause: unknown): TrickleError =>
    cause instanceof TrickleError
      ? cause
      : new TrickleError(
          'STORE_FAILURE',
          `PostgreSQL store: ${what} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
          { cause },
        );
  const query = async <R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>> => {
    try {
      const r = await pool.query<R>(text, values);
      reachable = true;
      return r;
    } catch (e) {
      // An SQL error (a five-character SQLSTATE) came from a live server, unless it is a connection or shutdown class.
      const code = (e as { code?: unknown }).code;
      reachable =
        typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('08') && !code.startsWith('57P');
      throw e;
    }
  };

  const ready = migrate(pool).catch((e: unknown) => {
    throw fail('opening the database', e);
  });
  // A failed open is reported by the first call that awaits `ready`; this only keeps it from being unhandled meanwhile.
  ready.catch(() => undefined);
  const read = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
    await ready;
    try {
      return await run();
    } catch (e) {
      throw fail(what, e);
    }
  };

  /** {@link withPoolClient} on this store's pool: a failed checkout is `STORE_FAILURE`, and the store unreachable. */
  const withClient = <T>(what: string, fn: (client: pg.PoolClient, broke: (e: unknown) => void) => Promise<T>) =>
    withPoolClient(pool, fn, (e) => {
      reachable = false;
      return fail(what, e);
    });

  let tail: Promise<unknown> = Promise.resolve();
  const leases = options.cluster
    ? createLeases(query, () => reachable, leaseMs, options.cluster.url, ready)
    : undefined;
  const market: PostgresMarket | undefined = leases
    ? createPostgresMarket({ pool, ready, owner: leases.owner, leaseMs, url: options.cluster?.url })
    : undefined;

  const outbox = leases ? createRouteOutbox(query, options.url, leases.owner, ready) : undefined;

  return {
    leases,
    market,
    outbox,
    schemaVersion: POSTGRES_SCHEMA_VERSION,
    // In a cluster a process starts holding nothing: it loads a channel when it takes its lease.
    loadChannels: () =>
      leases
        ? read('loadChannels', async () => [])
        : read('loadChannels', async () =>
            (await query<{ record: string }>('SELECT record FROM trickle_channels ORDER BY channel_id')).rows.map((r) =>
              decodeRecord<ChannelRecord>(r.record),
            ),
          ),
    loadPendingRoutes: () =>
      leases
        ? read('loadPendingRoutes', async () => [])
        : read('loadPendingRoutes', async () =>
            (
              await query<{ record: string }>(
                `SELECT record FROM trickle_routes WHERE status = 'pending' ORDER BY payment_id`,
              )
            ).rows.map((r) => decodeRecord<RouteRecord>(r.record)),
          ),
    loadRoute: (paymentId) =>
      read('loadRoute', async () => {
        const r = await query<{ record: string }>('SELECT record FROM trickle_routes WHERE payment_id = $1', [
          paymentId,
        ]);
        return r.rows[0] ? decodeRecord<RouteRecord>(r.rows[0].record) : undefined;
      }),
    // Read to settle a commit whose outcome is unknown: a plain read sees the record from before a transaction the
    // server is still committing (a slow fsync, a synchronous standby's wait), and the hub would answer "failed", then
    // write that older record over the one that landed. FOR SHARE waits for the row lock that transaction took with
    // its write and holds until it has committed and is visible, or rolled back. Waiting beats ending its backend
    // (pg_terminate_backend): no backend pid to trust through a pooler or after a failover, and a commit waiting for
    // its standby is not cut short into one the primary alone holds. The statement bound ends a wait that lasts.
    loadChannel: (channelId) =>
      read('loadChannel', async () => {
        const r = await query<{ record: string }>(
          'SELECT record FROM trickle_channels WHERE channel_id = $1 FOR SHARE',
          [channelId],
        );
        return r.rows[0] ? decodeRecord<ChannelRecord>(r.rows[0].record) : undefined;
      }),
    loadEvidence: (channelId) =>
      read('loadEvidence', async () =>
        (
          await query<{ record: string }>('SELECT record FROM trickle_evidence WHERE channel_id = $1 ORDER BY key', [
            channelId,
          ])
        ).rows.map((r) => decodeRecord<EvidenceRecord>(r.record)),
      ),
    getMeta: (key) =>
      read(
        'getMeta',
        async () =>
          (await query<{ value: string }>('SELECT value FROM trickle_meta WHERE key = $1', [key])).rows[0]?.value,
      ),
    loadMetaPrefix: (prefix) =>
      read(
        'loadMetaPrefix',
        async () =>
          (
            await query<{ key: string; value: string }>(
              'SELECT key, value FROM trickle_meta WHERE starts_with(key, $1) ORDER BY key',
              [prefix],
            )
          ).rows,
      ),
    pruneRoutes: ({ before, now, limit }) => {
      if (!Number.isSafeInteger(limit) || limit < 1 || !Number.isFinite(before) || !Number.isSafeInteger(now))
        return Promise.reject(new TrickleError('INVALID_ARGUMENT', 'pruneRoutes: limit ≥ 1, before and now in ms'));
      return read('pruneRoutes', () => pruneRoutes(Math.floor(before), now, limit));
    },
    commit(writes) {
      if (writes.length === 0) return Promise.resolve();
      if (!leases && writes.some((w) => w.kind === 'outbox'))
        return Promise.reject(new TrickleError('INVALID_ARGUMENT', 'a routing outbox needs the cluster store'));
      // Fencing: the epoch held for every channel written, read now (when the committer hands the batch over, right
      // after checking them) and checked locally first (no round trip for a lost lease).
      let fence: { ids: string[]; epochs: string[] } | undefined;
      if (leases) {
        const ids = [...new Set(writes.flatMap((w) => (w.kind === 'channel' ? [w.record.channelId] : [])))];
        const epochs = ids.map((id) => leases.epochOf(id as ChannelId));
        const missing = ids.filter((_, i) => epochs[i] === undefined);
        if (missing.length > 0) return Promise.reject(fencedError(missing));
        fence = { ids, epochs: epochs.map(String) };
      }
      // One transaction at a time, in call order: a later commit's writes win over an earlier one's, as in LMDB.
      const done = tail.then(() => commitNow(writes, fence));
      tail = done.catch(() => undefined); // the failure is the caller's, through `done`
      return done;
    },
    async close() {
      leases?.stop();
      await tail;
      await outbox?.close();
      await ready.catch(() => undefined); // a failed open has nothing more to close than the pool
      await pool.end();
    },
  };

  /**
   * One batch in one transaction. Rows are locked as they are taken (`FOR UPDATE SKIP LOCKED`): cluster processes
   * pruning at once take different rows, and a commit writing a route again (its payment id reused) either waits for
   * the delete and inserts anew, or lands first — the route is then pending and the delete passes it by.
   */
  async function pruneRoutes(before: number, now: number, limit: number) {
    return withClient('pruneRoutes', async (client, broke) => {
      try {
        await client.query('BEGIN');
        const u = await client.query<{ payment_id: string; record: string }>(
          `SELECT payment_id, record FROM trickle_routes WHERE retain_from IS NULL AND status <> 'pending'
         ORDER BY payment_id LIMIT $1 FOR UPDATE SKIP LOCKED`,
          [limit],
        );
        if (u.rows.length > 0)
          await client.query(
            `UPDATE trickle_routes r SET retain_from = u.at FROM unnest($1::text[], $2::bigint[]) AS u(id, at)
           WHERE r.payment_id = u.id`,
            [
              u.rows.map((r) => r.payment_id),
              u.rows.map((r) => String(routeRetainFrom({ ...decodeRecord<RouteRecord>(r.record), finishedAt: now }))),
            ],
          );
        // A route whose outbox row is not settled stays (its outcome is not final there yet).
        const d = await client.query<{ payment_id: string; lock_hash: string | null }>(
          `DELETE FROM trickle_routes WHERE payment_id IN (
           SELECT r.payment_id FROM trickle_routes r WHERE r.retain_from IS NOT NULL AND r.retain_from <= $1
             AND r.status <> 'pending'
             AND NOT EXISTS (SELECT 1 FROM trickle_outbox o WHERE o.payment_id = r.payment_id AND NOT o.settled)
           ORDER BY r.retain_from LIMIT $2 FOR UPDATE OF r SKIP LOCKED)
         AND retain_from <= $1 AND status <> 'pending'
         RETURNING payment_id, lock_hash`,
          [before, limit],
        );
        const ids = d.rows.map((r) => r.payment_id);
        if (ids.length > 0) {
          // `credited/<id>/…` as a key range ('0' follows '/'), so the primary key's index serves it.
          await client.query(
            `DELETE FROM trickle_meta m USING unnest($1::text[]) AS p(id)
           WHERE (m.key >= $2 || p.id || '/' AND m.key < $2 || p.id || '0') OR m.key = $3 || p.id`,
            [ids, ROUTE_META.credited, ROUTE_META.refused],
          );
          await client.query('DELETE FROM trickle_outbox WHERE payment_id = ANY($1::text[]) AND settled', [ids]);
        }
        const hashes = [...new Set(d.rows.flatMap((r) => (r.lock_hash === null ? [] : [r.lock_hash])))].sort();
        if (hashes.length > 0) {
          // A hash's keys go with its last route. Processes pruning routes on one hash at once take the hash's lock in
          // turn (in lock-key order: no deadlock), so the last to commit sees the others' deletes (READ COMMITTED: each
          // statement reads what committed before it) and finds no route left.
          // A commit writing a route on one of these hashes (or one of its keys) holds the lock from its route's insert
          // to its end (writeBatch): the check below sees that route, or the commit comes after this delete.
          await lockHashes(client, hashes);
          await client.query(
            `DELETE FROM trickle_meta m USING unnest($1::text[]) AS p(h)
           WHERE NOT EXISTS (SELECT 1 FROM trickle_routes r WHERE r.lock_hash = p.h)
             AND (m.key = $2 || p.h OR m.key = $4 || p.h
               OR (m.key >= $3 || p.h || '/' AND m.key < $3 || p.h || '0'))`,
            [hashes, HASH_META.preimage, HASH_META.claimed, HASH_META.revealed],
          );
        }
        const sweepMore = await sweepBatch(client, before, now, limit);
        await client.query('COMMIT');
        reachable = true;
        return {
          pruned: ids.length,
          stamped: u.rows.length,
          more: u.rows.length === limit || ids.length === limit || sweepMore,
        };
      } catch (e) {
        broke(e);
        // the error below is what is reported (and a silent connection is not waited for again, see commitNow)
        if (!readTimedOut(e)) await client.query('ROLLBACK').catch(() => undefined);
        throw e;
      }
    });
  }

  /**
   * One batch of the sweep of lock-hash keys without a route ({@link HASH_SWEEP_KEY}), in the pruner's transaction: at
   * most `limit` keys looked at, from where the last batch stopped. One process sweeps at a time (it holds the
   * progress row; the others pass it by). @returns whether keys are left to look at
   */
  async function sweepBatch(client: pg.PoolClient, before: number, now: number, limit: number): Promise<boolean> {
    const row = await client.query<{ value: string }>(
      'SELECT value FROM trickle_meta WHERE key = $1 FOR UPDATE SKIP LOCKED',
      [HASH_SWEEP_KEY],
    );
    if (row.rows.length === 0) {
      // Not started, or another process holds it (then this insert waits for it and does nothing).
      await client.query('INSERT INTO trickle_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING', [
        HASH_SWEEP_KEY,
        hashSweepValue({ since: now, after: '' }),
      ]);
      return false;
    }
    const state = parseHashSweep(row.rows[0]!.value);
    if (state === 'done' || (state !== undefined && state.since > before)) return false;
    if (state === undefined) {
      await client.query('UPDATE trickle_meta SET value = $2 WHERE key = $1', [
        HASH_SWEEP_KEY,
        hashSweepValue({ since: now, after: '' }),
      ]);
      return false;
    }
    // The next keys of the three prefixes in key order ('/' + 1 is '0': a prefix's keys are below that bound).
    const ranges = HASH_SWEEP_PREFIXES.map((_, i) => `(key >= $${2 * i + 2} AND key < $${2 * i + 3})`).join(' OR ');
    const keys = (
      await client.query<{ key: string }>(
        `SELECT key FROM trickle_meta WHERE key > $1 AND (${ranges}) ORDER BY key LIMIT ${Number(limit)}`,
        [state.after, ...HASH_SWEEP_PREFIXES.flatMap((p) => [p, `${p.slice(0, -1)}0`])],
      )
    ).rows.map((r) => r.key);
    if (keys.length > 0) {
      // Deleted only if no route on the hash is stored, checked in the delete under the hash's lock (a key it sees was
      // written after its route was committed, so the route is seen too, see HASH_SWEEP_KEY; a route being committed
      // holds the lock, see writeBatch). A hash whose lock a commit holds is passed by, not waited for (no deadlock
      // with the locks this transaction holds already): a route on it is being written, so its keys are not orphans.
      const free = (
        await client.query<{ h: string }>(
          `SELECT h FROM (SELECT DISTINCT unnest($2::text[]) AS h) s WHERE pg_try_advisory_xact_lock($1::int, hashtext(h))`,
          [HASH_LOCK, keys.map((k) => hashOfMeta(k)!)],
        )
      ).rows.map((r) => r.h);
      await client.query(
        `DELETE FROM trickle_meta m USING unnest($1::text[], $2::text[]) AS k(key, h)
         WHERE m.key = k.key AND k.h = ANY($3::text[])
           AND NOT EXISTS (SELECT 1 FROM trickle_routes r WHERE r.lock_hash = k.h)`,
        [keys, keys.map((k) => hashOfMeta(k)!), free],
      );
    }
    const more = keys.length === limit;
    await client.query('UPDATE trickle_meta SET value = $2 WHERE key = $1', [
      HASH_SWEEP_KEY,
      hashSweepValue(more ? { since: state.since, after: keys[keys.length - 1]! } : 'done'),
    ]);
    return more;
  }

  async function commitNow(
    writes: readonly StoreWrite[],
    fence: { ids: string[]; epochs: string[] } | undefined,
  ): Promise<void> {
    await ready;
    const batch = collapse(writes);
    if (plainChannels(writes)) return commitPlain(batch, fence);
    return withClient('commit', async (client, broke) => {
      let committing = false;
      try {
        await client.query('BEGIN');
        if (fence && fence.ids.length > 0) {
          const ok = await client.query<{ channel_id: string }>(
            `SELECT l.channel_id FROM trickle_leases l JOIN unnest($1::text[], $2::bigint[]) AS h(id, epoch) ON l.channel_id = h.id AND l.epoch = h.epoch
           WHERE l.owner = $3 AND l.expires_at > clock_timestamp() FOR SHARE OF l`,
            [fence.ids, fence.epochs, leases!.owner],
          );
          if (ok.rows.length !== fence.ids.length) {
            const held = new Set(ok.rows.map((r) => r.channel_id));
            const lost = fence.ids.filter((id) => !held.has(id));
            await client.query('ROLLBACK');
            throw fencedError(lost);
          }
        }
        if (leases) {
          try {
            await checkOutboxCredits(client, writes);
          } catch (e) {
            await client.query('ROLLBACK');
            throw e;
          }
        }
        await writeBatch(client, batch);
        if (leases) await writeOutbox(client, writes);
        if (market) {
          // Last before COMMIT: the open round's count is the cluster's one hot row, locked from here to the commit.
          try {
            await market.countEscrows(client, writes);
          } catch (e) {
            await client.query('ROLLBACK');
            throw e;
          }
        }
        committing = true;
        await client.query('COMMIT');
        reachable = true;
      } catch (e) {
        if (!(e instanceof TrickleError)) {
          broke(e);
          reachable = false;
          // The transaction is void on a dropped connection; on a live one, end it. The connection is discarded below.
          // Not on a silent one: the ROLLBACK would wait out a bound of its own; the server ends the transaction when
          // the connection closes.
          if (!readTimedOut(e)) await client.query('ROLLBACK').catch(() => undefined);
        }
        // COMMIT failed: the server may have committed before the connection went, or before it sent its error (a
        // shutdown's FATAL after the commit record), so the outcome is unknown (see `outcomeUnknown`).
        if (committing) throw unknownOutcome(e);
        throw staleWrite(e) ?? fail('commit', e);
      }
    });
  }

  /**
   * A commit of plain channel records ({@link plainChannels}) in one statement, so one round trip instead of four
   * (BEGIN, the fence, the upsert, COMMIT): the fence's lease rows are locked (FOR SHARE) and counted first, and the
   * records are written only if every lease is held; the statement is its own transaction. An error the server
   * answered (severity ERROR) rolled it back; a connection lost meanwhile, or a FATAL answer, leaves the outcome
   * unknown, as a failed COMMIT does.
   */
  async function commitPlain(b: Collapsed, fence: { ids: string[]; epochs: string[] } | undefined): Promise<void> {
    return withClient('commit', async (client, broke) => {
      const v = [...b.channels.values()];
      const rows: [string[], string[], string[]] = [
        [...b.channels.keys()],
        v.map((x) => x.device),
        v.map((x) => x.record),
      ];
      try {
        if (!fence) {
          await client.query({ name: 'trickle-commit-plain', text: PLAIN_UPSERT, values: rows });
          reachable = true;
          return;
        }
        const r = await client.query<{ held: string[] }>({
          name: 'trickle-commit-plain-fenced',
          text: PLAIN_FENCED_UPSERT,
          values: [fence.ids, fence.epochs, leases!.owner, fence.ids.length, ...rows],
        });
        reachable = true;
        const held = new Set(r.rows[0]!.held);
        if (held.size !== fence.ids.length) throw fencedError(fence.ids.filter((id) => !held.has(id)));
      } catch (e) {
        if (e instanceof TrickleError) throw e;
        if (!(e instanceof pg.DatabaseError) || e.severity !== 'ERROR') {
          broke(e);
          reachable = false;
          throw unknownOutcome(e);
        }
        throw staleWrite(e) ?? fail('commit', e);
      }
    });
  }
}

/**
 * Whether a commit holds only channel records that nothing else is written with: no route, evidence, meta or outbox
 * write, and no record proposing a routed payment or holding a lock (the outbox and market checks of a commit act on
 * those only). A device's plain payments are such commits.
 */
function plainChannels(writes: readonly StoreWrite[]): boolean {
  for (const w of writes) {
    if (w.kind !== 'channel') return false;
    if (w.record.outgoing?.paymentId !== undefined || (w.record.locks !== undefined && w.record.locks.length > 0))
      return false;
  }
  return true;
}

const PLAIN_UPSERT = `INSERT INTO trickle_channels (channel_id, device, record) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
  ON CONFLICT (channel_id) DO UPDATE SET record = EXCLUDED.record`;

/**
 * {@link PLAIN_UPSERT} fenced, in one statement: `held` locks (FOR SHARE, as a commit's fence does) the lease rows this
 * process holds at the epochs given; the records are written only when all `$4` are held. Returns the channel ids held.
 */
const PLAIN_FENCED_UPSERT = `WITH held AS (
    SELECT l.channel_id FROM trickle_leases l JOIN unnest($1::text[], $2::bigint[]) AS h(id, epoch) ON l.channel_id = h.id AND l.epoch = h.epoch
    WHERE l.owner = $3 AND l.expires_at > clock_timestamp() FOR SHARE OF l
  ), written AS (
    INSERT INTO trickle_channels (channel_id, device, record) SELECT * FROM unnest($5::text[], $6::text[], $7::text[])
    WHERE (SELECT count(*) FROM held) = $4::int
    ON CONFLICT (channel_id) DO UPDATE SET record = EXCLUDED.record
    RETURNING 1
  )
  SELECT ARRAY(SELECT channel_id FROM held) AS held, (SELECT count(*) FROM written) AS written`;

/**
 * How long the client waits for the answer to a statement the server bounds to `serverMs` (`statement_timeout`): a
 * margin later, so that a server that answers reports its own timeout first.
 */
function clientBound(serverMs: number): number {
  return serverMs + Math.max(500, Math.floor(serverMs / 10));
}

/**
 * Whether a statement failed because no answer came within its client-side bound (node-postgres's `query_timeout`).
 * The server may still run it, or have run it (a COMMIT's outcome is unknown), and the connection's state is unknown:
 * it is discarded (`broke`), and nothing more is sent on it.
 */
function readTimedOut(e: unknown): boolean {
  return e instanceof Error && !(e instanceof pg.DatabaseError) && e.message === 'Query read timeout';
}

/** The SQLSTATE of the channel table's guard (`trickle_channels_forward`, schema 8): a record would go back. */
const STALE_WRITE = 'TR001';

/**
 * A commit the channel table's guard failed (see `staleChannels`): nothing of it was written, and the store holds a newer
 * record of the channel than the one written, which the hub reads again.
 */
function staleWrite(e: unknown): TrickleError | undefined {
  if (!(e instanceof pg.DatabaseError) || e.code !== STALE_WRITE || e.detail === undefined) return undefined;
  return new TrickleError('STORE_FAILURE', `PostgreSQL store: ${e.message}`, {
    cause: e,
    details: { stale: [e.detail] },
  });
}

/** A commit's failure that may have landed all the same (see `outcomeUnknown`). */
function unknownOutcome(e: unknown): TrickleError {
  return new TrickleError('STORE_FAILURE', `PostgreSQL store: commit's outcome unknown: ${String(e)}`, {
    cause: e,
    details: { outcomeUnknown: true },
  });
}

/** The writes of one commit, the last per key. */
interface Collapsed {
  readonly channels: Map<string, { device: string; record: string }>;
  readonly routes: Map<string, { status: string; record: string; retainFrom: string | null; lockHash: string | null }>;
  readonly evidence: Map<string, { channelId: string; record: string }>;
  /** `undefined`: delete. */
  readonly meta: Map<string, string | undefined>;
}

function collapse(writes: readonly StoreWrite[]): Collapsed {
  const c: Collapsed = { channels: new Map(), routes: new Map(), evidence: new Map(), meta: new Map() };
  for (const w of writes) {
    switch (w.kind) {
      case 'channel':
        c.channels.set(w.record.channelId, {
          device: w.record.params.device,
          record: encodeChannelRecord(w.record).toString('utf8'),
        });
        break;
      case 'route':
        c.routes.set(w.route.paymentId, {
          status: w.route.status,
          record: encodeRecord(w.route).toString('utf8'),
          retainFrom: routeRetainFrom(w.route)?.toString() ?? null,
          lockHash: w.route.lock?.hash ?? null,
        });
        break;
      case 'evidence':
        c.evidence.set(evidenceKey(w.evidence), {
          channelId: w.evidence.channelId,
          record: encodeRecord(w.evidence).toString('utf8'),
        });
        break;
      case 'meta':
        c.meta.set(w.key, w.value);
        break;
      case 'deleteMeta':
        c.meta.set(w.key, undefined);
        break;
    }
  }
  return c;
}

/**
 * Takes the per-hash advisory locks ({@link HASH_LOCK}) of `hashes` for the rest of the transaction, in lock-key
 * order, so that two transactions taking several never deadlock on them.
 */
async function lockHashes(client: pg.PoolClient, hashes: readonly string[]): Promise<void> {
  if (hashes.length === 0) return;
  await client.query(
    `SELECT pg_advisory_xact_lock($1::int, k) FROM (SELECT DISTINCT hashtext(h) AS k FROM unnest($2::text[]) AS h ORDER BY 1) s`,
    [HASH_LOCK, hashes],
  );
}

/** The lock hashes a commit writes: its routes' and its hash keys' ({@link HASH_META}). */
function hashesOf(b: Collapsed): string[] {
  const out = new Set<string>();
  for (const r of b.routes.values()) if (r.lockHash !== null) out.add(r.lockHash);
  for (const key of b.meta.keys()) {
    const h = hashOfMeta(key);
    if (h !== undefined) out.add(h);
  }
  return [...out];
}

/**
 * One statement per table touched: an `unnest` upsert carries any number of rows in one round trip. Between the
 * routes and the rest, the locks of the lock hashes this commit writes ({@link lockHashes}): a pruner deletes a hash's
 * keys under the same lock once it has checked that no route on the hash is left, so it either sees this commit's
 * route or deletes before this commit's keys are written (without the lock, a route inserted and not yet committed
 * escaped that check, and the hash's keys went while it was pending). Taken after the routes, so that a commit waiting
 * for a route row a pruner is deleting (its payment id reused) holds no lock that pruner waits for.
 */
async function writeBatch(client: pg.PoolClient, b: Collapsed): Promise<void> {
  if (b.channels.size > 0) {
    const v = [...b.channels.values()];
    await client.query(
      `INSERT INTO trickle_channels (channel_id, device, record) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
       ON CONFLICT (channel_id) DO UPDATE SET record = EXCLUDED.record`,
      [[...b.channels.keys()], v.map((x) => x.device), v.map((x) => x.record)],
    );
  }
  if (b.routes.size > 0) {
    const v = [...b.routes.values()];
    await client.query(
      `INSERT INTO trickle_routes (payment_id, status, record, retain_from, lock_hash)
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[])
       ON CONFLICT (payment_id) DO UPDATE SET status = EXCLUDED.status, record = EXCLUDED.record,
         retain_from = EXCLUDED.retain_from, lock_hash = EXCLUDED.lock_hash`,
      [
        [...b.routes.keys()],
        v.map((x) => x.status),
        v.map((x) => x.record),
        v.map((x) => x.retainFrom),
        v.map((x) => x.lockHash),
      ],
    );
  }
  await lockHashes(client, hashesOf(b));
  if (b.evidence.size > 0) {
    const v = [...b.evidence.values()];
    await client.query(
      `INSERT INTO trickle_evidence (key, channel_id, record) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
       ON CONFLICT (key) DO UPDATE SET record = EXCLUDED.record`,
      [[...b.evidence.keys()], v.map((x) => x.channelId), v.map((x) => x.record)],
    );
  }
  const puts = [...b.meta].filter((e): e is [string, string] => e[1] !== undefined);
  const deletes = [...b.meta].filter(([, v]) => v === undefined).map(([k]) => k);
  if (puts.length > 0) {
    await client.query(
      `INSERT INTO trickle_meta (key, value) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
      [puts.map((p) => p[0]), puts.map((p) => p[1])],
    );
  }
  if (deletes.length > 0) await client.query('DELETE FROM trickle_meta WHERE key = ANY($1::text[])', [deletes]);
}

/** Applies the migrations this database lacks, in one transaction; refuses a newer schema. */
async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  // As in a commit: a connection dropped by the server fails the migration's query; the event must not end the process.
  const onError = () => undefined;
  client.on('error', onError);
  // The pool's client-side bound follows the store's statement bound; the migration's statements have their own.
  const query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) =>
    client.query<R>({ text, values, query_timeout: clientBound(MIGRATION_BOUND_MS) } as pg.QueryConfig);
  try {
    // Not held to a cluster's bounds (a transaction idle for half the lease is ended, a statement may last a lease): a
    // hub starting up does much else on its event loop between the migration's statements, and processes starting
    // together wait here for the one migrating. Set in the statement that opens the transaction, with no gap before.
    await query(
      `BEGIN; SET LOCAL idle_in_transaction_session_timeout = ${MIGRATION_BOUND_MS}; SET LOCAL statement_timeout = ${MIGRATION_BOUND_MS}`,
    );
    await query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await query('CREATE TABLE IF NOT EXISTS trickle_schema (version integer NOT NULL)');
    const row = (await query<{ version: number }>('SELECT version FROM trickle_schema')).rows[0];
    const version = row?.version ?? 0;
    if (version > MIGRATIONS.length) {
      throw new TrickleError(
        'STORE_FAILURE',
        `the database schema is at version ${version}, newer than this hub knows (${MIGRATIONS.length}): upgrade the hub`,
        { details: { version, known: MIGRATIONS.length } },
      );
    }
    for (let v = version; v < MIGRATIONS.length; v++) await query(MIGRATIONS[v]!);
    if (row === undefined) await query('INSERT INTO trickle_schema (version) VALUES ($1)', [MIGRATIONS.length]);
    else if (version < MIGRATIONS.length) await query('UPDATE trickle_schema SET version = $1', [MIGRATIONS.length]);
    await query('COMMIT');
    client.off('error', onError);
    client.release();
  } catch (e) {
    if (!readTimedOut(e)) await query('ROLLBACK').catch(() => undefined); // the error below is what is reported
    client.off('error', onError);
    client.release(true);
    throw e;
  }
}

type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<pg.QueryResult<R>>;

interface Held {
  readonly epoch: bigint;
  /** `performance.now()` past which this process no longer counts the lease as held. */
  validUntil: number;
}

/**
 * Leases in `trickle_leases`, timed by the database's clock (`clock_timestamp()`), so processes need no shared
 * clock. A process counts a lease as held until `sent + leaseMs − leaseMs/4`, where `sent` is when it sent the
 * query that set the expiry (which the database computed later, from its own clock): it stops committing for the
 * channel a quarter of the lease time before anyone else can take it. Renewals run every `leaseMs/4`.
 */
function createLeases(
  query: Query,
  reachable: () => boolean,
  leaseMs: number,
  initialUrl: string | undefined,
  ready: Promise<void>,
): ChannelLeases & { stop(): void } {
  let url = initialUrl;
  const owner = `${hostname()}:${process.pid}:${randomBytes(6).toString('hex')}`;
  const margin = leaseMs / 4;
  const held = new Map<ChannelId, Held>();
  /** The last epoch this process held per channel, kept when the lease only ran out here (the database was down). */
  const lastEpoch = new Map<ChannelId, bigint>();
  const listeners: ((ids: ChannelId[]) => void)[] = [];
  const lost = (ids: ChannelId[]) => {
    for (const id of ids) {
      held.delete(id);
      lastEpoch.delete(id);
    }
    if (ids.length > 0) for (const l of listeners) l(ids);
  };

  const renew = async () => {
    const ids = [...held.keys()];
    if (ids.length === 0) {
      // Nothing to renew: a ping keeps `databaseReachable()` current for /health.
      try {
        await query('SELECT 1');
      } catch {
        // recorded by query() in `reachable`
      }
      return;
    }
    const sent = performance.now();
    try {
      const r = await query<{ channel_id: ChannelId; epoch: string }>(
        `UPDATE trickle_leases SET expires_at = clock_timestamp() + $3 * interval '1 millisecond'
         WHERE owner = $1 AND channel_id = ANY($2::text[]) AND expires_at > clock_timestamp() RETURNING channel_id, epoch`,
        [owner, ids, leaseMs],
      );
      const got = new Map(r.rows.map((row) => [row.channel_id, BigInt(row.epoch)]));
      let gone: ChannelId[] = [];
      for (const id of ids) {
        const h = held.get(id);
        if (!h) continue; // released meanwhile
        if (got.get(id) === h.epoch) h.validUntil = sent + leaseMs - margin;
        else gone.push(id);
      }
      // A renewal held up past the lease's term (sent while the database was down, run once it was back) finds it
      // expired: still this process's at the same epoch, nobody took it, so it only ran out here, as when the renewal
      // fails — taken again on next use, the device kept. Lost only when another owner or epoch holds it.
      const now = performance.now();
      const late = gone.filter((id) => held.get(id)!.validUntil <= now);
      if (late.length > 0) {
        const rows = await query<{ channel_id: ChannelId; owner: string; epoch: string }>(
          'SELECT channel_id, owner, epoch FROM trickle_leases WHERE channel_id = ANY($1::text[])',
          [late],
        );
        const ranOut = new Set(
          rows.rows
            .filter((row) => row.owner === owner && BigInt(row.epoch) === held.get(row.channel_id)?.epoch)
            .map((row) => row.channel_id),
        );
        for (const id of ranOut) held.delete(id);
        gone = gone.filter((id) => !ranOut.has(id));
      }
      lost(gone);
    } catch {
      // The database is unreachable: leases run out locally; they are taken again (new epoch) on next use.
      const now = performance.now();
      for (const [id, h] of held) if (h.validUntil <= now) held.delete(id);
    }
  };
  let renewing: Promise<void> | undefined;
  const timer = setInterval(() => {
    renewing ??= renew().finally(() => (renewing = undefined));
  }, margin);
  timer.unref();

  const tryTake = async (channelId: ChannelId, device: Address): Promise<Held | undefined> => {
    const sent = performance.now();
    const r = await query<{ epoch: string }>(
      `INSERT INTO trickle_leases (channel_id, device, owner, owner_url, epoch, expires_at)
       VALUES ($1, $2, $3, $4, 1, clock_timestamp() + $5 * interval '1 millisecond')
       ON CONFLICT (channel_id) DO UPDATE SET owner = EXCLUDED.owner, owner_url = EXCLUDED.owner_url, epoch = trickle_leases.epoch + 1,
         expires_at = clock_timestamp() + $5 * interval '1 millisecond'
       WHERE trickle_leases.expires_at <= clock_timestamp() OR trickle_leases.owner = EXCLUDED.owner
       RETURNING epoch`,
      [channelId, device, owner, url ?? null, leaseMs],
    );
    const row = r.rows[0];
    return row ? { epoch: BigInt(row.epoch), validUntil: sent + leaseMs - margin } : undefined;
  };

  const wrap = (what: string, e: unknown) =>
    e instanceof TrickleError
      ? e
      : new TrickleError('STORE_FAILURE', `lease ${what} failed: ${e instanceof Error ? e.message : String(e)}`, {
          cause: e,
        });

  return {
    owner,
    leaseMs,
    epochOf(channelId) {
      const h = held.get(channelId);
      return h !== undefined && performance.now() < h.validUntil ? h.epoch : undefined;
    },
    async acquire(channelId, device, waitMs) {
      await ready;
      const h = held.get(channelId);
      if (h !== undefined && performance.now() < h.validUntil) return { held: true };
      const deadline = performance.now() + waitMs;
      for (;;) {
        let got: Held | undefined;
        try {
          got = await tryTake(channelId, device);
        } catch (e) {
          throw wrap('acquire', e);
        }
        if (got) {
          // Epochs rise by one per take: the one before this was this process's own, so nobody wrote in between
          // and the copy in memory is current (its lease had only run out here, e.g. while the database was down).
          if (lastEpoch.get(channelId) === got.epoch - 1n) {
            lastEpoch.set(channelId, got.epoch);
            held.set(channelId, got);
            return { held: true };
          }
          // Until the record is read, no epoch of this process is the last one before the next take: a take after a
          // failed read must read the record too, not keep the copy in memory.
          lastEpoch.delete(channelId);
          // Not held (epochOf undefined, every write of the channel fenced) until the previous owner's record is read:
          // meanwhile this process's copy is older than it, and a write computed from that copy (a round credit, a
          // routed credit) would pass the fence at the new epoch and overwrite the previous owner's last commit.
          held.delete(channelId);
          let record: ChannelRecord | undefined;
          try {
            const r = await query<{ record: string }>('SELECT record FROM trickle_channels WHERE channel_id = $1', [
              channelId,
            ]);
            record = r.rows[0] ? decodeRecord<ChannelRecord>(r.rows[0].record) : undefined;
          } catch (e) {
            throw wrap('acquire', e);
          }
          lastEpoch.set(channelId, got.epoch);
          held.set(channelId, got);
          return { held: false, record };
        }
        const left = deadline - performance.now();
        if (left <= 0) {
          const o = await query<{ owner_url: string | null }>(
            'SELECT owner_url FROM trickle_leases WHERE channel_id = $1',
            [channelId],
          ).catch(() => undefined);
          throw new TrickleError('STORE_FAILURE', 'another hub process holds this channel', {
            details: { channelId, ownerUrl: o?.rows[0]?.owner_url ?? undefined },
          });
        }
        await new Promise((r) => setTimeout(r, Math.min(left, margin)));
      }
    },
    async channelsOfDevice(device) {
      await ready;
      try {
        return (
          await query<{ channel_id: ChannelId }>(
            'SELECT channel_id FROM trickle_channels WHERE device = $1 ORDER BY channel_id',
            [device],
          )
        ).rows.map((r) => r.channel_id);
      } catch (e) {
        throw wrap('lookup', e);
      }
    },
    async release(channelIds) {
      const mine = channelIds.filter((id) => held.delete(id));
      for (const id of channelIds) lastEpoch.delete(id);
      if (mine.length === 0) return;
      try {
        await query(
          `UPDATE trickle_leases SET expires_at = '-infinity' WHERE owner = $1 AND channel_id = ANY($2::text[])`,
          [owner, mine],
        );
      } catch (e) {
        throw wrap('release', e); // not released: the leases run out by themselves after leaseMs
      }
    },
    onLost(listener) {
      listeners.push(listener);
    },
    held: () => held.size,
    heldChannels: () => [...held.keys()],
    databaseReachable: reachable,
    advertise(u) {
      url = u;
    },
    stop() {
      clearInterval(timer);
    },
  };
}
