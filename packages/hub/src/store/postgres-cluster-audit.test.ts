// Audit of the cluster's leases and fencing against a real PostgreSQL server: the windows in which a process counts
// a channel as held while its copy of the channel is not yet the one its previous owner left.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { openPostgresStore } from './postgres.js';
import type { ChannelRecord } from './types.js';
import { channelIdOf, TEST_PARTIES, testRecord } from './records.fixture.js';
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
const storedVersion = async (url: string, n: number) => {
  const rows = await sql<{ record: string }>(url, 'SELECT record FROM trickle_channels WHERE channel_id = $1', [
    channel(n),
  ]);
  return rows[0]
    ? BigInt((JSON.parse(rows[0].record) as { latest: { state: { version: string } } }).latest.state.version)
    : undefined;
};

describe('PostgreSQL store audit: taking a channel over', () => {
  it('does not count a channel as held (so fences no write of it) until the record left by its previous owner is read', async () => {
    const url = await server.createDatabase();
    const a = openPostgresStore({ url, cluster: { leaseMs: 1000 } });
    const b = openPostgresStore({ url, cluster: { leaseMs: 1000 } });
    // A served the channel up to version 5, then the device moved to B, which wrote version 9, then back to A.
    await a.leases!.acquire(channel(1), device, 0);
    await a.commit([{ kind: 'channel', record: record(1, 5n) }]);
    await a.leases!.release([channel(1)]);
    await b.leases!.acquire(channel(1), device, 0);
    await b.commit([{ kind: 'channel', record: record(1, 9n) }]);
    await b.leases!.release([channel(1)]);

    // A takes it back; the read of B's record is held up (a slow or loaded server) by a lock on the channel table.
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE trickle_channels IN ACCESS EXCLUSIVE MODE');
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
    const url = await server.createDatabase();
    const a = openPostgresStore({ url, cluster: { leaseMs: 400 } });
    const b = openPostgresStore({ url, cluster: { leaseMs: 400 } });
    await a.leases!.acquire(channel(1), device, 0);
    await a.commit([{ kind: 'channel', record: record(1, 5n) }]);
    await a.leases!.release([channel(1)]);
    await b.leases!.acquire(channel(1), device, 0);
    await b.commit([{ kind: 'channel', record: record(1, 9n) }]);
    await b.leases!.release([channel(1)]);

    // A takes it (epoch 3) but its read of B's record outlasts the statement bound (the lease time): the take fails.
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE trickle_channels IN ACCESS EXCLUSIVE MODE');
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
