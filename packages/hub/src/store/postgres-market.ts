import pg from 'pg';
import { TrickleError } from '@trickle/protocol/errors';
import type { ChannelId } from '@trickle/protocol/types';
import { fencedError } from '../leases.js';
import type { MarketRounds, MarketTransaction } from '../market-rounds.js';
import { StoreRefusal, decodeRecord, type ChannelRecord, type StoreWrite } from './types.js';
import { withPoolClient } from './pg-client.js';

/** The round lease's key in `trickle_leases` (no channel id looks like it: those are 0x-hex). */
export const ROUND_LEASE_KEY = 'market/round';
/** The open round's entry in `trickle_meta` (the market clock's own key): every market transaction locks it. */
const ROUND_ENTRY = 'market/round';
/** The market clock's keys of escrows (`market/escrow/<order id>`) and orders (`market/order/<round, 20 digits>/<id>`). */
const ESCROW_PREFIX = 'market/escrow/';
const orderPrefix = (round: bigint) => `market/order/${round.toString().padStart(20, '0')}/`;
/** Where the order id starts in an order's key (1-based, as `substr` counts). */
const ORDER_ID_AT = orderPrefix(0n).length + 1;

export interface PostgresMarketDeps {
  readonly pool: pg.Pool;
  /** Resolves once the schema is migrated; its failure fails every call. */
  readonly ready: Promise<void>;
  /** This process's owner id (the channel leases' one). */
  readonly owner: string;
  readonly leaseMs: number;
  readonly url: string | undefined;
}

/**
 * The first key after every key that starts with `prefix`, in the "C" order of `trickle_meta`'s keys: a prefix read
 * is then a range of its primary key, with its bounds known to the planner. (`starts_with` joined to a list of
 * prefixes read the whole table — every routed payment's credit marker included — in each clearing, about a second
 * per million entries, until the clearing outlasted its statement bound and the market stopped clearing.)
 */
