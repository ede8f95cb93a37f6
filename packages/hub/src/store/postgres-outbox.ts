import pg from 'pg';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import { claimedKey, creditedKey, revealedKey } from '../channels.js';
import { fencedError } from '../leases.js';
import { decodeRecord, type ChannelRecord, type OutboxEntry, type RouteRecord, type StoreWrite } from './types.js';

/**
 * The outbox of routed payments in a hub cluster (table `trickle_outbox`, schema migration 2). One row per payment;
 * its payment id is the primary key, so a payment is in the outbox once whatever retries.
 *
 * A row's life, each step one transaction:
 * - `pending`: written in the payer's group commit, with the payer's debit (fenced by the payer channel's lease);
 * - `taken`: the holder of the payee channel's lease works on it (bookkeeping: who, how many attempts);
 * - `delivered`: in the payee's group commit that holds the countersigned credit (the `credited/<payment>/<channel>`
 *   marker), fenced by the payee channel's lease;
 * - `refused`: the payee's side could not deliver (channel closed, the device refused, too little liquidity): a
 *   transaction fenced by the payee channel's lease; only then may the payer be refunded;
 * - `refunded`: in the payer's group commit that holds the countersigned refund (its `credited` marker).
 * `settled` is set in the commit that writes the payer's route record with its outcome (the receipt follows).
 *
 * A conditional route's row (schema 3: `lock`, `lock_expiry`, `preimage`) goes `pending`/`taken` → `locked` (in the
 * payee's commit whose channel state holds the hub's lock, fenced by its lease) → `claimed` (in the payee's commit
 * that makes the preimage durable, `preimage` set) — or `refused` when the lock cannot be forwarded. It is never
 * refunded by a credit: the payer's lock returns to the payer at its own expiry. `settled` once the payer's route
 * record has its outcome (the upstream lock claimed, or taken back).
 * A `claimed` row whose payer channel no process holds (the payer went away) is guarded by every process
 * (`unguarded`), and one at a time holds the turn to reveal its preimage on-chain (`revealTurn`: a `reveal/<hash>` row
 * of `trickle_leases`).
 *
 * The store also refuses, inside the commit, any channel record whose outstanding credit proposal delivers an outbox
 * payment that may not be paid on that channel now (`delivered` already, or by this very commit; `refused`; or a
 * refund before `refused`): whatever a process believes, a payment cannot be credited twice. The write fails like a
 * lost lease (`STORE_FAILURE`, `details.fenced`).
 */
