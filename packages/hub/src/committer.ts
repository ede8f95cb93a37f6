import type { ChannelId } from '@trickle/protocol/types';
import { fencedChannels, fencedError, type ChannelLeases } from './leases.js';
import { outcomeUnknown, refusedChannels, staleChannels, type HubStore, type StoreWrite } from './store/types.js';

/** Group commit: writes queued while a commit is in flight go together into the next one. */
export interface Committer {
  /** Queue writes; resolves when a commit holding them is durable. */
  write(writes: readonly StoreWrite[]): Promise<void>;
  /** Resolves when everything queued so far is durable. */
  drain(): Promise<void>;
}

/** Observes each commit: how many writes, how long it took. */
export type CommitObserver = (writes: number, seconds: number) => void;

interface Entry {
  readonly writes: readonly StoreWrite[];
  /**
   * In a cluster: the lease epoch of each channel written, when the write was handed over. The channel's state was
   * computed under that epoch, so it commits only if the epoch is still the one held (a lease lost and taken again
   * in between, by whatever way, means another process may have written the channel since).
   */
  readonly epochs?: ReadonlyMap<string, bigint | undefined> | undefined;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

/**
 * @param store - the durable store
 * @param observe - called after each commit (for metrics)
 * @param leases - in a cluster, the channel leases of this process: a write of a channel whose lease is not held
 *   (or is too close to its end) fails with `STORE_FAILURE` (`details.fenced`) before it reaches the store, and
 *   the other writers of the same turn still commit; the store repeats the check inside its transaction, and a
 *   write it refuses there fails the same way while the rest of the batch is committed again without it. A write the
 *   store refuses for what it holds (a `StoreRefusal`: a full market round) fails with that refusal, and the
 *   rest of the batch is committed again the same way.
 * @param storeFailed - told after each commit the store took (`undefined`) or failed with an error of its own (a full
 *   disk, EIO, the database unreachable: the error); not told of a write fenced, refused or found stale for what the
 *   store holds (the store works)
 */
export function createCommitter(
  store: HubStore,
  observe: CommitObserver = () => {},
  leases?: ChannelLeases,
  storeFailed: (error: unknown) => void = () => {},
): Committer {
  let queue: Entry[] = [];
  let running: Promise<void> | undefined;
  /** Told to `storeFailed`: a failure of the store's own, not a write fenced, refused or found stale (the store works). */
  const failedItself = (e: unknown): boolean =>
    !(leases && fencedChannels(e)) && !refusedChannels(e) && !staleChannels(e);

  /**
   * Channels of `e`'s writes that are in `ids` (or, without `ids`, whose lease is not held now at the epoch held
   * when the write was handed over).
   */
  const unfenced = (e: Entry, ids?: ReadonlySet<string>): ChannelId[] => {
    const out: ChannelId[] = [];
    for (const w of e.writes) {
      if (w.kind !== 'channel') continue;
      const id = w.record.channelId;
      if (ids) {
        if (ids.has(id)) out.push(id);
        continue;
      }
      const now = leases!.epochOf(id);
      if (now === undefined || now !== e.epochs?.get(id)) out.push(id);
    }
    return out;
  };
  /** Refuses the entries whose leases moved; the rest, to commit at once (the store reads the epochs it fences with
   * when `commit` is called, so no lease can change between this check and that read). */
  const held = (entries: Entry[]): Entry[] => {
    if (!leases) return entries;
    const ok: Entry[] = [];
    for (const e of entries) {
      const lost = unfenced(e);
      if (lost.length > 0) refuse(e, lost);
      else ok.push(e);
    }
    return ok;
  };
  const refuse = (e: Entry, ids: ChannelId[]) => e.reject(fencedError(ids));

  const commit = async (entries: Entry[]): Promise<void> => {
    let batch = held(entries);
    while (batch.length > 0) {
      const writes = batch.length === 1 ? batch[0]!.writes : batch.flatMap((e) => e.writes);
      const started = performance.now();
      try {
        await store.commit(writes);
        storeFailed(undefined);
        observe(writes.length, (performance.now() - started) / 1000);
        for (const e of batch) e.resolve();
        return;
      } catch (err) {
        const fenced = leases ? fencedChannels(err) : undefined;
        const refused = fenced ? undefined : refusedChannels(err);
        if (!fenced && !refused) {
          if (failedItself(err)) storeFailed(err);
          // One writer, or a commit that may have landed (committed again one by one, an outbox row already written
          // would fail its writer as if nothing of it had landed): every writer gets the error as it is.
          if (batch.length === 1 || outcomeUnknown(err)) {
            for (const e of batch) e.reject(err);
            return;
          }
          // A store error (a full disk, EIO, a write the store refuses): commit each writer alone, so one channel's
          // failing write freezes that channel only and the others of this turn still land.
          for (const e of batch) {
            if (held([e]).length === 0) continue;
            try {
              await store.commit(e.writes);
              storeFailed(undefined);
              e.resolve();
            } catch (one) {
              if (failedItself(one)) storeFailed(one);
              e.reject(one);
            }
          }
          return;
        }
        // The store refused some channels inside its transaction (lease lost meanwhile, or a refusal such as a full
        // market round): nothing was written. Refuse their writers — as fenced, or with the store's refusal, whose
        // code is their answer — and commit the others again.
        const rest: Entry[] = [];
        for (const e of batch) {
          const hit = unfenced(e, fenced ?? refused);
          if (hit.length === 0) rest.push(e);
          else if (fenced) refuse(e, hit);
          else e.reject(err);
        }
        if (rest.length === batch.length) {
          for (const e of batch) e.reject(err); // refused for a channel none of them wrote: do not loop
          return;
        }
        batch = held(rest);
      }
    }
  };

  const run = async (): Promise<void> => {
    while (queue.length > 0) {
      const entries = queue;
      queue = [];
      await commit(entries);
      // Let the writers this commit answered queue their next writes first (a channel's next update, its signature
      // work done while this commit was on its way, is stepped in the continuation of this commit's promise): they
      // join the next commit instead of waiting behind it, so a disk busy with one commit after another holds more
      // in each (with two channels paying, one commit per state from each, alternating, kept the disk busy).
      if (queue.length > 0) await new Promise<void>((r) => setImmediate(r));
    }
    running = undefined;
  };

  return {
    write(writes) {
      return new Promise<void>((resolve, reject) => {
        let epochs: Map<string, bigint | undefined> | undefined;
        if (leases) {
          for (const w of writes)
            if (w.kind === 'channel')
              (epochs ??= new Map()).set(w.record.channelId, leases.epochOf(w.record.channelId));
        }
        queue.push({ writes, resolve, reject, epochs });
        // Defer to the end of this turn so every channel processed in it joins the same commit.
        running ??= new Promise<void>((r) => setImmediate(r)).then(run);
      });
    },
    async drain() {
      while (running) await running;
    },
  };
}