function prefixEnd(prefix: string): string {
  if (prefix.length === 0) return '\u{10FFFF}';
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

/** The keys of one prefix, bounds in parameters `$n` and `$n+1` (a range of the primary key, as they are known). */
const range = (n: number): string => `(key >= $${n} AND key < $${n + 1})`;

/**
 * The cluster's market on PostgreSQL (see {@link MarketRounds}). The round lease is a row of `trickle_leases` under
 * {@link ROUND_LEASE_KEY}, timed by the database's clock like a channel lease and counted as held here until a
 * quarter of the lease time before the database can expire it; a renewal keeps its epoch, a takeover raises it. A
 * clearing locks that row (`FOR SHARE`) and requires this process as owner at its epoch, unexpired; every market
 * transaction, clearing or placement, then locks the open round's entry of `trickle_meta` `FOR UPDATE`, so they
 * run one after another across the cluster and a round is cleared once whoever tries.
 *
 * The entries of the open round's and the next round's clearing records are counted in `trickle_market_entries`
 * (schema 5), for the whole cluster: a placement locks both counts and stores them as its orders leave them, a
 * channel commit storing escrows counts them in the open round ({@link PostgresMarket.countEscrows}), and a clearing
 * drops its round's count; so a round takes at most the bound ({@link MarketRounds.limitEntries}) whichever
 * processes took its entries, and the count outlives any of them.
 */
/** The cluster's market, and the count of the escrows a channel commit stores (see {@link countEscrows}). */
export interface PostgresMarket extends MarketRounds {
  /**
   * Inside a commit's transaction, after its writes: count the escrows it stores in the open round's entries, or
   * refuse the channels of those that do not fit. @throws {@link StoreRefusal} `LIMIT_EXCEEDED` naming those
   * channels (`details`: `round`, `max`, `refused: 'escrow'`, `entries`; the caller rolls back); a database error
   */
  countEscrows(client: pg.PoolClient, writes: readonly StoreWrite[]): Promise<void>;
}

export function createPostgresMarket(d: PostgresMarketDeps): PostgresMarket {
  const margin = d.leaseMs / 4;
  let url = d.url;
  /** The bound of a round's entries (`limitEntries`); unset, counted without one. */
  let maxEntries = Number.MAX_SAFE_INTEGER;
  let held: { epoch: bigint; validUntil: number } | undefined;
  const fail = (what: string, e: unknown): TrickleError =>
    e instanceof TrickleError
      ? e
      : new TrickleError(
          'STORE_FAILURE',
          `PostgreSQL market: ${what} failed: ${e instanceof Error ? e.message : String(e)}`,
          { cause: e },
        );
  const leading = () => held !== undefined && performance.now() < held.validUntil;

  return {
    owner: d.owner,
    leaseMs: d.leaseMs,
    leading,
    advertise(u) {
      url = u;
    },
    async lead() {
      await d.ready.catch((e: unknown) => {
        throw fail('round lease', e);
      });
      const sent = performance.now();
      try {
        const r = await d.pool.query<{ epoch: string }>(
          `INSERT INTO trickle_leases (channel_id, device, owner, owner_url, epoch, expires_at)
           VALUES ($1, '', $2, $3, 1, clock_timestamp() + $4 * interval '1 millisecond')
           ON CONFLICT (channel_id) DO UPDATE SET owner = EXCLUDED.owner, owner_url = EXCLUDED.owner_url,
             epoch = CASE WHEN trickle_leases.owner = EXCLUDED.owner AND trickle_leases.expires_at > clock_timestamp()
                          THEN trickle_leases.epoch ELSE trickle_leases.epoch + 1 END,
             expires_at = EXCLUDED.expires_at
           WHERE trickle_leases.expires_at <= clock_timestamp() OR trickle_leases.owner = EXCLUDED.owner
           RETURNING epoch`,
          [ROUND_LEASE_KEY, d.owner, url ?? null, d.leaseMs],
        );
        const row = r.rows[0];
        held = row ? { epoch: BigInt(row.epoch), validUntil: sent + d.leaseMs - margin } : undefined;
      } catch (e) {
        // Unknown whether it was renewed: counted as held only until the term of the last renewal known.
        if (!leading()) held = undefined;
        throw fail('round lease', e);
      }
      return leading();
    },
    async resign() {
      if (!held) return;
      held = undefined;
      try {
        await d.pool.query(`UPDATE trickle_leases SET expires_at = '-infinity' WHERE channel_id = $1 AND owner = $2`, [
          ROUND_LEASE_KEY,
          d.owner,
        ]);
      } catch (e) {
        throw fail('round lease release', e); // not released: it lapses by itself after the lease time
      }
    },
    async openRound() {
      await d.ready.catch((e: unknown) => {
        throw fail('open round', e);
      });
      try {
        const r = await d.pool.query<{ value: string }>('SELECT value FROM trickle_meta WHERE key = $1', [ROUND_ENTRY]);
        return BigInt(r.rows[0]?.value ?? '1');
      } catch (e) {
        throw fail('open round', e);
      }
    },
    transact: <T>(t: MarketTransaction<T>) => transact(t),
    limitEntries(max) {
      if (!Number.isSafeInteger(max) || max < 1)
        throw new TrickleError('INVALID_ARGUMENT', 'the bound of a round’s entries must be a whole number, 1 or more');
      maxEntries = max;
    },
    async peek(key) {
      await d.ready.catch((e: unknown) => {
        throw fail('open round', e);
      });
      try {
        const r = await d.pool.query<{ round: string; entries: string | null; stored: boolean }>(
          `SELECT m.value AS round, e.entries::text AS entries, EXISTS (SELECT 1 FROM trickle_meta WHERE key = $2) AS stored
           FROM (SELECT coalesce((SELECT value FROM trickle_meta WHERE key = $1), '1') AS value) m
           LEFT JOIN trickle_market_entries e ON e.round = m.value::bigint`,
          [ROUND_ENTRY, key],
        );
        const row = r.rows[0]!;
        return { round: BigInt(row.round), entries: Number(row.entries ?? 0), stored: row.stored };
      } catch (e) {
        throw fail('open round', e);
      }
    },
    countEscrows,
    async find(prefixes, text) {
      await d.ready.catch((e: unknown) => {
        throw fail('market entries', e);
      });
      try {
        const list = [...prefixes];
        const r = await d.pool.query<{ key: string; value: string }>(
          `SELECT key, value FROM trickle_meta WHERE (${list.map((_, i) => range(2 + 2 * i)).join(' OR ') || 'false'})
           AND strpos(value, $1) > 0 ORDER BY key`,
          [text, ...list.flatMap((p) => [p, prefixEnd(p)])],
        );
        return r.rows;
      } catch (e) {
        throw fail('market entries', e);
      }
    },
    async landedRounds(channelIds) {
      await d.ready.catch((e: unknown) => {
        throw fail('channel rounds', e);
      });
      try {
        const r = await d.pool.query<{ record: string }>(
          'SELECT record FROM trickle_channels WHERE channel_id = ANY($1::text[])',
          [[...channelIds]],
        );
        const out = new Map<ChannelId, { round: bigint; open: boolean }>();
        for (const row of r.rows) {
          const c = decodeRecord<ChannelRecord>(row.record);
          out.set(c.channelId, { round: c.latest.state.round, open: c.status === 'open' && !c.latest.state.isFinal });
        }
        return out;
      } catch (e) {
        throw fail('channel rounds', e);
      }
    },
  };

  async function transact<T>(t: MarketTransaction<T>): Promise<T> {
    await d.ready.catch((e: unknown) => {
      throw fail('market transaction', e);
    });
    const fence = t.fenced ? (leading() ? held!.epoch : undefined) : null;
    if (fence === undefined) throw fencedError([ROUND_LEASE_KEY]);
    return withPoolClient(
      d.pool,
      (client, broke) => inTransaction(client, broke, t, fence),
      (e) => fail('market transaction', e),
    );
  }

  async function inTransaction<T>(
    client: pg.PoolClient,
    broke: (e: unknown) => void,
    t: MarketTransaction<T>,
    fence: bigint | null,
  ): Promise<T> {
    try {
      await client.query('BEGIN');
      if (fence !== null) {
        const ok = await client.query(
          `SELECT 1 FROM trickle_leases WHERE channel_id = $1 AND owner = $2 AND epoch = $3
           AND expires_at > clock_timestamp() FOR SHARE`,
          [ROUND_LEASE_KEY, d.owner, String(fence)],
        );
        if (ok.rows.length !== 1) {
          held = undefined;
          throw fencedError([ROUND_LEASE_KEY]);
        }
      }
      const round = BigInt((await client.query<{ value: string }>(OPEN_ROUND_UPSERT, [ROUND_ENTRY])).rows[0]!.value);
      // A clearing locks its round's count first (an escrow commit counted in it and not yet committed lands first,
      // and is read below) and drops it: the round closes.
      if (t.clears) await client.query('DELETE FROM trickle_market_entries WHERE round <= $1', [String(round)]);
      const counts = t.counts ? await lockCounts(client, [round, round + 1n], round, []) : new Map<bigint, number>();
      const counted = new Map(counts);
      const prefixes = [...t.prefixes(round)];
      const keys = [...(t.keys?.(round) ?? [])];
      const entries = new Map<string, string>();
      if (prefixes.length > 0 || keys.length > 0) {
        const rows = await client.query<{ key: string; value: string }>(
          `SELECT key, value FROM trickle_meta WHERE key = ANY($1::text[])${prefixes.map((_, i) => ` OR ${range(2 + 2 * i)}`).join('')}`,
          [keys, ...prefixes.flatMap((p) => [p, prefixEnd(p)])],
        );
        for (const r of [...rows.rows].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)))
          entries.set(r.key, r.value);
      }
      const { writes, result } = t.run(round, entries, counts);
      const changed = [...counts].filter(([r, n]) => counted.get(r) !== n);
      if (changed.length > 0)
        await client.query(
          `INSERT INTO trickle_market_entries (round, entries) SELECT * FROM unnest($1::bigint[], $2::bigint[])
           ON CONFLICT (round) DO UPDATE SET entries = EXCLUDED.entries`,
          [changed.map(([r]) => String(r)), changed.map(([, n]) => String(n))],
        );
      const last = new Map<string, string | undefined>();
      for (const w of writes) last.set(w.key, w.kind === 'meta' ? w.value : undefined);
      const puts = [...last].filter((e): e is [string, string] => e[1] !== undefined);
      const deletes = [...last].filter(([, v]) => v === undefined).map(([k]) => k);
      // Puts and deletes in one statement (their keys are distinct: the last write per key won above).
      if (puts.length > 0 || deletes.length > 0)
        await client.query(
          `WITH gone AS (DELETE FROM trickle_meta WHERE key = ANY($3::text[]))
           INSERT INTO trickle_meta (key, value) SELECT * FROM unnest($1::text[], $2::text[])
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`,
          [puts.map((p) => p[0]), puts.map((p) => p[1]), deletes],
        );
      await client.query('COMMIT');
      return result;
    } catch (e) {
      // On a dropped connection the ROLLBACK fails at once; a connection that cannot end its transaction is discarded.
      await client.query('ROLLBACK').catch(broke);
      throw fail('market transaction', e);
    }
  }
  /**
   * The escrows a channel commit stores are entries of the open round (its record refunds them, or lists them with
   * their bids): counted here, in the same transaction. The fast way is one conditional increment of the open
   * round's count, which serialises the cluster's escrow commits on that row from here to their COMMIT (and a
   * clearing's deletion of the row waits for them: it then reads their escrows). When it matches nothing (the round
   * is full, it just moved on, or its count is not made yet), the open round's entry is locked `FOR SHARE` (no
   * clearing or placement meanwhile), its count made when missing, and the escrows counted — or, past the bound, the
   * channels of those that do not fit refused (the others may fit in the batch committed again without them).
   */
  async function countEscrows(client: pg.PoolClient, writes: readonly StoreWrite[]): Promise<void> {
    const escrows = new Map<string, string>(); // key → the channel paying it
    for (const w of writes) {
      if (w.kind === 'deleteMeta') escrows.delete(w.key);
      else if (w.kind === 'meta' && w.key.startsWith(ESCROW_PREFIX)) escrows.set(w.key, channelOfEscrow(w.value));
    }
    const k = escrows.size;
    if (k === 0) return;
    const max = String(maxEntries);
    const fast = await client.query(
      `UPDATE trickle_market_entries SET entries = entries + $1
       WHERE round = (SELECT value::bigint FROM trickle_meta WHERE key = $2) AND entries + $1 <= $3::bigint`,
      [k, ROUND_ENTRY, max],
    );
    if (fast.rowCount === 1) return;
    let open: bigint;
    const locked = await client.query<{ value: string }>('SELECT value FROM trickle_meta WHERE key = $1 FOR SHARE', [
      ROUND_ENTRY,
    ]);
    if (locked.rows[0]) open = BigInt(locked.rows[0].value);
    else open = BigInt((await client.query<{ value: string }>(OPEN_ROUND_UPSERT, [ROUND_ENTRY])).rows[0]!.value);
    // This commit's own escrows are written already: left out of a count made now, they are added below.
    const n = (await lockCounts(client, [open], open, [...escrows.keys()])).get(open)!;
    if (n + k <= maxEntries) {
      await client.query('UPDATE trickle_market_entries SET entries = entries + $2 WHERE round = $1', [
        String(open),
        k,
      ]);
      return;
    }
    const perChannel = new Map<string, number>();
    for (const ch of escrows.values()) perChannel.set(ch, (perChannel.get(ch) ?? 0) + 1);
    let room = maxEntries - n;
    const refused: string[] = [];
    for (const [ch, c] of perChannel) {
      if (c <= room) room -= c;
      else refused.push(ch);
    }
    // Refused, not failed: answered as a single process answers an escrow past the bound (the market clock's).
    throw new StoreRefusal(
      'LIMIT_EXCEEDED',
      `round ${open} is full: its clearing record takes at most ${maxEntries} orders and escrows`,
      refused,
      { round: open, max: maxEntries, refused: 'escrow', entries: n },
    );
  }
}