export interface RouteOutbox {
  /**
   * The payee's stored channels held now by a live lease of another process, each with the amount open outbox rows
   * will still credit on it.
   */
  payeeChannels(payee: Address): Promise<{ record: ChannelRecord; reserved: bigint }[]>;
  /** Whether a payment id is in the outbox already (the id is the idempotency key). */
  used(paymentId: Bytes32): Promise<boolean>;
  /**
   * Whether a conditional route on this hash toward this payee is in the outbox, not settled and not refused (a refused
   * row's route is dead: the payee refused the hub's lock, or it could not be placed).
   */
  lockInFlight(hash: Bytes32, payee: Address): Promise<boolean>;
  /**
   * Rows this process should act on: open rows to deliver on channels it holds, and answered rows (delivered,
   * refused, refunded) whose payer channel it holds and whose outcome the payer's route record does not have yet.
   */
  scan(held: readonly ChannelId[]): Promise<{
    deliver: OutboxRow[];
    answered: { row: OutboxRow; route: RouteRecord }[];
    /** Conditional routes whose payer channel is held and whose route record is still pending. */
    conditional: { row: OutboxRow; route: RouteRecord }[];
  }>;
  /**
   * Conditional routes whose payee claimed (the row holds the preimage) and whose payer's lock may still be pending (the
   * row not settled), on a payer channel no process holds a live lease of: nobody claims upstream, so the cluster must
   * reveal the preimage on-chain before the payer's expiry ({@link revealTurn}). A route whose payer's lock expired
   * over an hour ago by the database's clock is left out: no reveal can change its settlement any more.
   */
  unguarded(): Promise<{ row: OutboxRow; route: RouteRecord }[]>;
  /**
   * Take, or renew, the cluster's one turn to reveal the preimage of `hash` on-chain for the route `paymentId`: a row
   * `reveal/<hash>` of `trickle_leases` held for `ms` by the database's clock, taken only while the route's row is not
   * settled. @returns `mine` (reveal now), `elsewhere` (another process holds the turn), `settled` (the payer took the
   * hub's claim or its lock back: nothing to reveal for)
   */
  revealTurn(paymentId: Bytes32, hash: Bytes32, ms: number): Promise<'mine' | 'elsewhere' | 'settled'>;
  /** The preimage of `hash` is on-chain: give up the turn to reveal it (its row deleted, if this process holds it). */
  revealDone(hash: Bytes32): Promise<void>;
  /** Take an open row, while holding its payee channel's lease at `epoch`. @returns the row, or undefined (answered, or the lease moved) */
  take(paymentId: Bytes32, epoch: bigint): Promise<OutboxRow | undefined>;
  /** Mark an open row refused, fenced by its payee channel's lease at `epoch`. @returns false when not refused (answered already, or the lease moved) */
  refuse(paymentId: Bytes32, epoch: bigint, reason: string): Promise<boolean>;
  /** Called when another transaction changed the outbox (LISTEN/NOTIFY), and after the listener reconnects. */
  onWake(listener: () => void): void;
  close(): Promise<void>;
}

/** A row of the outbox. */
export interface OutboxRow extends OutboxEntry {
  readonly status: 'pending' | 'taken' | 'locked' | 'claimed' | 'delivered' | 'refused' | 'refunded';
  readonly taker: string | null;
  readonly attempts: number;
  /** A conditional route's preimage, once the payee showed it. */
  readonly preimage?: Bytes32 | undefined;
}

type Query = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => Promise<pg.QueryResult<R>>;

const CHANNEL = 'trickle_outbox';
const COLUMNS = `o.payment_id, o.from_channel, o.payer, o.payee, o.to_channel, o.token, o.amount::text AS amount,
  o.status, o.taker, o.attempts, o.lock, o.lock_expiry::text AS lock_expiry, o.preimage`;

interface RawRow {
  payment_id: string;
  from_channel: string;
  payer: string;
  payee: string;
  to_channel: string;
  token: string;
  amount: string;
  status: OutboxRow['status'];
  taker: string | null;
  attempts: number;
  lock: string | null;
  lock_expiry: string | null;
  preimage: string | null;
}

const rowOf = (r: RawRow): OutboxRow => ({
  paymentId: r.payment_id as Bytes32,
  fromChannel: r.from_channel as ChannelId,
  payer: r.payer as Address,
  payee: r.payee as Address,
  toChannel: r.to_channel as ChannelId,
  token: r.token as Address,
  amount: BigInt(r.amount),
  status: r.status,
  taker: r.taker,
  attempts: r.attempts,
  ...(r.lock !== null && r.lock_expiry !== null
    ? { lock: { hash: r.lock as Bytes32, expiry: BigInt(r.lock_expiry) } }
    : {}),
  ...(r.preimage !== null ? { preimage: r.preimage as Bytes32 } : {}),
});

/**
 * Inside a commit's transaction, before its writes: refuse the channel records whose outstanding credit delivers an
 * outbox payment that may not be paid on that channel now. @throws the fenced `STORE_FAILURE` naming those channels
 * (the caller rolls back)
 */
