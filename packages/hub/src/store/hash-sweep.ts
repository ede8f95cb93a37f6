import { HASH_META } from './types.js';

/**
 * The one-time sweep of lock-hash keys ({@link HASH_META}) that no route on their hash is left to delete: the keys of
 * conditional routes pruned before their keys went with them (LMDB index layout `h1:`, PostgreSQL schema 6), and bare
 * preimages stored by older hubs whose route is gone. Both stores run it inside `pruneRoutes`, in batches of its
 * `limit` keys, and keep its progress under this meta key:
 *
 * - absent: the sweep has not started; the first batch stores `{ since: now }`.
 * - `{ since, after }`: started at `since` (ms); keys up to `after` (in key order) are done. Batches sweep only once
 *   `before` (now less the retention window) reaches `since`: the keys left by older versions existed then, so each is
 *   at least one window old when it is deleted.
 * - `done`: every key was looked at once; nothing more to do (this version never leaves such keys behind).
 *
 * A key is deleted when no route on its hash is stored, pending or finished. The hub stores a hash's keys only after a
 * route on the hash is durable (a payee claims, or a reveal is taken, for a lock the router set up once the payer's
 * route was committed; a cluster's outbox row is committed with that route), so a key with no route on its hash is
 * one whose routes were deleted — never a fresh preimage whose route is still being committed. A store re-checks
 * that no route is left in the write that deletes (LMDB: the hashes a commit touched meanwhile wait for the next batch;
 * PostgreSQL: in the `DELETE` statement itself).
 */
export const HASH_SWEEP_KEY = 'hash-sweep';

/** Progress of the sweep (see {@link HASH_SWEEP_KEY}); undefined when it has not started. */
export type HashSweep = { readonly since: number; readonly after: string } | 'done';

/** @returns the stored progress, undefined for none (or a value this code did not write: started again) */
export function parseHashSweep(value: string | undefined): HashSweep | undefined {
  if (value === undefined) return undefined;
  if (value === 'done') return 'done';
  try {
    const o = JSON.parse(value) as { since?: unknown; after?: unknown };
    if (typeof o.since === 'number' && Number.isSafeInteger(o.since) && typeof o.after === 'string')
      return { since: o.since, after: o.after };
  } catch {
    /* not ours: started again below */
  }
  return undefined;
}

/** The stored form of the sweep's progress. */
export const hashSweepValue = (s: HashSweep): string =>
  s === 'done' ? 'done' : JSON.stringify({ since: s.since, after: s.after });

/** The key prefixes the sweep walks, in key order. */
export const HASH_SWEEP_PREFIXES: readonly string[] = Object.values(HASH_META).sort();

/** The lock hash of a `preimage/<hash>`, `lock-claimed/<hash>/<payee>` or `lock-revealed/<hash>` key. */
export function hashOfMeta(key: string): string | undefined {
  if (key.startsWith(HASH_META.preimage)) return key.slice(HASH_META.preimage.length);
  if (key.startsWith(HASH_META.claimed)) return key.slice(HASH_META.claimed.length, key.lastIndexOf('/'));
  if (key.startsWith(HASH_META.revealed)) return key.slice(HASH_META.revealed.length);
  return undefined;
}
