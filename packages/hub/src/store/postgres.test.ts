// PostgreSQL-only behaviour of the hub store, against a real server: migrations, a server restart, and the
// cluster's channel leases with their fencing (including a writer process paused past its lease with SIGSTOP), and a
// channel table on it settling a commit whose outcome is unknown.
// The contract shared with the LMDB store is in contract.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { Message } from '@trickle/protocol/codec';
import { stateDigest } from '@trickle/protocol/eip712';
import { signatureToHex } from '@trickle/protocol/signer';
import type { ChannelId, State } from '@trickle/protocol/types';
import { openPostgresStore, POSTGRES_SCHEMA_VERSION } from './postgres.js';
import { createCommitter } from '../committer.js';
import { fencedChannels } from '../leases.js';
import { adjudicator, answerTo, device as deviceKey, hubKey, sep, testTable } from '../table.fixture.js';
import {
  channelRecordJson,
  outcomeUnknown,
  staleChannels,
  type ChannelRecord,
  type RouteRecord,
  type StoreWrite,
} from './types.js';
import { channelIdOf, hex32, TEST_PARTIES, testRecord, testRoute } from './records.fixture.js';
import { hubChannelRecord } from '../../../../test/helpers/hub-channel.mjs';
import { sql, startPostgres, type TestPostgres } from '../../../../test/helpers/postgres.mjs';

let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.close();
});

const device = TEST_PARTIES.device;
const channel = (n: number) => channelIdOf(n);
const record = (n: number, version: bigint): ChannelRecord =>
  testRecord(channel(n), version, { state: { paidByDevice: version } });
const storedVersion = async (url: string, n: number | ChannelId) => {
  const rows = await sql<{ record: string }>(url, 'SELECT record FROM trickle_channels WHERE channel_id = $1', [
    typeof n === 'number' ? channel(n) : n,
  ]);
  return rows[0]
    ? BigInt((JSON.parse(rows[0].record) as { latest: { state: { version: string } } }).latest.state.version)
    : undefined;
};

