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
  it('drain waits for everything queued', async () => {
    const { store, commits } = fakeStore(10);
    const c = createCommitter(store);
    void c.write([meta('z')]);
    await c.drain();
    expect(commits.length).toBe(1);
  });
});
