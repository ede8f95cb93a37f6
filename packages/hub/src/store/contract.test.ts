// The hub store contract, one suite run against every store: LMDB (embedded default) and PostgreSQL (a real server
// started for this file). Store-specific behaviour (LMDB's log files and lock, PostgreSQL's migrations and leases)
// is tested beside each store.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { open as openLmdb } from 'lmdb';
import { openLmdbStore } from './lmdb.js';
import { openPostgresStore } from './postgres.js';
import type { Bytes32, ChannelId } from '@trickle/protocol/types';
import type { ChannelRecord, HubStore, RouteRecord, StoreWrite } from './types.js';
import { channelIdOf, expectSurvivesKills, hex32, testRecord, testRoute } from './records.fixture.js';
import { sql, startPostgres, type TestPostgres } from '../../../../test/helpers/postgres.mjs';
import { tempDirs } from '../../../../test/helpers/temp-dirs.mjs';

const tmp = tempDirs('trickle-store-');
let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.close();
});

/** A store backend: `fresh()` makes a new empty store location; `open(where)` opens (or reopens) the store there. */
interface Backend {
  readonly name: string;
  fresh(): Promise<string>;
  open(where: string): HubStore;
  /** The payment ids of every stored route record, finished or not, read beside the store (closed, for LMDB). */
  routeIds(where: string): Promise<string[]>;
}
const backends: Backend[] = [
  {
    name: 'LMDB',
    fresh: async () => tmp(),
    open: (path) => openLmdbStore({ path }),
    async routeIds(path) {
      const env = openLmdb({ path, readOnly: true });
      try {
        return [...env.openDB<Buffer, string>({ name: 'routes', encoding: 'binary' }).getKeys()];
      } finally {
        await env.close();
      }
    },
  },
  {
    name: 'PostgreSQL',
    fresh: () => server.createDatabase(),
    open: (url) => openPostgresStore({ url }),
    routeIds: async (url) =>
      (await sql<{ payment_id: string }>(url, 'SELECT payment_id FROM trickle_routes ORDER BY payment_id')).map(
        (r) => r.payment_id,
      ),
  },
];

const pid = (n: number) => hex32(n);
const routeOf = (n: number, more: Partial<RouteRecord>): RouteRecord =>
  testRoute(pid(n), { fromChannel: record(1).channelId, amount: 1000n + BigInt(n), ...more });
const marker = (n: number, channel: number): StoreWrite => ({
  kind: 'meta',
  key: `credited/${pid(n)}/${record(channel).channelId}`,
  value: '7',
});
// Counters at the top of their ranges: a uint256 paid, uint64 versions.
const record = (n: number): ChannelRecord =>
  testRecord(channelIdOf(n + 1), 2n ** 63n, {
    params: { salt: hex32(n) },
    funding: { device: 10n ** 30n, hub: 5n },
    state: { paidByDevice: (1n << 255n) + 7n, round: 3n },
  });