describe('PostgreSQL store: schema', () => {
  it('migrates a fresh database once, even with several processes starting together, and refuses a newer schema', async () => {
    const url = await server.createDatabase();
    const stores = [1, 2, 3].map(() => openPostgresStore({ url }));
    expect(await Promise.all(stores.map((s) => s.loadChannels()))).toEqual([[], [], []]);
    await Promise.all(stores.map((s) => s.close()));
    expect(await sql(url, 'SELECT version FROM trickle_schema')).toEqual([{ version: POSTGRES_SCHEMA_VERSION }]);

    await sql(url, 'UPDATE trickle_schema SET version = $1', [POSTGRES_SCHEMA_VERSION + 1]);
    const newer = openPostgresStore({ url });
    await expect(newer.loadChannels()).rejects.toMatchObject({
      code: 'STORE_FAILURE',
      details: { version: POSTGRES_SCHEMA_VERSION + 1, known: POSTGRES_SCHEMA_VERSION },
    });
    await expect(newer.commit([{ kind: 'meta', key: 'a', value: '1' }])).rejects.toMatchObject({
      code: 'STORE_FAILURE',
    });
    await newer.close();
    expect(await sql(url, 'SELECT count(*)::int AS n FROM trickle_meta')).toEqual([{ n: 0 }]);
  });

  it('a cluster process whose start-up keeps its event loop busy while it migrates still opens the database', async () => {
    const url = await server.createDatabase();
    // A cluster store's connections end a transaction left idle for half the lease (250 ms here). A hub starting up
    // does much else on its event loop while its migration runs: here the loop is busy for twice that right after the
    // migration's transaction opened, before its next statement.
    const query = pg.Client.prototype.query;
    let stalled = 0;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const r = (query as (...a: unknown[]) => unknown).apply(this, args);
      const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: unknown } | undefined)?.text;
      if (typeof text === 'string' && text.startsWith('BEGIN') && stalled === 0 && r instanceof Promise) {
        stalled++;
        return r.then((v: unknown) => {
          const end = performance.now() + 500;
          while (performance.now() < end);
          return v;
        });
      }
      return r;
    } as typeof query;
    try {
      const store = openPostgresStore({ url, cluster: { leaseMs: 500 } });
      try {
        expect(await store.loadChannels()).toEqual([]);
      } finally {
        await store.close();
      }
    } finally {
      pg.Client.prototype.query = query;
    }
    expect(stalled).toBe(1);
    expect(await sql(url, 'SELECT version FROM trickle_schema')).toEqual([{ version: POSTGRES_SCHEMA_VERSION }]);
  });
  it('answers STORE_FAILURE while the server is down and works again, with nothing lost, once it is back', async () => {
    const url = await server.createDatabase();
    const s = openPostgresStore({ url });
    await s.commit([{ kind: 'meta', key: 'before', value: '1' }]);
    // Commits in flight while the server shuts down fail; the dropped connections do not end this process.
    const inFlight = Array.from({ length: 20 }, (_, k) =>
      s.commit([{ kind: 'meta', key: `racing/${k}`, value: 'x'.repeat(10_000) }]).then(
        () => 'ok',
        (e: unknown) => (e as { code?: string }).code,
      ),
    );
    await server.stop();
    for (const r of await Promise.all(inFlight)) expect(['ok', 'STORE_FAILURE']).toContain(r);
    await expect(s.commit([{ kind: 'meta', key: 'during', value: '1' }])).rejects.toMatchObject({
      code: 'STORE_FAILURE',
    });
    await expect(s.getMeta('before')).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    await server.start();
    await s.commit([{ kind: 'meta', key: 'after', value: '1' }]);
    expect((await s.loadMetaPrefix('')).filter((e) => !e.key.startsWith('racing/'))).toEqual([
      { key: 'after', value: '1' },
      { key: 'before', value: '1' },
    ]);
    await s.close();
  });

  it('a connection cut right after COMMIT went out: STORE_FAILURE with its outcome unknown, and the write is there', async () => {
    const url = await server.createDatabase();
    const net = cuttingProxy(server.port);
    const port = await net.listening;
    const s = openPostgresStore({ url: url.replace(`:${server.port}/`, `:${port}/`) });
    await s.commit([{ kind: 'channel', record: record(1, 1n) }]);
    const version = async () => (await s.loadChannel!(channel(1)))?.latest.state.version;
    // Plain channel records are one statement, its own transaction (no COMMIT goes out): cut once it went out, the
    // outcome is unknown, and it landed.
    net.cutAfter('trickle-commit-plain');
    const one = await s.commit([{ kind: 'channel', record: record(1, 2n) }]).catch((x: unknown) => x);
    expect(one).toMatchObject({ code: 'STORE_FAILURE' });
    expect(outcomeUnknown(one)).toBe(true);
    expect(await version()).toBe(2n);
    // A commit with more than channel records is a transaction.
    const withMeta = (v: bigint) => [
      { kind: 'channel', record: record(1, v) } as const,
      { kind: 'meta', key: 'with', value: String(v) } as const,
    ];
    net.cutAfter('COMMIT');
    const e = await s.commit(withMeta(3n)).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'STORE_FAILURE' });
    expect(outcomeUnknown(e)).toBe(true);
    // It landed: the server committed before the connection went.
    expect(await version()).toBe(3n);
    // Cut before COMMIT (at the upsert): a plain failure, and nothing of it landed.
    net.cutAfter('INSERT');
    const plain = await s.commit(withMeta(4n)).catch((x: unknown) => x);
    expect(plain).toMatchObject({ code: 'STORE_FAILURE' });
    expect(outcomeUnknown(plain)).toBe(false);
    expect(await version()).toBe(3n);
    expect(await s.getMeta('with')).toBe('3');
    await s.close();
    await net.close();
  });

  it('a connection that goes silent mid-commit (a partition, no reset) fails STORE_FAILURE within its bound, and the store works once the network is back', async () => {
    const url = await server.createDatabase();
    const net = silentProxy(server.port);
    const port = await net.listening;
    // Cluster mode for its short statement bound (the lease time): a statement with no answer within it (and a margin
    // for the server's own statement_timeout) fails here, on the client, and its connection is discarded.
    const leaseMs = 500;
    const bound = 2 * (leaseMs + 500);
    const s = openPostgresStore({ url: url.replace(`:${server.port}/`, `:${port}/`), cluster: { leaseMs } });
    const withMeta = (v: bigint) => [
      { kind: 'channel', record: record(1, v) } as const,
      { kind: 'meta', key: 'with', value: String(v) } as const,
    ];
    await s.leases!.acquire(channel(1), device, 0);
    await s.commit(withMeta(1n));
    // The COMMIT reaches the server, which commits; its answer, and everything after, is lost.
    net.silenceAfter('COMMIT');
    const t0 = performance.now();
    const settle = (p: Promise<void>) =>
      p.then(
        () => ({ e: undefined as unknown, at: performance.now() }),
        (e: unknown) => ({ e, at: performance.now() }),
      );
    const first = settle(s.commit(withMeta(2n)));
    const next = settle(s.commit([{ kind: 'meta', key: 'next', value: '1' }])); // queued behind the first
    const a = await first;
    expect(a.e).toMatchObject({ code: 'STORE_FAILURE' });
    expect(outcomeUnknown(a.e)).toBe(true);
    expect(a.at - t0).toBeLessThan(bound);
    const b = await next;
    expect(b.e).toMatchObject({ code: 'STORE_FAILURE' });
    expect(outcomeUnknown(b.e)).toBe(false); // its BEGIN never reached the server
    expect(b.at - a.at).toBeLessThan(bound);
    // The server did commit the first: its outcome was unknown, not failed. The second did not land.
    expect(await storedVersion(url, 1)).toBe(2n);
    expect(await sql(url, `SELECT value FROM trickle_meta WHERE key = 'next'`)).toEqual([]);
    // The network is back: the lease (run out meanwhile) is taken again, and writes land.
    net.restore();
    expect((await s.leases!.acquire(channel(1), device, 0)).held).toBe(true);
    await s.commit(withMeta(3n));
    expect(await storedVersion(url, 1)).toBe(3n);
    expect(await s.getMeta('with')).toBe('3');
    await s.close();
    await net.close();
  }, 20_000);
});

