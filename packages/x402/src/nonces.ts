import type { Address, Bytes32 } from '@trickle/protocol/types';

/** What a {@link NonceStore} answers to a claim. */
export type NonceClaim = 'claimed' | 'replayed' | 'full';

/**
 * Where a facilitator remembers the receipts it served (by nonce) until they expire, so that one payment is never
 * served twice. The default, {@link memoryNonceStore}, lives in the process and knows nothing served before it was
 * created: it says so with {@link NonceStore.rememberedSince}, and the facilitator then refuses every receipt an earlier
 * run of the service could have served (`trickle_expiry_too_soon`). {@link postgresNonceStore} shares one table
 * between processes and keeps it across restarts.
 *
 * A method that throws makes the facilitator refuse the payment with `trickle_store_failure` (nothing is served, the
 * receipt stays usable); so does an answer outside the method's type (`served` not a boolean, `claim` none of its three
 * words): a store that answers nothing is refused, not read as one that never saw the nonce.
 */
export interface NonceStore {
  /**
   * Unix seconds from which on this store knows every nonce the service served; absent for a store that keeps them
   * across restarts and processes ({@link postgresNonceStore}). A receipt that could have been served before it (one
   * expiring by `rememberedSince` + the route's `maxTimeoutSeconds` + the facilitator's skew) is refused.
   */
  readonly rememberedSince?: bigint;
  /** Whether `nonce` was served and its receipt is still unexpired at `now` (unix seconds). */
  served(nonce: Bytes32, now: bigint): Promise<boolean>;
  /**
   * Record `nonce` as served until `expiry` (unix seconds), atomically: `'claimed'` when it was not served or its
   * earlier receipt has expired by `now`; `'replayed'` when it is served and unexpired; `'full'` when the store has no
   * room for another unexpired nonce (or none for `payer`, the receipt's payer, in a store that shares its room among
   * payers).
   */
  claim(nonce: Bytes32, expiry: bigint, now: bigint, payer?: Address): Promise<NonceClaim>;
  /** Forget a served nonce: the handler failed, so the same receipt may be presented again. */
  release(nonce: Bytes32): Promise<void>;
}

/**
 * The in-process store: at most `maxNonces` unexpired nonces (expired ones are dropped to make room), at most
 * `maxPerPayer` of them from one payer.
 */
export interface MemoryNonceStore extends NonceStore {
  /** Nonces currently remembered. */
  readonly size: number;
}

/** Options of {@link memoryNonceStore}. */
export interface MemoryNonceStoreOptions {
  /** Unexpired nonces kept at most (default 100,000). */
  readonly maxNonces?: number;
  /**
   * Unexpired nonces kept at most from one payer (default a tenth of `maxNonces`, at least 1): a buyer that pays for
   * receipts faster than they expire is answered `trickle_busy` past its share instead of filling the store and
   * turning every other buyer away. Its refused receipt is not recorded and buys the content once some of its earlier
   * ones expired (within its own lifetime).
   */
  readonly maxPerPayer?: number;
  /** Unix time in ms (tests); default `Date.now`. Read once, for the default `rememberedSince`. */
  readonly now?: () => number;
  /**
   * Unix seconds from which on no other process served this service's receipts: default the store's creation (a
   * restarted service refuses, for its routes' `maxTimeoutSeconds` and skew, the receipts its previous run could have
   * served). Give `0n` only where no earlier run or other process served them (tests, a first deployment): the store
   * then has no `rememberedSince`, as one that never forgets.
   */
  readonly rememberedSince?: bigint;
}

/**
 * The in-process store (the facilitator's default): served nonces in a `Map`, lost when the process ends. It knows
 * nothing served before its creation ({@link NonceStore.rememberedSince}), so the facilitator refuses the receipts an
 * earlier run could have served instead of serving them again.
 * @throws RangeError for a `maxNonces` that is not a positive integer, a `maxPerPayer` that is not one up to
 *   `maxNonces`, or a negative `rememberedSince`
 */
