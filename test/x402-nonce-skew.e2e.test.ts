import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postgresNonceStore } from '@trickle/x402/server';
import type { Bytes32 } from '@trickle/protocol/types';
import { startPostgres, type TestPostgres } from './helpers/postgres.mjs';

/**
 * The processes of a paid service share one PostgreSQL nonce table but not a clock. A process whose clock runs ahead
 * purges expired rows by its own clock: it must not delete the row of a receipt the others still take for unexpired,
 * or that receipt, presented again to one of them, is served a second time. Real PostgreSQL; the stores are told the
 * time as the facilitator tells them.
 */
describe('a shared nonce table and a process whose clock runs ahead', () => {
  let server: TestPostgres;
  let pools: pg.Pool[] = [];
  /** Errors of the pools' idle clients: none while the test runs (the server's shutdown at the end ends them). */
  const poolErrors: Error[] = [];
  beforeAll(async () => {
    server = await startPostgres();
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await server?.close();
  });

  it("a purge by the fast process keeps a served receipt's row: the slow process still refuses it as replayed", async () => {
    const url = await server.createDatabase();
    pools = [0, 1].map(() => new pg.Pool({ connectionString: url, max: 2 }));
    for (const p of pools) p.on('error', (e) => poolErrors.push(e));
    const [right, ahead] = pools.map((p) => postgresNonceStore(p));
    const now = 1_800_000_000n;
    const nonce = `0x${'ab'.repeat(32)}` as Bytes32;
    const expiry = now + 30n;
    expect(await right!.claim(nonce, expiry, now, undefined)).toBe('claimed');
    // 40 s ahead: the receipt has expired by that clock. Its claims (1,024 of them, of other receipts) purge the table.
    for (let i = 0; i < 1024; i++)
      expect(
        await ahead!.claim(`0x${i.toString(16).padStart(64, '0')}` as Bytes32, now + 600n, now + 40n, undefined),
      ).toBe('claimed');
    // 10 s later by the right clock the receipt is still valid, and still served once.
    expect(await right!.served(nonce, now + 10n)).toBe(true);
    expect(await right!.claim(nonce, expiry, now + 10n, undefined)).toBe('replayed');
    expect(poolErrors).toEqual([]);
  });
});