describe('PostgreSQL store: channel leases and fencing', () => {
  it('one owner at a time: a held lease is refused to others (naming the owner), renewed past its term, released at once', async () => {
    const url = await server.createDatabase();
    const a = openPostgresStore({ url, cluster: { leaseMs: 400, url: 'ws://a/' } });
    const b = openPostgresStore({ url, cluster: { leaseMs: 400, url: 'ws://b/' } });
    expect(await a.leases!.acquire(channel(1), device, 0)).toEqual({ held: false, record: undefined });
    expect(await a.leases!.acquire(channel(1), device, 0)).toEqual({ held: true });
    await a.commit([{ kind: 'channel', record: record(1, 5n) }]);
    // Renewals keep it well past one lease time; B waiting 1 s does not get it.
    await expect(b.leases!.acquire(channel(1), device, 1000)).rejects.toMatchObject({
      code: 'STORE_FAILURE',
      details: { channelId: channel(1), ownerUrl: 'ws://a/' },
    });
    expect(a.leases!.epochOf(channel(1))).toBe(1n);
    await expect(b.commit([{ kind: 'channel', record: record(1, 6n) }])).rejects.toMatchObject({
      code: 'STORE_FAILURE',
      details: { fenced: [channel(1)] },
    });
    // Released: B takes it at once, at the next epoch, reading what A wrote.
    await a.leases!.release([channel(1)]);
    expect(a.leases!.epochOf(channel(1))).toBeUndefined();
    expect(await b.leases!.acquire(channel(1), device, 0)).toEqual({ held: false, record: record(1, 5n) });
    expect(b.leases!.epochOf(channel(1))).toBe(2n);
    await expect(a.commit([{ kind: 'channel', record: record(1, 7n) }])).rejects.toMatchObject({
      code: 'STORE_FAILURE',
      details: { fenced: [channel(1)] },
    });
    await b.commit([{ kind: 'channel', record: record(1, 6n) }]);
    expect(await storedVersion(url, 1)).toBe(6n);
    expect(b.leases!.held()).toBe(1);
    expect(b.leases!.databaseReachable()).toBe(true);
    await Promise.all([a.close(), b.close()]);
  });
  it('the fencing check inside the transaction refuses a writer whose epoch moved on, and renewal reports the loss', async () => {
    const url = await server.createDatabase();
    // Renewals every 1.5 s: the first comes after the checks below, which run while A has not noticed yet.
    const a = openPostgresStore({ url, cluster: { leaseMs: 6000 } });
    const lostSeen: ChannelId[][] = [];
    a.leases!.onLost((ids) => lostSeen.push(ids));
    await a.leases!.acquire(channel(1), device, 0);
    await a.leases!.acquire(channel(2), device, 0);
    // Another process took channel 2 (epoch + 1) without A having noticed yet: A still counts it as held.
    await sql(url, `UPDATE trickle_leases SET epoch = epoch + 1, owner = 'someone-else' WHERE channel_id = $1`, [
      channel(2),
    ]);
    expect(a.leases!.epochOf(channel(2))).toBe(1n);
    const err = await a
      .commit([
        { kind: 'channel', record: record(1, 1n) },
        { kind: 'channel', record: record(2, 1n) },
        { kind: 'meta', key: 'm', value: '1' },
      ])
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORE_FAILURE', details: { fenced: [channel(2)] } });
    // Nothing of the refused transaction was written.
    expect(await storedVersion(url, 1)).toBeUndefined();
    expect(await a.getMeta('m')).toBeUndefined();
    // Through the committer: the writer of channel 2 is refused, the others of the same turn commit.
    const committer = createCommitter(a, undefined, a.leases);
    const results = await Promise.allSettled([
      committer.write([{ kind: 'channel', record: record(1, 2n) }]),
      committer.write([{ kind: 'channel', record: record(2, 2n) }]),
      committer.write([{ kind: 'meta', key: 'm', value: '2' }]),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(fencedChannels((results[1] as PromiseRejectedResult).reason)).toEqual(new Set([channel(2)]));
    expect(await storedVersion(url, 1)).toBe(2n);
    expect(await storedVersion(url, 2)).toBeUndefined();
    // The next renewal finds the lease gone and reports it once.
    await new Promise((r) => setTimeout(r, 1600));
    expect(lostSeen).toEqual([[channel(2)]]);
    expect(a.leases!.epochOf(channel(2))).toBeUndefined();
    expect(a.leases!.epochOf(channel(1))).toBe(1n);
    await a.close();
  });
  it('the committer refuses a write computed under an epoch that is no longer held, even when the lease was taken again', async () => {
    const url = await server.createDatabase();
    const a = openPostgresStore({ url, cluster: { leaseMs: 6000 } });
    const committer = createCommitter(a, undefined, a.leases);
    await a.leases!.acquire(channel(1), device, 0);
    await a.commit([{ kind: 'meta', key: 'blocker', value: '0' }]);
    // Hold the commit path: another session locks the row the first commit updates.
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query(`SELECT * FROM trickle_meta WHERE key = 'blocker' FOR UPDATE`);
    const first = committer.write([{ kind: 'meta', key: 'blocker', value: '1' }]);
    await new Promise((r) => setTimeout(r, 100)); // the first commit waits on the lock
    const stale = committer.write([{ kind: 'channel', record: record(1, 7n) }]).then(
      () => 'committed',
      (e: unknown) => e,
    ); // computed under epoch 1
    // Meanwhile the lease goes and comes back: epoch 2, another process may have written the channel in between.
    await a.leases!.release([channel(1)]);
    expect(await a.leases!.acquire(channel(1), device, 0)).toEqual({ held: false, record: undefined });
    expect(a.leases!.epochOf(channel(1))).toBe(2n);
    const fresh = committer.write([{ kind: 'channel', record: record(1, 8n) }]); // computed under epoch 2
    await blocker.query('COMMIT');
    await blocker.end();
    await first;
    expect(await stale).toMatchObject({ code: 'STORE_FAILURE', details: { fenced: [channel(1)] } });
    await fresh;
    expect(await storedVersion(url, 1)).toBe(8n);
    await a.close();
  });
  it('a writer process paused past its lease (SIGSTOP) is taken over, and after SIGCONT its writes are refused', async () => {
    const url = await server.createDatabase();
    // Long enough that the child renews in time on a loaded CI machine (it runs beside the whole suite).
    const leaseMs = 1500;
    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL('./lease-child.mjs', import.meta.url)), url, channel(9), String(leaseMs)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const lines: string[] = [];
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let buffered = '';
    child.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      const parts = buffered.split('\n');
      buffered = parts.pop()!;
      lines.push(...parts);
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const until = async (ok: () => boolean) => {
      for (let i = 0; i < 400 && !ok(); i++) await new Promise((r) => setTimeout(r, 25));
      expect(ok()).toBe(true);
    };
    await until(() => lines.length >= 10);
    child.kill('SIGSTOP');
    const okBeforeStop = lines.filter((l) => l.startsWith('ok ')).length;
    // While it is paused, another process waits for the lease to lapse and takes it over.
    const b = openPostgresStore({ url, cluster: { leaseMs } });
    const t0 = performance.now();
    const taken = await b.leases!.acquire(channel(9), device, 3 * leaseMs);
    expect(performance.now() - t0).toBeLessThan(3 * leaseMs);
    expect(taken.held).toBe(false);
    const readVersion = taken.held ? -1n : taken.record!.latest.state.version;
    // What B read is at least everything the child reported durable (its last commit may have landed unreported).
    expect([BigInt(okBeforeStop), BigInt(okBeforeStop) + 1n]).toContain(readVersion);
    await b.commit([{ kind: 'channel', record: record(9, 1000n) }]);
    child.kill('SIGCONT');
    expect({ exit: await exited, stderr }).toEqual({ exit: 0, stderr: '' });
    const fenced = lines.filter((l) => l.startsWith('fenced '));
    expect(fenced.length).toBe(3);
    // Every write the child saw succeed is one B read back or older: none landed after the takeover.
    for (const l of lines.filter((x) => x.startsWith('ok ')))
      expect(BigInt(l.slice(3))).toBeLessThanOrEqual(readVersion);
    expect(await storedVersion(url, 9)).toBe(1000n);
    await b.close();
  });
});

describe('PostgreSQL store: lock-hash keys beside commits', () => {
  const hash = hex32(900);
  const lock = { amount: 5n, hash, expiry: 0n, payer: 'device' as const };
  const keys = [`lock-claimed/${hash}/0x${'1'.repeat(40)}`, `lock-revealed/${hash}`, `preimage/${hash}`];
  const keyWrites: StoreWrite[] = keys.map((key) => ({ kind: 'meta', key, value: hex32(901) }));
  const hashKeys = async (url: string) =>
    (
      await sql<{ key: string }>(url, "SELECT key FROM trickle_meta WHERE key LIKE '%' || $1 || '%' ORDER BY key", [
        hash,
      ])
    ).map((r) => r.key);
  /** Backends of database `url` waiting for a lock (a row's or an advisory one). */
  const waiting = async (url: string) =>
    (
      await sql<{ n: number }>(
        url,
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
      )
    )[0]!.n;
  const until = async (ok: () => Promise<boolean>) => {
    for (let i = 0; i < 400; i++) {
      if (await ok()) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error('timed out');
  };

  /**
   * A writer process commits a pending route on the hash while a pruner process runs a batch (`prune`) beside it: the
   * writer's transaction is held open right after its route's insert (a third connection holds the row of a meta key
   * the commit writes next), the pruner's batch runs to its end or until it waits for a lock, then the writer commits.
   * @returns the hash's keys left
   */
  const race = async (url: string, prune: (s: ReturnType<typeof openPostgresStore>) => Promise<unknown>) => {
    const [pruner, writer] = [openPostgresStore({ url }), openPostgresStore({ url })];
    const gate = new pg.Client({ connectionString: url });
    await gate.connect();
    try {
      await gate.query('BEGIN');
      await gate.query(`SELECT 1 FROM trickle_meta WHERE key = 'gate' FOR UPDATE`);
      const committed = writer.commit([
        { kind: 'route', route: testRoute(hex32(3), { status: 'pending', lock }) },
        { kind: 'meta', key: 'gate', value: '1' },
      ]);
      await until(async () => (await waiting(url)) === 1);
      const pruned = prune(pruner);
      let settled = false;
      void pruned.then(
        () => (settled = true),
        () => (settled = true),
      );
      await until(async () => settled || (await waiting(url)) === 2);
      await gate.query('COMMIT');
      await committed;
      await pruned;
      return await hashKeys(url);
    } finally {
      await gate.end();
      await Promise.all([pruner.close(), writer.close()]);
    }
  };

  it('a pending route on a hash committed while another process prunes the last finished route on it keeps the hash’s keys', async () => {
    const url = await server.createDatabase();
    const s = openPostgresStore({ url });
    await s.commit([
      { kind: 'route', route: testRoute(hex32(1), { finishedAt: 1, lock }) },
      ...keyWrites,
      { kind: 'meta', key: 'gate', value: '0' },
    ]);
    await s.close();
    // Without the commit's hash lock the pruner's check missed the route not yet committed: every key went.
    expect(
      await race(url, async (p) =>
        expect(await p.pruneRoutes!({ before: 1_000, now: 1_000, limit: 10 })).toMatchObject({ pruned: 1 }),
      ),
    ).toEqual(keys);
    expect(await sql(url, 'SELECT payment_id, status FROM trickle_routes')).toEqual([
      { payment_id: hex32(3), status: 'pending' },
    ]);
  });

  it('the sweep of keys no route is left on passes by a hash a route is being committed on', async () => {
    const url = await server.createDatabase();
    const s = openPostgresStore({ url });
    // Keys an older version left without a route; the sweep began long ago.
    await s.commit([
      ...keyWrites,
      { kind: 'meta', key: 'hash-sweep', value: JSON.stringify({ since: 0, after: '' }) },
      { kind: 'meta', key: 'gate', value: '0' },
    ]);
    await s.close();
    expect(await race(url, (p) => p.pruneRoutes!({ before: 1_000, now: 1_000, limit: 10 }))).toEqual(keys);
    expect(await sql(url, `SELECT value FROM trickle_meta WHERE key = 'hash-sweep'`)).toEqual([{ value: 'done' }]);
  });
});

/**
 * Two cluster processes A and B on a fresh database: A served channel 1 up to version 5, the device moved to B, which
 * wrote version 9, and is coming back to A; `blocker` holds the channel table locked (a slow or loaded server), so a
 * read of B's record waits until it commits.
 */
async function handedBack(leaseMs: number) {
  const url = await server.createDatabase();
  const a = openPostgresStore({ url, cluster: { leaseMs } });
  const b = openPostgresStore({ url, cluster: { leaseMs } });
  for (const [s, version] of [
    [a, 5n],
    [b, 9n],
  ] as const) {
    await s.leases!.acquire(channel(1), device, 0);
    await s.commit([{ kind: 'channel', record: record(1, version) }]);
    await s.leases!.release([channel(1)]);
  }
  const blocker = new pg.Client({ connectionString: url });
  await blocker.connect();
  await blocker.query('BEGIN');
  await blocker.query('LOCK TABLE trickle_channels IN ACCESS EXCLUSIVE MODE');
  return { url, a, b, blocker };
}

// Taking a channel over: the windows in which a process could count a channel as held while its copy of the channel
// is not yet the one its previous owner left.
describe('PostgreSQL store: taking a channel over', () => {
  it('does not count a channel as held (so fences no write of it) until the record left by its previous owner is read', async () => {
    const { url, a, b, blocker } = await handedBack(1000);
    // A takes it back; the read of B's record is held up (a slow or loaded server) by the lock on the channel table.
    const taking = a.leases!.acquire(channel(1), device, 0);
    // The lease row is A's (epoch 3) before A has read the record.
    for (let i = 0; i < 100; i++) {
      const [row] = await sql<{ epoch: string }>(url, 'SELECT epoch::text FROM trickle_leases WHERE channel_id = $1', [
        channel(1),
      ]);
      if (row?.epoch === '3') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 50));
    // Meanwhile A holds nothing it may write from: its copy of the channel is still version 5 (a market tick or a
    // routed credit computed from it now would overwrite B's version 9 under A's new epoch).
    const seen = a.leases!.epochOf(channel(1));
    const stale = a.commit([{ kind: 'channel', record: record(1, 6n) }]).then(
      () => 'committed',
      (e: unknown) => (e as { code?: string; details?: { fenced?: unknown } }).details?.fenced ?? 'other',
    );
    await blocker.query('COMMIT');
    await blocker.end();
    expect(await taking).toEqual({ held: false, record: record(1, 9n) });
    expect({ seen, stale: await stale, stored: await storedVersion(url, 1) }).toEqual({
      seen: undefined,
      stale: [channel(1)],
      stored: 9n,
    });
    expect(a.leases!.epochOf(channel(1))).toBe(3n);
    await a.close();
    await b.close();
  });
  it('a take whose read of the record failed reads it again at the next take instead of keeping its older copy', async () => {
    const { a, b, blocker } = await handedBack(400);
    // A takes it (epoch 3) but its read of B's record outlasts the statement bound (the lease time): the take fails.
    await expect(a.leases!.acquire(channel(1), device, 0)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    await blocker.query('COMMIT');
    await blocker.end();
    expect(a.leases!.epochOf(channel(1))).toBeUndefined();
    // Taken again (epoch 4, right after A's own 3): A has never read version 9, so it must read it now.
    expect(await a.leases!.acquire(channel(1), device, 0)).toEqual({ held: false, record: record(1, 9n) });
    expect(a.leases!.epochOf(channel(1))).toBe(4n);
    await a.close();
    await b.close();
  });
});

describe('PostgreSQL store: a channel record never goes back', () => {
  it('an older record, another state at the stored version, or a lower hub-signed version fails the commit (outcome known, the channel named stale), nothing written; other metadata at the stored state passes', async () => {
    const url = await server.createDatabase();
    const s = openPostgresStore({ url });
    const at5 = record(1, 5n);
    await s.commit([{ kind: 'channel', record: at5 }]);
    const refused = async (writes: StoreWrite[]) => {
      const e = await s.commit(writes).catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'STORE_FAILURE' });
      expect(outcomeUnknown(e)).toBe(false);
      expect(staleChannels(e)).toEqual(new Set([channel(1)]));
    };
    const withMeta = (r: ChannelRecord): StoreWrite[] => [
      { kind: 'channel', record: r },
      { kind: 'meta', key: 'with', value: String(r.latest.state.version) },
    ];
    // Plain records are one statement; with other writes, a transaction: both are held to it.
    await refused([{ kind: 'channel', record: record(1, 4n) }]);
    await refused(withMeta(record(1, 4n)));
    await refused([{ kind: 'channel', record: testRecord(channel(1), 5n, { state: { paidByDevice: 9n } }) }]);
    await refused([{ kind: 'channel', record: { ...at5, hubSignedVersion: 4n } }]);
    // Nothing of a commit holding one such record is written.
    await refused([
      { kind: 'channel', record: record(2, 1n) },
      { kind: 'channel', record: record(1, 4n) },
    ]);
    expect(await s.loadChannels()).toEqual([at5]);
    expect(await s.getMeta('with')).toBeUndefined();
    // The stored state with other funding, status and a proposal signed above it; the same again; then a newer state.
    const moved: ChannelRecord = {
      ...at5,
      funding: { device: 500n, hub: 7n },
      status: 'closing',
      hubSignedVersion: 6n,
      outgoing: { state: testRecord(channel(1), 6n).latest.state, hubSig: '0x01' as never },
    };
    await s.commit([{ kind: 'channel', record: moved }]);
    await s.commit(withMeta(moved));
    expect(await s.loadChannel!(channel(1))).toEqual(moved);
    await s.commit(withMeta(record(1, 6n)));
    expect(await storedVersion(url, 1)).toBe(6n);
    await s.close();
  });

  it('a channel table whose copy is behind the stored record (a commit landed unseen): its write is refused, and it serves from the stored record', async () => {
    const url = await server.createDatabase();
    const s = openPostgresStore({ url });
    const r = hubChannelRecord({ hub: hubKey.address, device: deviceKey.address, adjudicator, salt: '22' });
    await s.commit([{ kind: 'channel', record: r }]);
    const frames: Message[] = [];
    const table = testTable(hubKey, s, {
      loadChannel: (id) => s.loadChannel!(id),
      send: (_d, msg) => (frames.push(msg), true),
    });
    table.restore(await s.loadChannels());
    const signed = (state: State) => deviceKey.signDigest(stateDigest(sep, state));
    // Version 1 (the device paid 5) lands behind the table's back, as a payment's statement sent before its connection
    // went would if the server ran it only after the table had read the channel and found it missing.
    const landed: State = { ...r.latest.state, version: 1n, paidByDevice: 5n };
    const stored: ChannelRecord = {
      ...r,
      latest: {
        state: landed,
        deviceSig: signatureToHex(signed(landed)),
        hubSig: signatureToHex(hubKey.signDigest(stateDigest(sep, landed))),
      },
      hubSignedVersion: 1n,
    };
    await sql(url, 'UPDATE trickle_channels SET record = $2 WHERE channel_id = $1', [
      r.channelId,
      channelRecordJson(stored),
    ]);
    // The device, told its payment failed, pays 3 at version 1 instead: acked, it would replace the stored version 1.
    const other: State = { ...landed, paidByDevice: 3n };
    table.enqueue(deviceKey.address, r.channelId, { t: 'update', id: 2, state: other, sig: signed(other) });
    expect(await answerTo(frames, 2)).toMatchObject({ t: 'reject', code: 'STORE_FAILURE' });
    // The probe's rewrite of version 0 is refused too: the channel is read again, not frozen for ever.
    await expect.poll(() => table.isFrozen(r.channelId), { timeout: 5_000 }).toBe(false);
    expect(table.get(r.channelId)).toEqual(stored);
    expect(await s.loadChannel!(r.channelId)).toEqual(stored);
    const next: State = { ...landed, version: 2n, paidByDevice: 8n };
    table.enqueue(deviceKey.address, r.channelId, { t: 'update', id: 3, state: next, sig: signed(next) });
    expect(await answerTo(frames, 3)).toMatchObject({ t: 'ack', version: 2n });
    expect(await storedVersion(url, r.channelId)).toBe(2n);
    await s.close();
  });

  it('…but not while a credit it proposed waits for the device: its caller is not answered (its payer would be refunded), the channel stays frozen', async () => {
    const url = await server.createDatabase();
    const s = openPostgresStore({ url });
    const r = hubChannelRecord({ hub: hubKey.address, device: deviceKey.address, adjudicator, salt: '23' });
    await s.commit([{ kind: 'channel', record: r }]);
    const frames: Message[] = [];
    const table = testTable(hubKey, s, {
      loadChannel: (id) => s.loadChannel!(id),
      send: (_d, msg) => (frames.push(msg), true),
    });
    table.restore(await s.loadChannels());
    // A routed payment's credit, proposed (signed and sent) at version 1: the device can still countersign it.
    let answered: unknown;
    void table.credit(r.channelId, 5n, { paymentId: hex32(0x23) }).then(
      (x) => (answered = x),
      (e: unknown) => (answered = e),
    );
    await expect.poll(() => frames.some((f) => f.t === 'update')).toBe(true);
    // A newer record lands unseen (version 1 both signed, another state), then an on-chain fact is to be written.
    const landed: State = { ...r.latest.state, version: 1n, paidByDevice: 5n };
    await sql(url, 'UPDATE trickle_channels SET record = $2 WHERE channel_id = $1', [
      r.channelId,
      channelRecordJson({ ...r, latest: { state: landed }, hubSignedVersion: 1n }),
    ]);
    const funded = table.onChain(r.channelId, { funding: { device: 2000n, hub: 1000n } });
    await expect.poll(() => table.isFrozen(r.channelId)).toBe(true);
    await new Promise((res) => setTimeout(res, 1500)); // several probes
    expect(answered).toBeUndefined();
    expect(table.isFrozen(r.channelId)).toBe(true);
    expect(await storedVersion(url, r.channelId)).toBe(1n);
    void funded.catch(() => undefined);
    await s.close();
  });
});

