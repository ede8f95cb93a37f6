import type { ChannelId } from '@trickle/protocol/types';

/** A write of a market transaction: the market's state is a set of keyed entries (the store's meta entries). */
export type MarketWrite =
  | { readonly kind: 'meta'; readonly key: string; readonly value: string }
  | { readonly kind: 'deleteMeta'; readonly key: string };

/** What a {@link MarketRounds.transact} callback is given and returns. */
export interface MarketTransaction<T> {
  /**
   * Only while this process holds the round lease, at the epoch it holds (checked inside the transaction): a
   * clearing. A placement needs no lease.
   */
  readonly fenced: boolean;
  /** The entries to read, by key prefix, once the open round is known. */
  readonly prefixes: (round: bigint) => readonly string[];
  /** The entries to read by exact key, once the open round is known (none when absent). */
  readonly keys?: ((round: bigint) => readonly string[]) | undefined;
  /**
   * A placement: the entry counts of the open round and the next (see {@link MarketRounds.limitEntries}) are read
   * and locked before `run`, handed to it in `counts` (by round), and stored as `run` leaves them.
   */
  readonly counts?: boolean | undefined;
  /**
   * A clearing of the open round: its entry count is locked before the entries are read (an escrow payment counted
   * in it and still committing lands first, and is read) and dropped (the round closes).
   */
  readonly clears?: boolean | undefined;
  /**
   * Decide, from the open round and the entries read, what to write; throwing writes nothing (the error is the
   * caller's). Runs inside the transaction: synchronous and short.
   */
  readonly run: (
    round: bigint,
    entries: ReadonlyMap<string, string>,
    counts: Map<bigint, number>,
  ) => { writes: MarketWrite[]; result: T };
}

/**
 * The market of a hub cluster: several hub processes on one database run one market. Its state (the open round,
 * orders, escrows, clearing records) lives in the database, and every change of it is one transaction serialised
 * with all others on the open round's entry, so an order is either placed before its round is cleared (and cleared
 * with it) or refused, and a round is cleared once. One process at a time holds the round lease (a lease with an
 * epoch, like a channel's) and clears the rounds; when it dies, another takes the lease once it lapses.
 *
 * `openPostgresStore({ url, cluster })` returns one as `market`.
 */
export interface MarketRounds {
  /** This process's owner id (the channel leases' one). */
  readonly owner: string;
  /** Lease time in milliseconds. */
  readonly leaseMs: number;
  /**
   * Take the round lease when it is free or lapsed, or renew it when this process holds it.
   * @returns whether this process holds it now
   * @throws TrickleError('STORE_FAILURE') when the database fails
   */
  lead(): Promise<boolean>;
  /** Whether this process holds the round lease now, safely inside its term. */
  leading(): boolean;
  /** Give the round lease up (shutdown): another process clears the next round without waiting for it to lapse. */
  resign(): Promise<void>;
  /**
   * The open round as stored (1 when no round was ever cleared).
   * @throws TrickleError('STORE_FAILURE')
   */
  openRound(): Promise<bigint>;
  /**
   * One transaction over the market's state: locks the open round's entry, reads the entries under
   * `t.prefixes(round)` and at `t.keys(round)`, calls `t.run`, writes what it returns and commits.
   * @throws TrickleError('STORE_FAILURE') when the database fails or, `fenced`, the round lease is not held
   * (`details.fenced`); whatever `t.run` throws
   */
  transact<T>(t: MarketTransaction<T>): Promise<T>;
  /**
   * The most entries (orders, and escrows the round refunds, one per order id) this process lets into one round's
   * clearing record: the market clock's `maxRoundOrders`. The database counts every process's entries per round
   * (schema 5): each escrow payment in the commit that stores it, in the open round (a commit that would take the
   * round past the bound is refused for the channels of the escrows that do not fit — a `StoreRefusal` of
   * `LIMIT_EXCEEDED`, not a failure: the committer commits the rest of its batch again); each order in its
   * placement (see {@link MarketTransaction.counts}). Not set: counted, never refused.
   */
  limitEntries(max: number): void;
  /**
   * The open round, the entries the database counts in it so far (0 when none are counted yet) and whether `key` is
   * stored: one read without locks, for an escrow payment's check before it is taken.
   * @throws TrickleError('STORE_FAILURE')
   */
  peek(key: string): Promise<{ round: bigint; entries: number; stored: boolean }>;
  /** The URL this process serves devices on, stored with the round lease (set once the hub listens). */
  advertise(url: string): void;
  /**
   * The stored state of channels, whoever holds them: the last round netted into each (its state's `round`), and
   * whether it can still take a credit (open, not final). A channel not stored is absent. For pruning clearing
   * records: a round's record may go once every channel it credits has reached the round.
   * @throws TrickleError('STORE_FAILURE')
   */
  landedRounds(channelIds: readonly ChannelId[]): Promise<Map<ChannelId, { round: bigint; open: boolean }>>;
  /**
   * The market's entries under `prefixes` whose value contains `text` (say, a device's address), filtered by the
   * database: a process taking a device over reads that device's open orders and escrows without the others'.
   * @throws TrickleError('STORE_FAILURE')
   */
  find(prefixes: readonly string[], text: string): Promise<{ key: string; value: string }[]>;
}
