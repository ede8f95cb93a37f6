import { describe, expect, it } from 'vitest';
import { createCommitter } from './committer.js';
import type { HubStore, StoreWrite } from './store/types.js';

function fakeStore(delayMs: number, fail = false) {
  const commits: StoreWrite[][] = [];
  const store: HubStore = {
    loadChannels: async () => [],
    loadPendingRoutes: async () => [],
    loadEvidence: async () => [],
    getMeta: async () => undefined,
    loadMetaPrefix: async () => [],
    close: async () => {},
    async commit(writes) {
      await new Promise((r) => setTimeout(r, delayMs));
      if (fail) throw new Error('disk on fire');
      commits.push([...writes]);
    },
  };
  return { store, commits };
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
  it('resolves a write only after its commit, and rejects every writer of a failed commit', async () => {
    const { store } = fakeStore(5, true);
    const c = createCommitter(store);
    const results = await Promise.allSettled([c.write([meta('x')]), c.write([meta('y')])]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
  });
  it('starts the next commit at the end of the turn the previous one completed: writes made as its writers resume join it', async () => {
    // A store whose commits complete when the test says.
    const held: { writes: readonly StoreWrite[]; done: () => void }[] = [];
    const { store } = fakeStore(0);
    store.commit = (writes) => new Promise<void>((done) => held.push({ writes: [...writes], done }));
    const keys = (i: number) => held[i]!.writes.map((w) => (w.kind === 'meta' ? w.key : w.kind));
    const c = createCommitter(store);
    // Channel a's next step is written as its drain resumes after the commit: a few promise hops later, same turn.
    const a = c.write([meta('a1')]).then(async () => {
      for (let i = 0; i < 5; i++) await Promise.resolve();
      await c.write([meta('a2')]);
    });
    await expect.poll(() => held.length).toBe(1);
    const b = c.write([meta('b')]); // queued while a1 commits
    held[0]!.done();
    await expect.poll(() => held.length).toBe(2);
    expect(keys(1)).toEqual(['b', 'a2']);
    held[1]!.done();
    await Promise.all([a, b]);
    expect(held).toHaveLength(2);
  });
  it('drain waits for everything queued', async () => {
    const { store, commits } = fakeStore(10);
    const c = createCommitter(store);
    void c.write([meta('z')]);
    await c.drain();
    expect(commits.length).toBe(1);
  });
});