/**
 * The SQL a test runs to make the next update of a channel row visible only a second after its COMMIT began (a slow
 * fsync, a synchronous standby's wait: a deferred constraint trigger sleeping at COMMIT, once), and to log the
 * version of every update of a channel row that committed, in order.
 */
const SLOW_COMMIT = `
  CREATE TABLE test_slow (n int);
  INSERT INTO test_slow VALUES (1);
  CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    DELETE FROM test_slow;
    IF FOUND THEN PERFORM pg_sleep(1); END IF;
    RETURN NULL;
  END $$;
  CREATE CONSTRAINT TRIGGER test_slow_commit AFTER UPDATE ON trickle_channels DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION test_slow_commit();
  CREATE TABLE test_versions (id bigserial PRIMARY KEY, version numeric NOT NULL);
  CREATE FUNCTION test_log_version() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO test_versions (version) VALUES ((NEW.record::jsonb #>> '{latest,state,version}')::numeric);
    RETURN NULL;
  END $$;
  CREATE TRIGGER test_log_version AFTER UPDATE ON trickle_channels FOR EACH ROW EXECUTE FUNCTION test_log_version();`;

// A hub's commit whose connection went once it was sent (its outcome unknown) but that the server makes visible only
// later: the channel table's probe must not read the record from before it, answer the update STORE_FAILURE, and write
// that older record over it once it lands.
describe('PostgreSQL store: a commit whose outcome is unknown, visible only later', () => {
  it.each([
    ['a payment (one statement, cut once it went out)', 'trickle-commit-plain', false],
    ['a routed payment (a transaction, cut once its COMMIT went out)', 'COMMIT', true],
  ] as const)(
    '%s: the probe waits for it, the update is acked as it landed, and the stored version never goes back',
    async (_, cutAt, routed) => {
      const url = await server.createDatabase();
      const net = cuttingProxy(server.port);
      const port = await net.listening;
      const s = openPostgresStore({ url: url.replace(`:${server.port}/`, `:${port}/`) });
      const r = hubChannelRecord({ hub: hubKey.address, device: deviceKey.address, adjudicator, salt: '21' });
      await s.commit([{ kind: 'channel', record: r }]);
      await sql(url, SLOW_COMMIT);
      const frames: Message[] = [];
      const forwarded: RouteRecord[] = [];
      const table = testTable(hubKey, s, {
        loadChannel: (id) => s.loadChannel!(id),
        send: (_d, msg) => (frames.push(msg), true),
        onRouted: (route) => forwarded.push(route),
      });
      table.restore(await s.loadChannels());
      net.cutAfter(cutAt);
      const state: State = { ...r.latest.state, version: 1n, paidByDevice: 5n };
      const P = hex32(0x21);
      table.enqueue(deviceKey.address, r.channelId, {
        t: 'update',
        id: 1,
        state,
        sig: deviceKey.signDigest(stateDigest(sep, state)),
        route: routed ? { to: TEST_PARTIES.device, amount: 5n, paymentId: P } : undefined,
      });
      // Before: the probe read version 0 while version 1 was still committing, answered STORE_FAILURE, then wrote
      // version 0 over version 1 once it had landed (its route record, kept, saying the payer paid).
      expect(await answerTo(frames, 1)).toMatchObject({ t: 'ack', version: 1n });
      await expect.poll(() => table.isFrozen(r.channelId), { timeout: 5_000 }).toBe(false);
      expect(table.get(r.channelId)!.latest.state).toEqual(state);
      expect(await storedVersion(url, r.channelId)).toBe(1n);
      expect(
        (await sql<{ version: string }>(url, 'SELECT version FROM test_versions ORDER BY id')).map((x) => x.version),
      ).toEqual(['1']);
      if (routed) {
        expect(forwarded.map((x) => x.paymentId)).toEqual([P]);
        expect(await s.loadRoute!(P)).toMatchObject({ status: 'pending', amount: 5n });
      }
      await s.close();
      await net.close();
    },
    15_000,
  );
});

