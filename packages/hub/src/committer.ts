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

/**
 * @param store - the durable store
 * @param observe - called after each commit (for metrics)
 */
export function createCommitter(store: HubStore, observe: CommitObserver = () => {}): Committer {
  let queue: StoreWrite[] = [];
  let waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  let running: Promise<void> | undefined;

  const run = async (): Promise<void> => {
    while (queue.length > 0) {
      const batch = queue;
      const batchWaiters = waiters;
      queue = [];
      waiters = [];
      const started = performance.now();
      try {
        await store.commit(batch);
        observe(batch.length, (performance.now() - started) / 1000);
        for (const w of batchWaiters) w.resolve();
      } catch (e) {
        for (const w of batchWaiters) w.reject(e);
      }
    }
    running = undefined;
  };

  return {
    write(writes) {
      return new Promise<void>((resolve, reject) => {
        queue.push(...writes);
        waiters.push({ resolve, reject });
        // Defer to the end of this turn so every channel processed in it joins the same commit.
        running ??= new Promise<void>((r) => setImmediate(r)).then(run);
      });
    },
    async drain() {
      while (running) await running;
    },
  };
}
