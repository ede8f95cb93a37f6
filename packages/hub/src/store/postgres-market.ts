import pg from 'pg';
import { TrickleError } from '@trickle/protocol/errors';
import type { ChannelId } from '@trickle/protocol/types';
import { fencedError } from '../leases.js';
import type { MarketRounds, MarketTransaction } from '../market-rounds.js';
import { decodeRecord, type ChannelRecord } from './types.js';

/** The round lease's key in `trickle_leases` (no channel id looks like it: those are 0x-hex). */
export const ROUND_LEASE_KEY = 'market/round';
/** The open round's entry in `trickle_meta` (the market clock's own key): every market transaction locks it. */
const ROUND_ENTRY = 'market/round';

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
 */
export function createPostgresMarket(d: PostgresMarketDeps): MarketRounds {
  const margin = d.leaseMs / 4;
  let url = d.url;
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
    let client: pg.PoolClient;
    try {
      client = await d.pool.connect();
    } catch (e) {
      throw fail('market transaction', e);
    }
    let broken: unknown;
    const onError = (e: unknown) => (broken ??= e); // a dropped connection fails the query in flight too
    client.on('error', onError);
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
      // The open round's entry, created at 1 when missing, and locked (an upsert takes the row lock) in one statement.
      const round = BigInt(
        (
          await client.query<{ value: string }>(
            `INSERT INTO trickle_meta (key, value) VALUES ($1, '1')
             ON CONFLICT (key) DO UPDATE SET value = trickle_meta.value RETURNING value`,
            [ROUND_ENTRY],
          )
        ).rows[0]!.value,
      );
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
      const { writes, result } = t.run(round, entries);
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
      if (broken === undefined) await client.query('ROLLBACK').catch((r: unknown) => (broken = r));
      throw fail('market transaction', e);
    } finally {
      client.off('error', onError);
      client.release(broken instanceof Error ? broken : undefined);
    }
  }
}