/**
 * A TCP proxy to the server on loopback that, once armed with `cutAfter(text)`, forwards the next chunk to the server
 * holding `text` and cuts the client 200 ms later, before any answer reaches it: a connection lost right after a
 * statement went out. The server's side of it is closed half a second after.
 */
function cuttingProxy(serverPort: number) {
  let armed: string | undefined;
  const proxy = createServer((client) => {
    const upstream = connect(serverPort, '127.0.0.1');
    upstream.on('data', (b) => client.write(b));
    client.on('data', (b: Buffer) => {
      if (armed !== undefined && b.includes(armed)) {
        armed = undefined;
        upstream.removeAllListeners('data'); // the server's answer never reaches the client
        upstream.write(b);
        setTimeout(() => client.destroy(), 200).unref();
        return;
      }
      upstream.write(b);
    });
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => setTimeout(() => upstream.destroy(), 500).unref());
  });
  return {
    listening: new Promise<number>((r) => proxy.listen(0, '127.0.0.1', () => r((proxy.address() as AddressInfo).port))),
    cutAfter(text: string) {
      armed = text;
    },
    close: () => new Promise((r) => proxy.close(r)),
  };
}

/**
 * A TCP proxy to the server on loopback that, once silenced, forwards nothing either way and keeps every socket
 * open: a database host partitioned away without a reset. `silenceAfter(text)` forwards the next chunk to the server
 * holding `text`, then silences; `restore()` forwards again (a connection whose server side closed meanwhile is closed
 * then).
 */
function silentProxy(serverPort: number) {
  let silent = false;
  let armed: string | undefined;
  const pending = new Set<Socket>();
  const sockets = new Set<Socket>();
  const proxy = createServer((client) => {
    const upstream = connect(serverPort, '127.0.0.1');
    for (const x of [client, upstream]) {
      sockets.add(x);
      x.on('close', () => sockets.delete(x));
      x.on('error', () => undefined);
    }
    upstream.on('data', (b) => {
      if (!silent) client.write(b);
    });
    client.on('data', (b: Buffer) => {
      if (silent) return;
      upstream.write(b);
      if (armed !== undefined && b.includes(armed)) {
        armed = undefined;
        silent = true;
      }
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => (silent ? pending.add(client) : client.destroy()));
  });
  return {
    listening: new Promise<number>((r) => proxy.listen(0, '127.0.0.1', () => r((proxy.address() as AddressInfo).port))),
    silenceAfter(text: string) {
      armed = text;
    },
    restore() {
      silent = false;
      for (const c of pending) c.destroy();
      pending.clear();
    },
    async close() {
      for (const x of sockets) x.destroy();
      await new Promise((r) => proxy.close(r));
    },
  };
}
