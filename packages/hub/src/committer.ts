import type { ChannelId } from '@trickle/protocol/types';
import { fencedChannels, fencedError, type ChannelLeases } from './leases.js';
import type { HubStore, StoreWrite } from './store/types.js';

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
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

/**
 * @param store - the durable store
 * @param observe - called after each commit (for metrics)
 * @param leases - in a cluster, the channel leases of this process: a write of a channel whose lease is not held
 *   (or is too close to its end) fails with `STORE_FAILURE` (`details.fenced`) before it reaches the store, and
 *   the other writers of the same turn still commit; the store repeats the check inside its transaction, and a
 *   write it refuses there fails the same way while the rest of the batch is committed again without it
 */
export function createCommitter(store: HubStore, observe: CommitObserver = () => {}, leases?: ChannelLeases): Committer {
  let queue: Entry[] = [];
  let running: Promise<void> | undefined;

  /** Channels of `e`'s writes that are in `ids` (or, without `ids`, whose lease is not held now). */
  const unfenced = (e: Entry, ids?: ReadonlySet<string>): ChannelId[] => {
    const out: ChannelId[] = [];
    for (const w of e.writes) {
      if (w.kind !== 'channel') continue;
      const id = w.record.channelId;
      if (ids ? ids.has(id) : leases!.epochOf(id) === undefined) out.push(id);
    }
    return out;
  };
  const refuse = (e: Entry, ids: ChannelId[]) => e.reject(fencedError(ids));

  const commit = async (entries: Entry[]): Promise<void> => {
    let batch = entries;
    if (leases) {
      batch = [];
      for (const e of entries) {
        const lost = unfenced(e);
        if (lost.length > 0) refuse(e, lost);
        else batch.push(e);
      }
    }
    while (batch.length > 0) {
      const writes = batch.length === 1 ? batch[0]!.writes : batch.flatMap((e) => e.writes);
      const started = performance.now();
      try {
        await store.commit(writes);
        observe(writes.length, (performance.now() - started) / 1000);
        for (const e of batch) e.resolve();
        return;
      } catch (err) {
        const fenced = leases ? fencedChannels(err) : undefined;
        if (!fenced) {
          if (batch.length === 1) {
            batch[0]!.reject(err);
            return;
          }
          // A store error (a full disk, EIO, a write the store refuses): commit each writer alone, so one channel's
          // failing write freezes that channel only and the others of this turn still land.
          for (const e of batch) {
            try {
              await store.commit(e.writes);
              e.resolve();
            } catch (one) {
              e.reject(one);
            }
          }
          return;
        }
        // The store refused some channels inside its transaction (lease lost meanwhile): nothing was written.
        // Refuse their writers and commit the others again.
        const rest: Entry[] = [];
        for (const e of batch) {
          const hit = unfenced(e, fenced);
          if (hit.length > 0) refuse(e, hit);
          else rest.push(e);
        }
        if (rest.length === batch.length) {
          for (const e of batch) e.reject(err); // refused for a channel none of them wrote: do not loop
          return;
        }
        batch = rest;
      }
    }
  };

  const run = async (): Promise<void> => {
    while (queue.length > 0) {
      const entries = queue;
      queue = [];
      await commit(entries);
    }
    running = undefined;
  };

  return {
    write(writes) {
      return new Promise<void>((resolve, reject) => {
        queue.push({ writes, resolve, reject });
        // Defer to the end of this turn so every channel processed in it joins the same commit.
        running ??= new Promise<void>((r) => setImmediate(r)).then(run);
      });
    },
    async drain() {
      while (running) await running;
    },
  };
}
