import { describe, expect, it } from 'vitest';
import { createCommitter } from './committer.js';
import { TrickleError } from '@trickle/protocol/errors';
import { outcomeUnknown, type HubStore, type StoreWrite } from './store/types.js';

function fakeStore(delayMs: number, fail: false | true | (() => Error) = false) {
  const commits: StoreWrite[][] = [];
  let calls = 0;
  const store: HubStore = {
    loadChannels: async () => [],
    loadPendingRoutes: async () => [],
    loadEvidence: async () => [],
    getMeta: async () => undefined,
    loadMetaPrefix: async () => [],
    close: async () => {},
    async commit(writes) {
      calls++;
      await new Promise((r) => setTimeout(r, delayMs));
      if (fail) throw fail === true ? new Error('disk on fire') : fail();
      commits.push([...writes]);
    },
  };
  return { store, commits, calls: () => calls };
}
const meta = (k: string): StoreWrite => ({ kind: 'meta', key: k, value: k });

describe('group commit', () => {
  it('puts writes queued in one turn into one commit, and those queued during a commit into the next', async () => {
    const { store, commits } = fakeStore(20);
    const observed: number[] = [];
    const c = createCommitter(store, (n) => observed.push(n));
    const first = [c.write([meta('a')]), c.write([meta('b')]), c.write([meta('c')])];
    await new Promise((r) => setTimeout(r, 5)); // first commit in flight
    const second = [c.write([meta('d')]), c.write([meta('e')])];
    await Promise.all([...first, ...second]);
    expect(commits.map((b) => b.length)).toEqual([3, 2]);
    expect(observed).toEqual([3, 2]);
  });
  it('a writer answered by a commit that writes again at once joins the next commit with what queued meanwhile', async () => {
    // Two channels taking turns on a busy disk: A's next write follows its commit; B's was queued during it. Taken at
    // once, B's went alone and A's waited behind it (one commit per state, the disk never idle).
    const { store, commits } = fakeStore(20);
    const c = createCommitter(store);
    const a1 = c.write([meta('a1')]).then(async () => {
      await Promise.resolve(); // a step's continuation: a few promise turns
      await c.write([meta('a2')]);
    });
    await new Promise((r) => setTimeout(r, 5)); // a1's commit in flight
    const b1 = c.write([meta('b1')]);
    await Promise.all([a1, b1]);
    expect(commits.map((b) => b.map((w) => (w.kind === 'meta' ? w.key : '')))).toEqual([['a1'], ['b1', 'a2']]);
  });
  it('resolves a write only after its commit, and rejects every writer of a failed commit', async () => {
    const { store } = fakeStore(5, true);
    const c = createCommitter(store);
    const results = await Promise.allSettled([c.write([meta('x')]), c.write([meta('y')])]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
  });
  it('a commit whose outcome is unknown is not committed again writer by writer: each gets that error', async () => {
    const unknown = () => new TrickleError('STORE_FAILURE', 'outcome unknown', { details: { outcomeUnknown: true } });
    const { store, calls } = fakeStore(5, unknown);
    const c = createCommitter(store);
    const results = await Promise.allSettled([c.write([meta('x')]), c.write([meta('y')])]);
    expect(results.map((r) => r.status === 'rejected' && outcomeUnknown(r.reason))).toEqual([true, true]);
    expect(calls()).toBe(1); // a plain failure is retried per writer (1 + 2 calls)
  });
  it('tells storeFailed of each commit the store failed (the error) and each it took (undefined)', async () => {
    let failing = true;
    const inner = fakeStore(1).store;
    const store: HubStore = {
      ...inner,
      async commit(writes) {
        if (failing) throw new Error('ENOSPC');
        return inner.commit(writes);
      },
    };
    const told: unknown[] = [];
    const c = createCommitter(store, undefined, undefined, (e) => told.push(e));
    await expect(c.write([meta('a')])).rejects.toThrow('ENOSPC');
    expect(told).toEqual([expect.objectContaining({ message: 'ENOSPC' })]);
    failing = false;
    await c.write([meta('b')]);
    expect(told.at(-1)).toBeUndefined();
  });
  it('drain waits for everything queued', async () => {
    const { store, commits } = fakeStore(10);
    const c = createCommitter(store);
    void c.write([meta('z')]);
    await c.drain();
    expect(commits.length).toBe(1);
  });
});