export async function checkOutboxCredits(client: pg.PoolClient, writes: readonly StoreWrite[]): Promise<void> {
  const ids: Bytes32[] = [];
  const channels: ChannelId[] = [];
  let credited: Set<string> | undefined;
  for (const w of writes) {
    const pid = w.kind === 'channel' ? w.record.outgoing?.paymentId : undefined;
    if (pid === undefined || w.kind !== 'channel') continue;
    ids.push(pid);
    channels.push(w.record.channelId);
  }
  if (ids.length === 0) return;
  // A credit that lands in this very commit (its `credited` marker) while the record proposes the same payment again.
  for (const w of writes) if (w.kind === 'meta' && CREDITED.test(w.key)) (credited ??= new Set()).add(w.key);
  const again = channels.filter((ch, i) => credited?.has(creditedKey(ids[i]!, ch)));
  if (again.length > 0) throw fencedError(again);
  // FOR SHARE: a refusal or an answer of these rows waits for this commit, so the check holds until it lands.
  const r = await client.query<{ channel: string }>(
    `SELECT u.ch AS channel FROM trickle_outbox o JOIN unnest($1::text[], $2::text[]) AS u(pid, ch) ON o.payment_id = u.pid
     WHERE NOT ((o.to_channel = u.ch AND o.status IN ('pending', 'taken')) OR (o.from_channel = u.ch AND o.status = 'refused'))
     FOR SHARE OF o`,
    [ids, channels],
  );
  if (r.rows.length > 0) throw fencedError(r.rows.map((x) => x.channel));
}

/**
 * Inside a commit's transaction, after its writes: insert its outbox rows (a payment id already there fails the
 * commit), answer the rows whose credit or refund landed in it, mark settled the rows whose payer route record got
 * its outcome, and wake the other processes when anything changed (NOTIFY is delivered at COMMIT).
 */
export async function writeOutbox(client: pg.PoolClient, writes: readonly StoreWrite[]): Promise<void> {
  const entries: OutboxEntry[] = [];
  const credited: { pid: string; ch: string }[] = [];
  const settled: string[] = [];
  const preimages: { hash: string; payee: string | null; preimage: string }[] = [];
  const locked: { hash: string; ch: string }[] = [];
  for (const w of writes) {
    if (w.kind === 'outbox') entries.push(w.entry);
    else if (w.kind === 'meta') {
      const m = CREDITED.exec(w.key);
      if (m) credited.push({ pid: m[1]!, ch: m[2]! });
      const c = CLAIMED.exec(w.key);
      if (c) preimages.push({ hash: c[1]!, payee: c[2]!, preimage: w.value });
      const r = REVEALED.exec(w.key);
      if (r) preimages.push({ hash: r[1]!, payee: null, preimage: w.value });
    } else if (w.kind === 'route' && w.route.status !== 'pending') settled.push(w.route.paymentId);
    else if (w.kind === 'channel')
      for (const l of w.record.locks ?? [])
        if (l.payer === 'hub') locked.push({ hash: l.hash, ch: w.record.channelId });
  }
  let changed = false;
  if (entries.length > 0) {
    await client.query(
      `INSERT INTO trickle_outbox (payment_id, from_channel, payer, payee, to_channel, token, amount, lock, lock_expiry, status)
       SELECT p, f, a, b, t, k, n::numeric, h, e::numeric, 'pending'
       FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
         AS x(p, f, a, b, t, k, n, h, e)`,
      [
        entries.map((e) => e.paymentId),
        entries.map((e) => e.fromChannel),
        entries.map((e) => e.payer),
        entries.map((e) => e.payee),
        entries.map((e) => e.toChannel),
        entries.map((e) => e.token),
        entries.map((e) => String(e.amount)),
        entries.map((e) => e.lock?.hash ?? null),
        entries.map((e) => (e.lock ? String(e.lock.expiry) : null)),
      ],
    );
    changed = true;
  }
  if (credited.length > 0) {
    const r = await client.query(
      `UPDATE trickle_outbox o SET status = CASE WHEN o.to_channel = u.ch THEN 'delivered' ELSE 'refunded' END,
         updated_at = clock_timestamp()
       FROM unnest($1::text[], $2::text[]) AS u(pid, ch)
       WHERE o.payment_id = u.pid AND ((o.to_channel = u.ch AND o.status IN ('pending', 'taken'))
         OR (o.from_channel = u.ch AND o.status = 'refused'))`,
      [credited.map((c) => c.pid), credited.map((c) => c.ch)],
    );
    changed ||= (r.rowCount ?? 0) > 0;
  }
  if (locked.length > 0) {
    // The payee's state holds the hub's lock of a conditional route: forwarded, not to be forwarded again.
    const r = await client.query(
      `UPDATE trickle_outbox o SET status = 'locked', updated_at = clock_timestamp()
       FROM unnest($1::text[], $2::text[]) AS u(h, ch)
       WHERE o.lock = u.h AND o.to_channel = u.ch AND o.status IN ('pending', 'taken') AND NOT o.settled`,
      [locked.map((l) => l.hash), locked.map((l) => l.ch)],
    );
    changed ||= (r.rowCount ?? 0) > 0;
  }
  if (preimages.length > 0) {
    // A claim made durable here (the payee showed the preimage): the payer channel's holder claims the upstream lock
    // of that payee's route — not of other routes on the hash, whose payees were not paid. A preimage revealed
    // on-chain (no payee) can be claimed by every payee: every route on the hash.
    const r = await client.query(
      `UPDATE trickle_outbox o SET status = 'claimed', preimage = u.v, updated_at = clock_timestamp()
       FROM unnest($1::text[], $2::text[], $3::text[]) AS u(h, b, v)
       WHERE o.lock = u.h AND (u.b IS NULL OR o.payee = u.b) AND o.status IN ('pending', 'taken', 'locked')
         AND NOT o.settled`,
      [preimages.map((p) => p.hash), preimages.map((p) => p.payee), preimages.map((p) => p.preimage)],
    );
    changed ||= (r.rowCount ?? 0) > 0;
  }
  if (settled.length > 0) {
    await client.query(
      `UPDATE trickle_outbox SET settled = true, updated_at = clock_timestamp()
       WHERE payment_id = ANY($1::text[]) AND NOT settled AND (status IN ('delivered', 'refunded') OR lock IS NOT NULL)`,
      [settled],
    );
  }
  if (changed) await client.query(`SELECT pg_notify('${CHANNEL}', '')`);
}