for (const b of backends) {
  describe(`hub store contract: ${b.name}`, () => {
    it('round-trips channel records exactly (uint256 counters, uint64 versions) across a reopen', async () => {
      const where = await b.fresh();
      const s1 = b.open(where);
      await s1.commit([
        { kind: 'channel', record: record(2) },
        { kind: 'channel', record: record(1) },
        { kind: 'meta', key: 'lastBlock', value: '42' },
      ]);
      await s1.close();
      const s2 = b.open(where);
      expect(await s2.loadChannels()).toEqual([record(1), record(2)]); // in channel id order
      expect(await s2.getMeta('lastBlock')).toBe('42');
      expect(await s2.getMeta('absent')).toBeUndefined();
      await s2.close();
    });
    it('meta prefixes (in key order) and deletes', async () => {
      const s = b.open(await b.fresh());
      await s.commit([
        { kind: 'meta', key: 'market/order/2', value: 'b' },
        { kind: 'meta', key: 'market/order/1', value: 'a' },
        { kind: 'meta', key: 'market/order/10', value: 'c' },
        { kind: 'meta', key: 'other', value: 'd' },
      ]);
      await s.commit([{ kind: 'deleteMeta', key: 'market/order/1' }]);
      expect(await s.loadMetaPrefix('market/order/')).toEqual([
        { key: 'market/order/10', value: 'c' },
        { key: 'market/order/2', value: 'b' },
      ]);
      expect(await s.loadMetaPrefix('market/zzz')).toEqual([]);
      await s.close();
    });
    it('keeps only pending routes for recovery, and the newest status of a route', async () => {
      const s = b.open(await b.fresh());
      const id = (n: number) => `0x${String(n).padStart(2, '0').repeat(32)}` as Bytes32;
      const route = (n: number, status: RouteRecord['status']) =>
        testRoute(id(n), { fromChannel: record(1).channelId, amount: (1n << 200n) + 5n, status });
      await s.commit([
        { kind: 'route', route: route(1, 'pending') },
        { kind: 'route', route: route(2, 'delivered') },
        { kind: 'route', route: route(3, 'pending') },
      ]);
      await s.commit([{ kind: 'route', route: route(3, 'refunded') }]);
      expect(await s.loadPendingRoutes()).toEqual([route(1, 'pending')]);
      await s.close();
    });
    it("reads one route's record, pending or finished, with its receipt request, across a reopen", async () => {
      const where = await b.fresh();
      const s1 = b.open(where);
      const receipt = { resource: hex32(201), nonce: hex32(202), expiry: 1_900_000_000n };
      const token = `0x${'7'.repeat(40)}` as RouteRecord['from'];
      await s1.commit([
        { kind: 'route', route: routeOf(1, { status: 'pending', receipt, token }) },
        { kind: 'route', route: routeOf(2, { status: 'delivered', finishedAt: 5 }) },
      ]);
      expect(await s1.loadRoute!(pid(1))).toMatchObject({ paymentId: pid(1), status: 'pending', token });
      await s1.close();
      const s = b.open(where);
      const one = (await s.loadRoute!(pid(1)))!;
      expect({ ...one.receipt, expiry: BigInt(one.receipt!.expiry) }).toEqual(receipt);
      expect(await s.loadRoute!(pid(2))).toEqual(routeOf(2, { status: 'delivered', finishedAt: 5 }));
      expect(await s.loadRoute!(pid(3))).toBeUndefined();
      await s.close();
    });
    it('keeps evidence per channel, with the channel record’s evidence count, across a reopen', async () => {
      const where = await b.fresh();
      const s = b.open(where);
      const r = record(4);
      const ev = {
        channelId: r.channelId,
        version: 9n,
        held: r.latest,
        offered: { state: { ...r.latest.state, paidByHub: 1n }, sig: `0x${'ab'.repeat(65)}` as never },
        at: 1700000000000,
      };
      const counted: ChannelRecord = { ...r, evidenceCount: 1 };
      await s.commit([
        { kind: 'evidence', evidence: ev },
        { kind: 'channel', record: counted },
        { kind: 'evidence', evidence: { ...ev, channelId: record(5).channelId } },
      ]);
      expect(await s.loadEvidence(r.channelId)).toEqual([ev]);
      await s.close();
      const s2 = b.open(where);
      expect(await s2.loadEvidence(r.channelId)).toEqual([ev]);
      expect(await s2.loadChannels()).toEqual([counted]);
      await s2.close();
    });
    it('within one commit the last write of a key wins; reads see every resolved commit at once, and a reopen keeps them', async () => {
      const where = await b.fresh();
      const s = b.open(where);
      await s.commit([
        { kind: 'meta', key: 'a', value: '1' },
        { kind: 'meta', key: 'a', value: '2' },
        { kind: 'meta', key: 'b', value: '1' },
        { kind: 'deleteMeta', key: 'b' },
      ]);
      expect(await s.getMeta('a')).toBe('2');
      expect(await s.getMeta('b')).toBeUndefined();
      const moved: ChannelRecord = { ...record(3), hubSignedVersion: 2n ** 64n - 1n };
      await s.commit([
        { kind: 'deleteMeta', key: 'a' },
        { kind: 'channel', record: record(3) },
        { kind: 'channel', record: moved },
      ]);
      expect(await s.getMeta('a')).toBeUndefined();
      expect(await s.loadChannels()).toEqual([moved]);
      await s.commit([]);
      await s.close();
      for (let reopen = 0; reopen < 2; reopen++) {
        const again = b.open(where);
        expect(await again.getMeta('a')).toBeUndefined();
        expect(await again.loadChannels()).toEqual([moved]);
        await again.close();
      }
    });
    it('commits concurrent callers in order, each durable when it resolves', async () => {
      const where = await b.fresh();
      const s = b.open(where);
      await Promise.all(
        Array.from({ length: 50 }, (_, k) =>
          s.commit([
            { kind: 'meta', key: 'last', value: String(k) },
            { kind: 'meta', key: `k/${String(k).padStart(2, '0')}`, value: String(k) },
          ]),
        ),
      );
      expect(await s.getMeta('last')).toBe('49');
      expect((await s.loadMetaPrefix('k/')).length).toBe(50);
      await s.close();
    });
    it('prunes finished routes past the window with their markers, never pending ones or live locks; idempotent', async () => {
      const where = await b.fresh();
      const s = b.open(where);
      const lock = { amount: 5n, hash: pid(99), expiry: 10_000n, payer: 'device' as const }; // expires at 10,000,000 ms
      await s.commit([
        { kind: 'route', route: routeOf(1, { status: 'pending' }) },
        marker(1, 1), // a pending route's landed credit: its route is still to be finished (resume reads it)
        { kind: 'route', route: routeOf(2, { finishedAt: 1_000, toChannel: record(2).channelId }) },
        marker(2, 2),
        marker(2, 1),
        { kind: 'meta', key: `route-refused/${pid(2)}`, value: 'NO_ROUTE' },
        { kind: 'route', route: routeOf(3, { status: 'refunded', finishedAt: 5_000 }) },
        marker(3, 1),
        { kind: 'route', route: routeOf(4, { status: 'refunded' }) }, // finished by a hub that kept no time
        marker(4, 1),
        { kind: 'route', route: routeOf(5, { finishedAt: 1_000, lock }) }, // its payer's lock is live until 10,000 s
        { kind: 'meta', key: `credited/${pid(20)}`, value: 'not a marker of payment 2' },
      ]);
      // Written pending, then finished: filed under its finish.
      await s.commit([{ kind: 'route', route: routeOf(6, { status: 'pending' }) }]);
      await s.commit([{ kind: 'route', route: routeOf(6, { finishedAt: 1_500 }) }]);

      expect(await s.pruneRoutes!({ before: 2_000, now: 3_000, limit: 1000 })).toEqual({
        pruned: 2,
        stamped: 1,
        more: false,
      });
      expect(await s.pruneRoutes!({ before: 2_000, now: 3_000, limit: 1000 })).toEqual({
        pruned: 0,
        stamped: 0,
        more: false,
      });
      expect((await s.loadMetaPrefix('credited/')).map((e) => e.key)).toEqual([
        `credited/${pid(1)}/${record(1).channelId}`,
        `credited/${pid(3)}/${record(1).channelId}`,
        `credited/${pid(4)}/${record(1).channelId}`,
        `credited/${pid(20)}`,
      ]);
      expect(await s.getMeta(`route-refused/${pid(2)}`)).toBeUndefined();
      // The unstamped route got `now` (3,000): it goes one window later, not at once.
      expect(await s.pruneRoutes!({ before: 2_999, now: 4_000, limit: 1000 })).toMatchObject({ pruned: 0 });
      expect(await s.pruneRoutes!({ before: 3_000, now: 4_000, limit: 1000 })).toMatchObject({ pruned: 1 });
      // The conditional route waits for its lock's expiry, whatever the window.
      expect(await s.pruneRoutes!({ before: 9_999_999, now: 4_000, limit: 1000 })).toMatchObject({ pruned: 1 });
      expect(await s.pruneRoutes!({ before: 10_000_000, now: 4_000, limit: 1000 })).toMatchObject({ pruned: 1 });
      expect(await s.loadPendingRoutes()).toEqual([routeOf(1, { status: 'pending' })]);
      expect((await s.loadMetaPrefix('credited/')).map((e) => e.key)).toEqual([
        `credited/${pid(1)}/${record(1).channelId}`,
        `credited/${pid(20)}`,
      ]);
      await s.close();
      expect(await b.routeIds(where)).toEqual([pid(1)]);
      const again = b.open(where);
      expect(await again.loadPendingRoutes()).toEqual([routeOf(1, { status: 'pending' })]);
      expect(await again.pruneRoutes!({ before: 1e13, now: 4_000, limit: 1000 })).toEqual({
        pruned: 0,
        stamped: 0,
        more: false,
      });
      await again.close();
    });
    it('deletes a lock hash’s keys with the last route on the hash, never while a route on it is left', async () => {
      const where = await b.fresh();
      const s = b.open(where);
      const [h1, h2] = [pid(201), pid(202)];
      const lockOn = (hash: Bytes32, expiry: bigint) => ({ amount: 5n, hash, expiry, payer: 'device' as const });
      const hashKeys = (hash: Bytes32): StoreWrite[] => [
        { kind: 'meta', key: `preimage/${hash}`, value: pid(300) },
        { kind: 'meta', key: `lock-claimed/${hash}/0x${'1'.repeat(40)}`, value: pid(300) },
        { kind: 'meta', key: `lock-claimed/${hash}/0x${'2'.repeat(40)}`, value: pid(300) },
        { kind: 'meta', key: `lock-revealed/${hash}`, value: pid(300) },
      ];
      const keysOf = async (hash: Bytes32) =>
        [
          ...(await s.loadMetaPrefix(`preimage/${hash}`)),
          ...(await s.loadMetaPrefix(`lock-claimed/${hash}/`)),
          ...(await s.loadMetaPrefix(`lock-revealed/${hash}`)),
        ].length;
      await s.commit([
        { kind: 'route', route: routeOf(1, { finishedAt: 1_000, lock: lockOn(h1, 2n) }) }, // retained from 2,000 ms
        { kind: 'route', route: routeOf(2, { finishedAt: 1_000, lock: lockOn(h1, 5n) }) }, // from 5,000 ms
        { kind: 'route', route: routeOf(3, { status: 'pending', lock: lockOn(h2, 1n) }) },
        { kind: 'route', route: routeOf(4, { status: 'refunded', finishedAt: 1_000, lock: lockOn(h2, 1n) }) },
        ...hashKeys(h1),
        ...hashKeys(h2),
        // Not keys of h1 or h2: a plain route's neighbours and another hash's (each with a pending route on its hash,
        // or the sweep of keys without a route would take them).
        { kind: 'meta', key: `preimage/${pid(203)}`, value: pid(300) },
        { kind: 'meta', key: `lock-claimed/${h1}0/0x${'3'.repeat(40)}`, value: pid(300) },
        { kind: 'route', route: routeOf(7, { status: 'pending', lock: lockOn(pid(203), 1n) }) },
        { kind: 'route', route: routeOf(8, { status: 'pending', lock: lockOn(`${h1}0` as Bytes32, 1n) }) },
      ]);
      expect(await s.pruneRoutes!({ before: 3_000, now: 3_000, limit: 1000 })).toMatchObject({ pruned: 2 });
      // Route 2 is left on h1 (its lock lives until 5 s) and the pending route 3 on h2: every key stays.
      expect([await keysOf(h1), await keysOf(h2)]).toEqual([4, 4]);
      expect(await s.pruneRoutes!({ before: 5_000, now: 5_000, limit: 1000 })).toMatchObject({ pruned: 1 });
      expect([await keysOf(h1), await keysOf(h2)]).toEqual([0, 4]);
      // The pending route on h2 finishes; its prune takes h2's keys.
      await s.commit([{ kind: 'route', route: routeOf(3, { finishedAt: 6_000, lock: lockOn(h2, 1n) }) }]);
      expect(await s.pruneRoutes!({ before: 6_000, now: 6_000, limit: 1000 })).toMatchObject({ pruned: 1 });
      expect([await keysOf(h1), await keysOf(h2)]).toEqual([0, 0]);
      expect(await s.getMeta(`preimage/${pid(203)}`)).toBe(pid(300));
      expect((await s.loadMetaPrefix(`lock-claimed/${h1}0/`)).length).toBe(1);
      await s.close();
      expect(await b.routeIds(where)).toEqual([pid(7), pid(8)]);
    });
    // LMDB: the commit is ordered before the batch's one log entry, after its reads (PostgreSQL serialises the two
    // either way round under the hash's lock: postgres.test 'lock-hash keys beside commits').
    if (b.name === 'LMDB')
      it('a pending route on a hash committed while a batch prunes the last finished route on it keeps the hash’s keys', async () => {
        const where = await b.fresh();
        const s = b.open(where);
        const lock = { amount: 5n, hash: pid(250), expiry: 0n, payer: 'device' as const };
        const keys = [
          `lock-claimed/${pid(250)}/0x${'1'.repeat(40)}`,
          `lock-revealed/${pid(250)}`,
          `preimage/${pid(250)}`,
        ];
        await s.commit([
          { kind: 'route', route: routeOf(1, { finishedAt: 1, lock }) },
          ...keys.map((key): StoreWrite => ({ kind: 'meta', key, value: pid(300) })),
        ]);
        // The commit is asked for while the batch reads: it is logged before the batch's entry.
        const pruning = s.pruneRoutes!({ before: 1_000, now: 1_000, limit: 10 });
        await s.commit([{ kind: 'route', route: routeOf(2, { status: 'pending', lock }) }]);
        await pruning;
        const stored = async () => (await s.loadMetaPrefix('')).map((e) => e.key).filter((k) => k.includes(pid(250)));
        expect(await stored()).toEqual(keys);
        // The finished route goes (in that batch or the next), the hash's keys stay with the pending one.
        await s.pruneRoutes!({ before: 1_000, now: 1_000, limit: 10 });
        expect(await stored()).toEqual(keys);
        await s.close();
        expect(await b.routeIds(where)).toEqual([pid(2)]);
      });
    it('sweeps once the keys of lock hashes no route is left on (routes pruned by older versions), a window after it began; keys with a route stay', async () => {
      const where = await b.fresh();
      let s = b.open(where);
      const lockOn = (hash: Bytes32) => ({ amount: 5n, hash, expiry: 1n, payer: 'device' as const });
      const hashKeys = (hash: Bytes32): StoreWrite[] => [
        { kind: 'meta', key: `preimage/${hash}`, value: pid(300) },
        { kind: 'meta', key: `lock-claimed/${hash}/0x${'1'.repeat(40)}`, value: pid(300) },
        { kind: 'meta', key: `lock-claimed/${hash}/0x${'2'.repeat(40)}`, value: pid(300) },
        { kind: 'meta', key: `lock-revealed/${hash}`, value: pid(300) },
      ];
      const [orphan, bare, pending, finished, later] = [pid(401), pid(402), pid(403), pid(404), pid(405)];
      const keysOf = async (hash: Bytes32) =>
        [
          ...(await s.loadMetaPrefix(`preimage/${hash}`)),
          ...(await s.loadMetaPrefix(`lock-claimed/${hash}/`)),
          ...(await s.loadMetaPrefix(`lock-revealed/${hash}`)),
        ].length;
      const counts = async () => Promise.all([orphan, bare, pending, finished, later].map(keysOf));
      // As an older hub left them: the keys of a hash whose routes it pruned (none left), a bare preimage of a hub from
      // before per-payee claims; and keys of hashes with a route still stored, pending or finished (not yet prunable).
      await s.commit([
        ...hashKeys(orphan),
        { kind: 'meta', key: `preimage/${bare}`, value: pid(300) },
        { kind: 'route', route: routeOf(1, { status: 'pending', lock: lockOn(pending) }) },
        ...hashKeys(pending),
        { kind: 'route', route: routeOf(2, { finishedAt: 50_000, lock: lockOn(finished) }) },
        ...hashKeys(finished),
        { kind: 'meta', key: `credited/${pid(9)}/${record(1).channelId}`, value: '1' },
      ]);
      // The first batch starts the sweep at `now` (10 s): nothing is swept before a window has passed since.
      expect(await s.pruneRoutes!({ before: 0, now: 10_000, limit: 2 })).toEqual({
        pruned: 0,
        stamped: 0,
        more: false,
      });
      expect(await s.pruneRoutes!({ before: 9_999, now: 20_000, limit: 2 })).toMatchObject({ pruned: 0, more: false });
      expect(await counts()).toEqual([4, 1, 4, 4, 0]);
      // A window after: in batches of 2 keys, resumed across a reopen.
      expect(await s.pruneRoutes!({ before: 10_000, now: 20_000, limit: 2 })).toMatchObject({ pruned: 0, more: true });
      await s.close();
      s = b.open(where);
      let batches = 1;
      for (let more = true; more; batches++)
        more = (await s.pruneRoutes!({ before: 10_000, now: 20_000, limit: 2 })).more;
      expect(batches).toBeGreaterThanOrEqual(7); // 13 keys, 2 a batch
      expect(await counts()).toEqual([0, 0, 4, 4, 0]);
      expect(await s.getMeta(`credited/${pid(9)}/${record(1).channelId}`)).toBe('1');
      // Once: keys left without a route later are this version's to delete with their last route, not the sweep's.
      await s.commit(hashKeys(later));
      expect(await s.pruneRoutes!({ before: 1e12, now: 1e12, limit: 2 })).toMatchObject({ more: false });
      expect(await counts()).toEqual([0, 0, 4, 0, 4]); // the finished route's prune took its hash's keys
      await s.close();
    });
    it('prunes in batches of at most `limit`; a payment id written again after its prune is a new route', async () => {
      const where = await b.fresh();
      const s = b.open(where);
      await s.commit(
        Array.from({ length: 5 }, (_, k) => ({ kind: 'route' as const, route: routeOf(k + 1, { finishedAt: k }) })),
      );
      expect(await s.pruneRoutes!({ before: 100, now: 100, limit: 2 })).toEqual({ pruned: 2, stamped: 0, more: true });
      expect(await s.pruneRoutes!({ before: 100, now: 100, limit: 2 })).toEqual({ pruned: 2, stamped: 0, more: true });
      expect(await s.pruneRoutes!({ before: 100, now: 100, limit: 2 })).toEqual({ pruned: 1, stamped: 0, more: false });
      // Reused while finished (not pruned yet): pending again, so the prune of its old finish passes it by.
      await s.commit([{ kind: 'route', route: routeOf(7, { finishedAt: 1 }) }]);
      await s.commit([{ kind: 'route', route: routeOf(7, { status: 'pending' }) }]);
      await s.commit([{ kind: 'route', route: routeOf(1, { status: 'pending' }) }, marker(1, 3)]);
      expect(await s.pruneRoutes!({ before: 100, now: 100, limit: 2 })).toMatchObject({ pruned: 0 });
      expect(await s.loadPendingRoutes()).toEqual([
        routeOf(1, { status: 'pending' }),
        routeOf(7, { status: 'pending' }),
      ]);
      expect((await s.loadMetaPrefix('credited/')).length).toBe(1);
      await s.close();
      expect(await b.routeIds(where)).toEqual([pid(1), pid(7)]);
    });
    it('a route written again (its payment id reused) while a batch runs is kept, with its marker', async () => {
      const s = b.open(await b.fresh());
      await s.commit(
        Array.from({ length: 50 }, (_, k) => ({ kind: 'route' as const, route: routeOf(k + 1, { finishedAt: 1 }) })),
      );
      const pruning = s.pruneRoutes!({ before: 100, now: 100, limit: 1000 });
      const again = Promise.all(
        Array.from({ length: 50 }, (_, k) =>
          s.commit([{ kind: 'route', route: routeOf(k + 1, { status: 'pending' }) }, marker(k + 1, 1)]),
        ),
      );
      const [{ pruned }] = await Promise.all([pruning, again]);
      // Each route went either before it was written again (then that write made it anew) or not at all.
      expect((await s.loadPendingRoutes()).length).toBe(50);
      expect((await s.loadMetaPrefix('credited/')).length).toBe(50);
      expect(pruned).toBeLessThanOrEqual(50);
      await s.close();
    });
    if (b.name === 'PostgreSQL')
      it('two processes pruning at once delete each route once, all of them', async () => {
        const url = await b.fresh();
        const [s1, s2] = [b.open(url), b.open(url)];
        await s1.commit(
          Array.from({ length: 300 }, (_, k) => ({ kind: 'route' as const, route: routeOf(k + 1, { finishedAt: 1 }) })),
        );
        const drain = async (s: HubStore) => {
          let n = 0;
          for (;;) {
            const r = await s.pruneRoutes!({ before: 100, now: 100, limit: 20 });
            n += r.pruned;
            if (!r.more) return n;
          }
        };
        const [a, b2] = await Promise.all([drain(s1), drain(s2)]);
        expect(a + b2).toBe(300);
        expect(await b.routeIds(url)).toEqual([]);
        await Promise.all([s1.close(), s2.close()]);
      });
    if (b.name === 'PostgreSQL')
      it('two processes pruning the routes of one hash at once: the last of them takes the hash’s keys', async () => {
        const url = await b.fresh();
        const [s1, s2] = [b.open(url), b.open(url)];
        // 100 hashes, two finished routes on each, next to each other in the pruners' order: one batch each.
        const hash = (h: number) => pid(500 + h);
        await s1.commit(
          Array.from({ length: 100 }, (_, h): StoreWrite[] => [
            ...[0, 1].map((k) => ({
              kind: 'route' as const,
              route: routeOf(2 * h + k + 1, {
                finishedAt: h,
                lock: { amount: 1n, hash: hash(h), expiry: 0n, payer: 'device' as const },
              }),
            })),
            { kind: 'meta', key: `preimage/${hash(h)}`, value: pid(1) },
          ]).flat(),
        );
        const drain = async (s: HubStore) => {
          for (;;) if (!(await s.pruneRoutes!({ before: 1_000, now: 1_000, limit: 1 })).more) return;
        };
        await Promise.all([drain(s1), drain(s2), drain(s1), drain(s2)]);
        expect(await b.routeIds(url)).toEqual([]);
        expect(await s1.loadMetaPrefix('preimage/')).toEqual([]);
        await Promise.all([s1.close(), s2.close()]);
      });
    if (b.name === 'PostgreSQL')
      it('migrates to schema 6: stored conditional routes get their lock hash, so a pending one keeps its hash’s keys', async () => {
        const url = await b.fresh();
        let s = b.open(url);
        const lock = { amount: 1n, hash: pid(600), expiry: 0n, payer: 'device' as const };
        await s.commit([
          { kind: 'route', route: routeOf(1, { status: 'pending', lock }) },
          { kind: 'route', route: routeOf(2, { finishedAt: 1, lock }) },
          { kind: 'meta', key: `preimage/${pid(600)}`, value: pid(1) },
        ]);
        await s.close();
        // As a schema-5 hub left it: no lock_hash column (nor schema 7's trigger filling it).
        await sql(url, 'DROP FUNCTION trickle_routes_lock_hash CASCADE');
        await sql(url, 'ALTER TABLE trickle_routes DROP COLUMN lock_hash');
        await sql(url, 'UPDATE trickle_schema SET version = 5');
        s = b.open(url);
        expect(await s.pruneRoutes!({ before: 1_000, now: 1_000, limit: 10 })).toMatchObject({ pruned: 1 });
        expect(await s.getMeta(`preimage/${pid(600)}`)).toBe(pid(1));
        await s.close();
      });
    if (b.name === 'PostgreSQL')
      it('a route a schema-5 process writes after the migration (no lock hash named) gets it from its record: a pending one keeps its hash’s keys', async () => {
        const url = await b.fresh();
        const s = b.open(url);
        const lock = { amount: 1n, hash: pid(700), expiry: 0n, payer: 'device' as const };
        await s.commit([
          { kind: 'route', route: routeOf(1, { status: 'pending', lock }) },
          { kind: 'route', route: routeOf(2, { finishedAt: 1, lock }) },
          { kind: 'meta', key: `preimage/${pid(700)}`, value: pid(1) },
        ]);
        // The pending route again as schema-5 code inserts it (rolling upgrade: it names no lock_hash).
        const [row] = await sql<{ record: string }>(
          url,
          'DELETE FROM trickle_routes WHERE payment_id = $1 RETURNING record',
          [pid(1)],
        );
        await sql(
          url,
          `INSERT INTO trickle_routes (payment_id, status, record, retain_from) VALUES ($1, 'pending', $2, NULL)`,
          [pid(1), row!.record],
        );
        expect(await sql(url, 'SELECT lock_hash FROM trickle_routes WHERE payment_id = $1', [pid(1)])).toEqual([
          { lock_hash: pid(700) },
        ]);
        expect(await s.pruneRoutes!({ before: 1_000, now: 1_000, limit: 10 })).toMatchObject({ pruned: 1 });
        expect(await s.getMeta(`preimage/${pid(700)}`)).toBe(pid(1));
        await s.close();
      });
    if (b.name === 'PostgreSQL')
      it('keeps a finished route whose outbox row is not settled; deletes a settled row with its route', async () => {
        const url = await b.fresh();
        const s = b.open(url);
        await s.commit([
          { kind: 'route', route: routeOf(1, { finishedAt: 1 }) },
          { kind: 'route', route: routeOf(2, { finishedAt: 1 }) },
          marker(1, 2),
        ]);
        // The cluster's outbox rows of the two payments (written by the payer's commit there): one settled, one not.
        for (const [n, settled] of [
          [1, true],
          [2, false],
        ] as const)
          await sql(
            url,
            `INSERT INTO trickle_outbox (payment_id, from_channel, payer, payee, to_channel, token, amount, status, settled)
             VALUES ($1, $2, $3, $4, $5, $6, 1, 'delivered', $7)`,
            [
              pid(n),
              record(1).channelId,
              record(1).params.device,
              record(2).params.device,
              record(2).channelId,
              record(1).params.token,
              settled,
            ],
          );
        expect(await s.pruneRoutes!({ before: 100, now: 100, limit: 10 })).toMatchObject({ pruned: 1 });
        expect(await b.routeIds(url)).toEqual([pid(2)]);
        expect(await sql(url, 'SELECT payment_id FROM trickle_outbox')).toEqual([{ payment_id: pid(2) }]);
        expect(await s.loadMetaPrefix('credited/')).toEqual([]);
        await sql(url, 'UPDATE trickle_outbox SET settled = true');
        expect(await s.pruneRoutes!({ before: 100, now: 100, limit: 10 })).toMatchObject({ pruned: 1 });
        expect(await sql(url, 'SELECT payment_id FROM trickle_outbox')).toEqual([]);
        await s.close();
      });
    // A SIGKILL at any point: every commit the child saw resolve is there after a reopen, deletes stay deleted.
    it('survives SIGKILL mid-stream', async () => {
      const where = await b.fresh();
      await expectSurvivesKills(where, () => b.open(where), { rounds: 2, logBytes: 8 << 20 });
    });
  });
}
