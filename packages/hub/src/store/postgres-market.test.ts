// The cluster market's round lease and transactions on a real PostgreSQL server: one leader at a time, a clearing
// fenced by the round lease's epoch, a takeover after a lapse, and market transactions of different processes
// serialised on the open round (two clearings of one round: one wins, the other sees the next round).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgresStore, type PostgresStore } from './postgres.js';
import { fencedChannels } from '../leases.js';
import type { MarketRounds } from '../market-rounds.js';
import { sql, startPostgres, type TestPostgres } from '../../../../test/helpers/postgres.mjs';

let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.close();
});

// Long enough that connecting and migrating on a loaded machine fit in it (it bounds connection waits and statements).
const LEASE_MS = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Clear the open round the way the market clock does: write the record, open the next round. */
const clear = (m: MarketRounds, tag: string) =>
  m.transact({
    fenced: true,
    prefixes: () => [],
    run: (round) => ({
      writes: [
        { kind: 'meta', key: `test/clearing/${round}`, value: tag },
        { kind: 'meta', key: 'market/round', value: String(round + 1n) },
      ],
      result: round,
    }),
  });

describe('PostgreSQL cluster market', () => {
  let url: string;
  let a: PostgresStore;
  let b: PostgresStore;
  beforeAll(async () => {
    url = await server.createDatabase();
    a = openPostgresStore({ url, cluster: { leaseMs: LEASE_MS } });
    b = openPostgresStore({ url, cluster: { leaseMs: LEASE_MS } });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('one leader at a time; a clearing is fenced by the round lease; a takeover after the lapse raises the epoch', async () => {
    const ma = a.market!;
    const mb = b.market!;
    expect(await ma.openRound()).toBe(1n);
    expect(await ma.lead()).toBe(true);
    expect(await mb.lead()).toBe(false); // held by a
    expect(await ma.lead()).toBe(true); // a renewal keeps it
    ma.advertise('ws://127.0.0.1:4242/');
    expect(await ma.lead()).toBe(true);
    const [row] = await sql<{ epoch: string; owner_url: string }>(
      url,
      `SELECT epoch, owner_url FROM trickle_leases WHERE channel_id = 'market/round'`,
    );
    expect(row).toEqual({ epoch: '1', owner_url: 'ws://127.0.0.1:4242/' });

    expect(await clear(ma, 'a')).toBe(1n);
    // b does not hold the round lease: its clearing is refused before it touches the database
    const refused = await clear(mb, 'b').catch((e: unknown) => e);
    expect(fencedChannels(refused)?.has('market/round')).toBe(true);
    expect(await mb.openRound()).toBe(2n);

    // Another process took the lease over (forged here: the row changes hands while a still counts it as held, as
    // when a was paused between its local check and its transaction): a's clearing is refused inside the transaction.
    await sql(
      url,
      `UPDATE trickle_leases SET owner = 'elsewhere', epoch = epoch + 1 WHERE channel_id = 'market/round'`,
    );
    expect(ma.leading()).toBe(true);
    const late = await clear(ma, 'late').catch((e: unknown) => e);
    expect(fencedChannels(late)?.has('market/round')).toBe(true);
    expect(ma.leading()).toBe(false);
    expect(await ma.openRound()).toBe(2n);

    // That holder stops renewing; once its lease lapsed b takes it over at the next epoch.
    await sleep(LEASE_MS + 100);
    expect(await mb.lead()).toBe(true);
    expect(
      (await sql<{ epoch: string }>(url, `SELECT epoch FROM trickle_leases WHERE channel_id = 'market/round'`))[0]!
        .epoch,
    ).toBe('3');
    expect(await ma.lead()).toBe(false);
    expect(await clear(mb, 'b')).toBe(2n);
    expect(await ma.openRound()).toBe(3n);
    const cleared = await sql<{ key: string; value: string }>(
      url,
      `SELECT key, value FROM trickle_meta WHERE key LIKE 'test/clearing/%' ORDER BY key`,
    );
    expect(cleared).toEqual([
      { key: 'test/clearing/1', value: 'a' },
      { key: 'test/clearing/2', value: 'b' },
    ]);

    // resigning lets the other process lead at once, without waiting for the lapse
    await mb.resign();
    expect(mb.leading()).toBe(false);
    expect(await ma.lead()).toBe(true);
    await ma.resign();
  });

  it('market transactions of two processes run one after another on the open round: a round is cleared once', async () => {
    // Each process's placement reads the arrival counter and the open round, and raises the counter: serialised, no
    // two orders share an arrival number and each is for a round still open.
    const place = (m: MarketRounds, id: number) =>
      m.transact({
        fenced: false,
        prefixes: () => ['test/arrival'],
        run: (round, entries) => {
          const arrival = BigInt(entries.get('test/arrival') ?? '0') + 1n;
          return {
            writes: [
              { kind: 'meta', key: 'test/arrival', value: String(arrival) },
              { kind: 'meta', key: `test/order/${round}/${id}`, value: String(arrival) },
            ],
            result: arrival,
          };
        },
      });
    const arrivals = await Promise.all(
      Array.from({ length: 40 }, (_, i) => place(i % 2 === 0 ? a.market! : b.market!, i)),
    );
    expect(new Set(arrivals).size).toBe(40);
    expect([...arrivals].sort((x, y) => Number(x - y))).toEqual(Array.from({ length: 40 }, (_, i) => BigInt(i + 1)));

    // A run that throws writes nothing.
    const before = await a.market!.openRound();
    const err = await a
      .market!.transact({
        fenced: false,
        prefixes: () => [],
        run: () => {
          throw new Error('refused');
        },
      })
      .catch((e: unknown) => e);
    expect(String(err)).toContain('refused');

    // Two clearings of the same open round, one from each process, each reading the round in its transaction:
    // the first to lock the round clears it, the second sees the next round and clears that one instead.
    expect(await a.market!.lead()).toBe(true);
    const leaderB = await b.market!.lead();
    expect(leaderB).toBe(false);
    const both = await Promise.all([clear(a.market!, 'x'), clear(a.market!, 'y')]);
    expect(both.sort()).toEqual([before, before + 1n]);
    expect(await b.market!.openRound()).toBe(before + 2n);
  });
});

describe('PostgreSQL cluster market: reads by prefix', () => {
  it('a clearing and a device’s open orders read the market’s entries only, not the whole meta table', async () => {
    const url = await server.createDatabase();
    const s = openPostgresStore({ url, cluster: { leaseMs: LEASE_MS } });
    const m = s.market!;
    const device = '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A';
    await s.commit([
      { kind: 'meta', key: 'market/order/00000000000000000001/0xaa', value: `{"participant":"${device}"}` },
      { kind: 'meta', key: 'market/escrow/0xbb', value: `{"device":"${device}"}` },
    ]);
    // What a hub that routes payments accumulates beside the market: a credit marker per routed payment (never deleted).
    const OTHER = 200_000;
    await sql(
      url,
      `INSERT INTO trickle_meta SELECT 'credited/0x' || md5(i::text) || '/0x' || md5((-i)::text), '1'
       FROM generate_series(1, $1) i`,
      [OTHER],
    );
    await sql(url, 'ANALYZE trickle_meta');
    const stats = async () =>
      (
        await sql<{ seq: string; idx: string }>(
          url,
          `SELECT coalesce(seq_tup_read, 0)::text AS seq, coalesce(idx_scan, 0)::text AS idx
           FROM pg_stat_user_tables WHERE relname = 'trickle_meta'`,
        )
      ).map((r) => ({ seq: BigInt(r.seq), idx: BigInt(r.idx) }))[0]!;
    const before = await stats();
    expect(await m.lead()).toBe(true);
    const read = await m.transact({
      fenced: true,
      prefixes: (r) => [`market/order/${r.toString().padStart(20, '0')}/`, 'market/escrow/'],
      run: (_r, entries) => ({ writes: [], result: [...entries.keys()] }),
    });
    expect(read).toEqual(['market/escrow/0xbb', 'market/order/00000000000000000001/0xaa']);
    expect((await m.find(['market/escrow/', 'market/order/'], device)).map((e) => e.key)).toEqual([
      'market/escrow/0xbb',
      'market/order/00000000000000000001/0xaa',
    ]);
    // The store's connections report their table statistics when they end.
    await s.close();
    let after = await stats();
    for (let i = 0; i < 100 && after.idx === before.idx; i++) {
      await sleep(100);
      after = await stats();
    }
    expect(after.idx).toBeGreaterThan(before.idx);
    expect(after.seq - before.seq).toBeLessThan(BigInt(OTHER));
  });
});