/**
 * The keys one of channels.ts's key helpers builds, as a pattern that captures each argument (`args`: each one's
 * pattern): the helper is called with a marker in each argument's place, the rest of the key is taken literally and
 * each marker becomes its capture group. A key's shape is written once, in its helper, which the hub writes with.
 */
function keyPattern(build: (...args: never[]) => string, ...args: readonly string[]): RegExp {
  const key = build(...(args.map((_, i) => `\u0000${i}\u0000`) as never[]));
  const source = key
    .replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
    .replace(/\u0000(\d+)\u0000/g, (_, i: string) => `(${args[Number(i)]})`);
  return new RegExp(`^${source}$`);
}
const HEX32 = '0x[0-9a-fA-F]{64}';
const HEX20 = '0x[0-9a-fA-F]{40}';
/** `credited/<paymentId>/<channelId>` (`creditedKey`): a credit with that payment id landed on that channel. */
const CREDITED = keyPattern(creditedKey, HEX32, HEX32);
/** `lock-claimed/<hash>/<payee>` (`claimedKey`): that payee claimed the hub's lock, stored with the preimage. */
const CLAIMED = keyPattern(claimedKey, HEX32, HEX20);
/** `lock-revealed/<hash>` (`revealedKey`): the preimage was revealed on-chain. */
const REVEALED = keyPattern(revealedKey, HEX32);

/** The key of the turn to reveal a hash's preimage in `trickle_leases` (no channel id looks like it: those are 0x-hex). */
const revealTurnKey = (hash: Bytes32): string => `reveal/${hash}`;