/** The open round's entry, created at 1 when missing, and locked (an upsert takes the row lock) in one statement. */
const OPEN_ROUND_UPSERT = `INSERT INTO trickle_meta (key, value) VALUES ($1, '1')
  ON CONFLICT (key) DO UPDATE SET value = trickle_meta.value RETURNING value`;

/** The channel an escrow entry's payment is on (the escrow record's `channelId`). */
function channelOfEscrow(value: string): string {
  try {
    const e = JSON.parse(value) as { channelId?: unknown };
    return typeof e.channelId === 'string' ? e.channelId : '';
  } catch {
    return ''; // not an escrow record: refused, it names no channel (the whole commit is refused)
  }
}

/**
 * Lock the entry counts of `rounds` (`FOR UPDATE`), making those not counted yet from the stored entries (see
 * {@link countStored}); the caller holds the open round's entry, so no clearing or placement runs meanwhile.
 * @returns the count of each round
 */
async function lockCounts(
  client: pg.PoolClient,
  rounds: readonly bigint[],
  open: bigint,
  except: readonly string[],
): Promise<Map<bigint, number>> {
  const read = async (list: readonly bigint[]) => {
    const r = await client.query<{ round: string; entries: string }>(
      `SELECT round::text AS round, entries::text AS entries FROM trickle_market_entries
       WHERE round = ANY($1::bigint[]) FOR UPDATE`,
      [list.map(String)],
    );
    return new Map(r.rows.map((row) => [BigInt(row.round), Number(row.entries)]));
  };
  const counts = await read(rounds);
  const missing = rounds.filter((r) => !counts.has(r));
  if (missing.length === 0) return counts;
  for (const r of missing) await countStored(client, r, open, except);
  for (const [r, n] of await read(missing)) counts.set(r, n);
  return counts;
}