export function memoryNonceStore(options: MemoryNonceStoreOptions = {}): MemoryNonceStore {
  const maxNonces = options.maxNonces ?? 100_000;
  if (!Number.isInteger(maxNonces) || maxNonces < 1) throw new RangeError('maxNonces must be a positive integer');
  const rememberedSince = options.rememberedSince ?? BigInt(Math.floor((options.now ?? Date.now)() / 1000));
  if (rememberedSince < 0n) throw new RangeError('rememberedSince must not be negative');
  const maxPerPayer = options.maxPerPayer ?? Math.max(1, Math.floor(maxNonces / 10));
  if (!Number.isInteger(maxPerPayer) || maxPerPayer < 1 || maxPerPayer > maxNonces)
    throw new RangeError('maxPerPayer must be a positive integer, at most maxNonces');
  const seen = new Map<Bytes32, { expiry: bigint; payer: Address | undefined }>();
  /** Each payer's nonces in `seen`. */
  const held = new Map<Address, Set<Bytes32>>();
  const forget = (nonce: Bytes32): void => {
    const entry = seen.get(nonce);
    if (!entry) return;
    seen.delete(nonce);
    if (entry.payer === undefined) return;
    const mine = held.get(entry.payer)!;
    mine.delete(nonce);
    if (mine.size === 0) held.delete(entry.payer);
  };
  const store: MemoryNonceStore = {
    ...(rememberedSince > 0n ? { rememberedSince } : {}),
    get size() {
      return seen.size;
    },
    served: async (nonce, now) => (seen.get(nonce)?.expiry ?? 0n) > now,
    claim: async (nonce, expiry, now, payer) => {
      const earlier = seen.get(nonce);
      if (earlier && earlier.expiry > now) return 'replayed';
      if (payer !== undefined && (held.get(payer)?.size ?? 0) >= maxPerPayer) {
        // Only this payer's entries are looked through: its share, not the whole store.
        for (const n of held.get(payer)!) if (seen.get(n)!.expiry <= now) forget(n);
        if ((held.get(payer)?.size ?? 0) >= maxPerPayer) return 'full';
      }
      if (!earlier && seen.size >= maxNonces) {
        for (const [n, e] of seen) if (e.expiry <= now) forget(n);
        if (seen.size >= maxNonces) return 'full';
      }
      forget(nonce);
      seen.set(nonce, { expiry, payer });
      if (payer !== undefined) {
        let mine = held.get(payer);
        if (!mine) held.set(payer, (mine = new Set()));
        mine.add(nonce);
      }
      return 'claimed';
    },
    release: async (nonce) => {
      forget(nonce);
    },
  };
  memoryStores.add(store);
  return store;
}

/** The stores {@link memoryNonceStore} made (a facilitator given one reports its size); not exported by the package. */
export const memoryStores = new WeakSet<NonceStore>();

/**
 * How long past its expiry, by the purging process's clock, a served nonce's row is kept. The processes of a service
 * share the table but not a clock: one whose clock runs ahead would otherwise delete the rows of receipts the others
 * still accept as unexpired, and a receipt presented again to one of them would be served a second time.
 */
const PURGE_GRACE_SECONDS = 3600n;

/** What {@link postgresNonceStore} needs of a database client: `pg`'s `Pool` (or `Client`) has it. */
export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rowCount: number | null; rows: unknown[] }>;
}

/**
 * Served nonces in a PostgreSQL table (created if missing), shared by every process of a service and kept across
 * restarts. A claim is one `INSERT … ON CONFLICT` statement, so two processes presented the same receipt at the same
 * instant serve it once. Rows expired for an hour are deleted now and then by the claims themselves. The table is not bounded
 * (a row per receipt served within its lifetime) and shares nothing among payers: it never answers `'full'`.
 * @param db - e.g. `new pg.Pool({ connectionString })`
 * @param options.table - table name (default `trickle_x402_nonces`; letters, digits and `_`)
 */
export function postgresNonceStore(db: Queryable, options: { table?: string } = {}): NonceStore {
  const table = options.table ?? 'trickle_x402_nonces';
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(table)) throw new RangeError('table must be a plain lowercase SQL name');
  let ready: Promise<void> | undefined;
  const ensure = (): Promise<void> => {
    ready ??= db.query(`CREATE TABLE IF NOT EXISTS ${table} (nonce text PRIMARY KEY, expiry bigint NOT NULL)`).then(
      () => undefined,
      (e: unknown) => {
        ready = undefined; // tried again by the next call
        throw e;
      },
    );
    return ready;
  };
  let claims = 0;
  return {
    served: async (nonce, now) => {
      await ensure();
      const r = await db.query(`SELECT 1 FROM ${table} WHERE nonce = $1 AND expiry > $2`, [nonce, now.toString()]);
      return (r.rowCount ?? r.rows.length) > 0;
    },
    claim: async (nonce, expiry, now) => {
      await ensure();
      if (++claims % 1024 === 0)
        await db.query(`DELETE FROM ${table} WHERE expiry <= $1`, [(now - PURGE_GRACE_SECONDS).toString()]);
      // A row of an expired receipt is taken over; an unexpired one makes the insert do nothing.
      const r = await db.query(
        `INSERT INTO ${table} AS t (nonce, expiry) VALUES ($1, $2)
         ON CONFLICT (nonce) DO UPDATE SET expiry = EXCLUDED.expiry WHERE t.expiry <= $3`,
        [nonce, expiry.toString(), now.toString()],
      );
      return r.rowCount === 1 ? 'claimed' : 'replayed';
    },
    release: async (nonce) => {
      await ensure();
      await db.query(`DELETE FROM ${table} WHERE nonce = $1`, [nonce]);
    },
  };
}