/**
 * The outbox of one cluster process.
 * @param query - the store's pooled query (marks the database reachable or not)
 * @param url - connection string, for the LISTEN connection
 * @param owner - this process's lease owner id
 */
export function createRouteOutbox(query: Query, url: string, owner: string, ready: Promise<void>): RouteOutbox {
  const listeners: (() => void)[] = [];
  let listener: pg.Client | undefined;
  let closed = false;
  let retry: ReturnType<typeof setTimeout> | undefined;
  const wake = () => {
    for (const l of listeners) l();
  };
  const listen = async (): Promise<void> => {
    if (closed) return;
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
    const again = () => {
      if (listener === c) listener = undefined;
      c.end().catch(() => undefined); // already broken; nothing to report beyond the retry
      if (!closed) retry ??= setTimeout(() => ((retry = undefined), void listen()), 500);
    };
    c.on('error', again);
    c.on('notification', wake);
    try {
      await ready;
      await c.connect();
      await c.query(`LISTEN ${CHANNEL}`);
      listener = c;
      wake(); // notifications sent while nobody listened are lost: look now
    } catch {
      again();
    }
  };

  return {
    async payeeChannels(payee) {
      const r = await query<{ record: string; reserved: string }>(
        `SELECT c.record, COALESCE((SELECT sum(o.amount) FROM trickle_outbox o
            WHERE o.to_channel = c.channel_id AND o.status IN ('pending', 'taken')), 0)::text AS reserved
         FROM trickle_channels c JOIN trickle_leases l ON l.channel_id = c.channel_id
         WHERE c.device = $1 AND l.owner <> $2 AND l.expires_at > clock_timestamp()
         ORDER BY c.channel_id`,
        [payee, owner],
      );
      return r.rows.map((x) => ({ record: decodeRecord<ChannelRecord>(x.record), reserved: BigInt(x.reserved) }));
    },
    async used(paymentId) {
      const r = await query('SELECT 1 FROM trickle_outbox WHERE payment_id = $1', [paymentId]);
      return r.rows.length > 0;
    },
    async lockInFlight(hash, payee) {
      const r = await query(
        `SELECT 1 FROM trickle_outbox WHERE lock = $1 AND payee = $2 AND NOT settled AND status <> 'refused' LIMIT 1`,
        [hash, payee],
      );
      return r.rows.length > 0;
    },
    async scan(held) {
      if (held.length === 0) return { deliver: [], answered: [], conditional: [] };
      const [d, a, c] = await Promise.all([
        query<RawRow>(
          `SELECT ${COLUMNS} FROM trickle_outbox o
           WHERE o.status IN ('pending', 'taken') AND o.to_channel = ANY($1::text[]) ORDER BY o.created_at`,
          [held],
        ),
        query<RawRow & { record: string }>(
          `SELECT ${COLUMNS}, r.record FROM trickle_outbox o JOIN trickle_routes r ON r.payment_id = o.payment_id
           WHERE o.status IN ('delivered', 'refused', 'refunded') AND NOT o.settled AND o.from_channel = ANY($1::text[])
             AND o.lock IS NULL AND r.status = 'pending' ORDER BY o.created_at`,
          [held],
        ),
        query<RawRow & { record: string }>(
          `SELECT ${COLUMNS}, r.record FROM trickle_outbox o JOIN trickle_routes r ON r.payment_id = o.payment_id
           WHERE o.lock IS NOT NULL AND NOT o.settled AND o.from_channel = ANY($1::text[]) AND r.status = 'pending'
           ORDER BY o.created_at`,
          [held],
        ),
      ]);
      return {
        deliver: d.rows.map(rowOf),
        answered: a.rows.map((x) => ({ row: rowOf(x), route: decodeRecord<RouteRecord>(x.record) })),
        conditional: c.rows.map((x) => ({ row: rowOf(x), route: decodeRecord<RouteRecord>(x.record) })),
      };
    },
    async unguarded() {
      const r = await query<RawRow & { record: string }>(
        `SELECT ${COLUMNS}, r.record FROM trickle_outbox o JOIN trickle_routes r ON r.payment_id = o.payment_id
         WHERE o.lock IS NOT NULL AND NOT o.settled AND o.status = 'claimed' AND r.status = 'pending'
           AND (r.record::jsonb #>> '{lock,expiry}')::numeric > extract(epoch FROM clock_timestamp()) - 3600
           AND NOT EXISTS (SELECT 1 FROM trickle_leases l
             WHERE l.channel_id = o.from_channel AND l.expires_at > clock_timestamp())
         ORDER BY o.created_at`,
      );
      return r.rows.map((x) => ({ row: rowOf(x), route: decodeRecord<RouteRecord>(x.record) }));
    },
    async revealTurn(paymentId, hash, ms) {
      const r = await query<{ open: boolean; mine: boolean }>(
        `WITH open AS (SELECT 1 FROM trickle_outbox WHERE payment_id = $1 AND NOT settled),
           turn AS (INSERT INTO trickle_leases (channel_id, device, owner, owner_url, epoch, expires_at)
             SELECT $2, '', $3, NULL, 1, clock_timestamp() + $4 * interval '1 millisecond' FROM open
             ON CONFLICT (channel_id) DO UPDATE SET owner = EXCLUDED.owner, epoch = trickle_leases.epoch + 1,
               expires_at = EXCLUDED.expires_at
             WHERE trickle_leases.expires_at <= clock_timestamp() OR trickle_leases.owner = EXCLUDED.owner
             RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM open) AS open, EXISTS (SELECT 1 FROM turn) AS mine`,
        [paymentId, revealTurnKey(hash), owner, ms],
      );
      const row = r.rows[0];
      return !row?.open ? 'settled' : row.mine ? 'mine' : 'elsewhere';
    },
    async revealDone(hash) {
      await query('DELETE FROM trickle_leases WHERE channel_id = $1 AND owner = $2', [revealTurnKey(hash), owner]);
    },
    async take(paymentId, epoch) {
      const r = await query<RawRow>(
        `UPDATE trickle_outbox o SET status = 'taken', taker = $2, attempts = o.attempts + 1, updated_at = clock_timestamp()
         FROM trickle_leases l
         WHERE o.payment_id = $1 AND o.status IN ('pending', 'taken') AND l.channel_id = o.to_channel
           AND l.owner = $2 AND l.epoch = $3 AND l.expires_at > clock_timestamp()
         RETURNING ${COLUMNS}`,
        [paymentId, owner, String(epoch)],
      );
      return r.rows[0] ? rowOf(r.rows[0]) : undefined;
    },
    async refuse(paymentId, epoch, reason) {
      // One statement, one transaction: the lease row is locked (FOR SHARE) for it, so a takeover of the payee
      // channel lands before it (then nothing is refused) or after it.
      const r = await query(
        `WITH lease AS (SELECT l.channel_id FROM trickle_leases l JOIN trickle_outbox o ON l.channel_id = o.to_channel
            WHERE o.payment_id = $1 AND l.owner = $2 AND l.epoch = $3 AND l.expires_at > clock_timestamp() FOR SHARE OF l),
          refused AS (UPDATE trickle_outbox SET status = 'refused', reason = $4, updated_at = clock_timestamp()
            WHERE payment_id = $1 AND status IN ('pending', 'taken') AND EXISTS (SELECT 1 FROM lease) RETURNING 1)
         SELECT pg_notify('${CHANNEL}', '') FROM refused`,
        [paymentId, owner, String(epoch), reason],
      );
      return r.rows.length > 0;
    },
    onWake(l) {
      listeners.push(l);
      if (listeners.length === 1) void listen();
    },
    async close() {
      closed = true;
      clearTimeout(retry);
      const c = listener;
      listener = undefined;
      await c?.end().catch(() => undefined); // closing: a broken listener has nothing left to flush
    },
  };
}