/**
 * Make the entry count of `round` (the open round or the next) from what is stored, unless one is made already:
 * the distinct order ids of the open round's record — its orders and the escrows not backing an order of the next
 * round (which it refunds, or lists with their bids) — or of the next round's (its orders). Escrows under `except`
 * (written by the calling commit, which counts them itself) are left out. A count is made once per round, the
 * first time one is needed: a round opened by a hub from before the count (schema 4), or with nothing counted yet.
 */
async function countStored(client: pg.PoolClient, round: bigint, open: bigint, except: readonly string[]) {
  const orders = (r: bigint) => [orderPrefix(r), prefixEnd(orderPrefix(r))];
  if (round === open) {
    await client.query(
      `INSERT INTO trickle_market_entries (round, entries) SELECT $1, count(*) FROM (
         SELECT substr(key, ${ESCROW_PREFIX.length + 1}) FROM trickle_meta WHERE ${range(2)} AND NOT (key = ANY($8::text[]))
         UNION SELECT substr(key, ${ORDER_ID_AT}) FROM trickle_meta WHERE ${range(4)}
         EXCEPT SELECT substr(key, ${ORDER_ID_AT}) FROM trickle_meta WHERE ${range(6)}) ids
       ON CONFLICT (round) DO NOTHING`,
      [String(round), ESCROW_PREFIX, prefixEnd(ESCROW_PREFIX), ...orders(round), ...orders(round + 1n), [...except]],
    );
  } else {
    await client.query(
      `INSERT INTO trickle_market_entries (round, entries) SELECT $1, count(*) FROM trickle_meta WHERE ${range(2)}
       ON CONFLICT (round) DO NOTHING`,
      [String(round), ...orders(round)],
    );
  }
}
