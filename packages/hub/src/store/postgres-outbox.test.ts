// The cluster's outbox of routed payments against a real PostgreSQL server: rows written with the payer's debit,
// taken and answered under the payee channel's lease, and the store's refusal to let a payment be credited twice.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import { openPostgresStore, type PostgresStore } from './postgres.js';
import { claimedKey, creditedKey } from '../channels.js';
import { fencedChannels } from '../leases.js';
import type { ChannelRecord, OutboxEntry, RouteRecord } from './types.js';
import { channelIdOf, hex32, testRecord, testState } from './records.fixture.js';
import { startPostgres, type TestPostgres } from '../../../../test/helpers/postgres.mjs';

let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.close();
});

const payer = '0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A' as Address;
const payee = '0x1563915e194D8CfBA1943570603F7606A3115508' as Address;
const token = '0x5CbDd86a2FA8Dc4bDdd8a8f69dBa48572EeC07FB' as Address;
const X = channelIdOf(1); // the payer's channel
const Y = channelIdOf(2); // the payee's channel
const P = hex32(0xabc); // the payment

/** A channel record at `version`, with an outstanding hub credit proposal of `paymentId` when given. */
const record = (id: ChannelId, device: Address, version: bigint, paymentId?: Bytes32): ChannelRecord =>
  testRecord(id, version, {
    params: { device, token },
    funding: { device: 1000n, hub: 1000n },
    ...(paymentId
      ? {
          hubSignedVersion: version + 1n,
          outgoing: { state: testState(id, version + 1n), hubSig: '0x01' as never, paymentId },
        }
      : {}),
  });
const entry: OutboxEntry = { paymentId: P, fromChannel: X, payer, payee, toChannel: Y, token, amount: 7n };
const route: RouteRecord = { paymentId: P, from: payer, to: payee, fromChannel: X, amount: 7n, status: 'pending' };
const credited = (channelId: ChannelId) => ({ kind: 'meta' as const, key: creditedKey(P, channelId), value: '1' });

async function row(url: string): Promise<{ status: string; taker: string | null; attempts: number; settled: boolean }> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query('SELECT status, taker, attempts, settled FROM trickle_outbox WHERE payment_id = $1', [P]))
      .rows[0];
  } finally {
    await c.end();
  }
}

async function storedVersion(url: string, id: ChannelId): Promise<bigint> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const r = await c.query<{ record: string }>('SELECT record FROM trickle_channels WHERE channel_id = $1', [id]);
    return BigInt((JSON.parse(r.rows[0]!.record) as { latest: { state: { version: string } } }).latest.state.version);
  } finally {
    await c.end();
  }
}

/** Three cluster processes on one fresh database: `a` holds the payer's channel, `b` the payee's. */
async function cluster(leaseMs = 6000) {
  const url = await server.createDatabase();
  const [a, b, c] = [1, 2, 3].map(() => openPostgresStore({ url, cluster: { leaseMs } })) as [
    PostgresStore,
    PostgresStore,
    PostgresStore,
  ];
  await a.leases!.acquire(X, payer, 0);
  await b.leases!.acquire(Y, payee, 0);
  await a.commit([{ kind: 'channel', record: record(X, payer, 1n) }]);
  await b.commit([{ kind: 'channel', record: record(Y, payee, 1n) }]);
  return { url, a, b, c, close: () => Promise.all([a.close(), b.close(), c.close()]) };
}
const refusedFor = (e: unknown) => fencedChannels(e);

describe('PostgreSQL store: the outbox of routed payments', () => {
  it('a payment is in the outbox once, wakes the payee’s process, and is credited exactly once however often it is taken', async () => {
    const { url, a, b, c, close } = await cluster();
    let woken = 0;
    b.outbox!.onWake(() => woken++);
    await new Promise((r) => setTimeout(r, 300)); // the listener connects (and looks once)
    const before = woken;
    // The payer's debit, its route record and the outbox row: one transaction.
    await a.commit([
      { kind: 'channel', record: record(X, payer, 2n) },
      { kind: 'route', route },
      { kind: 'outbox', entry },
    ]);
    for (let i = 0; i < 50 && woken === before; i++) await new Promise((r) => setTimeout(r, 20));
    expect(woken).toBeGreaterThan(before); // NOTIFY
    expect(await a.outbox!.used(P)).toBe(true);
    // The same payment id again fails the payer's whole commit: nothing of it lands.
    await expect(
      a.commit([
        { kind: 'channel', record: record(X, payer, 3n) },
        { kind: 'outbox', entry },
      ]),
    ).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    expect(await storedVersion(url, X)).toBe(2n);

    // The payee's process finds it, and the payer's finds nothing to settle yet.
    expect((await b.outbox!.scan([Y])).deliver.map((r) => r.paymentId)).toEqual([P]);
    expect(await a.outbox!.scan([X])).toEqual({ deliver: [], answered: [], conditional: [] });
    // A process without the payee channel's lease cannot take it or refuse it.
    expect(await c.outbox!.take(P, 1n)).toBeUndefined();
    expect(await c.outbox!.refuse(P, 1n, 'NO')).toBe(false);
    // A retried take (NOTIFY and the poll both fired) takes it again: same holder, one more attempt, nothing else.
    const [t1, t2] = await Promise.all([b.outbox!.take(P, 1n), b.outbox!.take(P, 1n)]);
    expect(t1?.amount).toBe(7n);
    expect(t2?.status).toBe('taken');
    expect(await row(url)).toMatchObject({ status: 'taken', taker: b.leases!.owner, attempts: 2 });

    // The credit proposal is stored; the countersigned credit answers the row in the same transaction.
    await b.commit([{ kind: 'channel', record: record(Y, payee, 1n, P) }]);
    // Not when the commit that lands the credit proposes the same payment again (a second credit of it queued
    // behind the first): the row is still open when the commit starts, and delivered by the commit itself.
    const twice = await b
      .commit([{ kind: 'channel', record: record(Y, payee, 2n, P) }, credited(Y)])
      .catch((e: unknown) => e);
    expect(refusedFor(twice)).toEqual(new Set([Y]));
    expect(await row(url)).toMatchObject({ status: 'taken' });
    expect(await storedVersion(url, Y)).toBe(1n);
    await b.commit([{ kind: 'channel', record: record(Y, payee, 2n) }, credited(Y)]);
    expect(await row(url)).toMatchObject({ status: 'delivered', settled: false });
    // A second credit of the same payment (a retry that did not know) is refused by the store, fenced.
    const again = await b.commit([{ kind: 'channel', record: record(Y, payee, 2n, P) }]).catch((e: unknown) => e);
    expect(refusedFor(again)).toEqual(new Set([Y]));
    expect(await b.outbox!.take(P, 1n)).toBeUndefined();
    expect(await b.outbox!.refuse(P, 1n, 'LATE')).toBe(false);
    // Nor can the payer be refunded for a delivered payment.
    const refund = await a.commit([{ kind: 'channel', record: record(X, payer, 2n, P) }]).catch((e: unknown) => e);
    expect(refusedFor(refund)).toEqual(new Set([X]));

    // The payer's process sees the answer, records it on the route; then it is settled and not seen again.
    const { answered } = await a.outbox!.scan([X]);
    expect(answered.map((x) => [x.row.status, x.route.paymentId])).toEqual([['delivered', P]]);
    await a.commit([{ kind: 'route', route: { ...route, status: 'delivered', toChannel: Y } }]);
    expect(await row(url)).toMatchObject({ status: 'delivered', settled: true });
    expect(await a.outbox!.scan([X])).toEqual({ deliver: [], answered: [], conditional: [] });
    await close();
  });

  it('two processes take the same row: only the holder of the payee channel’s lease gets it, and only it can write the credit', async () => {
    const { a, b, c, close } = await cluster();
    await a.commit([
      { kind: 'channel', record: record(X, payer, 2n) },
      { kind: 'route', route },
      { kind: 'outbox', entry },
    ]);
    const results = await Promise.all([b.outbox!.take(P, 1n), c.outbox!.take(P, 1n), c.outbox!.take(P, 2n)]);
    expect(results.map((r) => r?.taker)).toEqual([b.leases!.owner, undefined, undefined]);
    const stray = await c.commit([{ kind: 'channel', record: record(Y, payee, 1n, P) }]).catch((e: unknown) => e);
    expect(refusedFor(stray)).toEqual(new Set([Y]));
    await close();
  });

  it('a crash between take and done: the next holder of the payee channel takes the row and finishes the stored proposal, once', async () => {
    const leaseMs = 600;
    const { url, a, b, c, close } = await cluster(leaseMs);
    await a.commit([
      { kind: 'channel', record: record(X, payer, 2n) },
      { kind: 'route', route },
      { kind: 'outbox', entry },
    ]);
    expect(await b.outbox!.take(P, 1n)).toBeDefined();
    await b.commit([{ kind: 'channel', record: record(Y, payee, 1n, P) }]); // signed and stored, then b dies
    (b.leases as unknown as { stop(): void }).stop(); // no more renewals: b's lease lapses, as a dead process's does
    const taken = await c.leases!.acquire(Y, payee, 4 * leaseMs);
    expect(taken).toMatchObject({ held: false, record: { outgoing: { paymentId: P } } });
    // b, still holding a stale belief, can neither write the channel nor answer the row.
    expect(refusedFor(await b.commit([{ kind: 'channel', record: record(Y, payee, 5n) }]).catch((e) => e))).toEqual(
      new Set([Y]),
    );
    expect(await b.outbox!.refuse(P, 1n, 'STALE')).toBe(false);
    // c finds the row (taken by the dead process) and takes it over under its own epoch.
    expect((await c.outbox!.scan([Y])).deliver.map((r) => [r.status, r.taker])).toEqual([['taken', b.leases!.owner]]);
    expect(await c.outbox!.take(P, 2n)).toMatchObject({ taker: c.leases!.owner, attempts: 2 });
    // The restored proposal is re-sent and countersigned: delivered once.
    await c.commit([{ kind: 'channel', record: record(Y, payee, 1n, P) }]);
    await c.commit([{ kind: 'channel', record: record(Y, payee, 2n) }, credited(Y)]);
    expect(await row(url)).toMatchObject({ status: 'delivered' });
    expect(await c.outbox!.scan([Y])).toEqual({ deliver: [], answered: [], conditional: [] });
    expect((await a.outbox!.scan([X])).answered.map((x) => x.row.status)).toEqual(['delivered']);
    await close();
  });

  it('a refused payment is refunded to the payer once, and only after it was refused', async () => {
    const { url, a, b, close } = await cluster();
    await a.commit([
      { kind: 'channel', record: record(X, payer, 2n) },
      { kind: 'route', route },
      { kind: 'outbox', entry },
    ]);
    // A refund before the payee's side refused is refused by the store.
    const early = await a.commit([{ kind: 'channel', record: record(X, payer, 2n, P) }]).catch((e: unknown) => e);
    expect(refusedFor(early)).toEqual(new Set([X]));
    expect(await b.outbox!.take(P, 1n)).toBeDefined();
    expect(await b.outbox!.refuse(P, 2n, 'CHANNEL_NOT_OPEN')).toBe(false); // not at an epoch it holds
    expect(await b.outbox!.refuse(P, 1n, 'CHANNEL_NOT_OPEN')).toBe(true);
    expect(await b.outbox!.refuse(P, 1n, 'CHANNEL_NOT_OPEN')).toBe(false); // once
    // Refused: the payee can no longer be credited with it.
    const late = await b.commit([{ kind: 'channel', record: record(Y, payee, 1n, P) }]).catch((e: unknown) => e);
    expect(refusedFor(late)).toEqual(new Set([Y]));
    expect((await a.outbox!.scan([X])).answered.map((x) => x.row.status)).toEqual(['refused']);
    // The refund: proposed, countersigned (its marker answers the row), then the route is settled.
    await a.commit([{ kind: 'channel', record: record(X, payer, 2n, P) }]);
    await a.commit([{ kind: 'channel', record: record(X, payer, 3n) }, credited(X)]);
    expect(await row(url)).toMatchObject({ status: 'refunded', settled: false });
    const twice = await a.commit([{ kind: 'channel', record: record(X, payer, 3n, P) }]).catch((e: unknown) => e);
    expect(refusedFor(twice)).toEqual(new Set([X]));
    await a.commit([{ kind: 'route', route: { ...route, status: 'refunded' } }]);
    expect(await row(url)).toMatchObject({ status: 'refunded', settled: true });
    await close();
  });

  it('a conditional route: locked by the payee commit that holds the hub’s lock, claimed by the one that stores the preimage', async () => {
    const { url, a, b, close } = await cluster();
    const H = hex32(0x10c4);
    const preimage = hex32(0x5eed);
    const lock = { hash: H, expiry: 1_900_000_000n };
    const upstream = { amount: 7n, hash: H, expiry: 1_900_000_003n, payer: 'device' as const };
    const downstream = { amount: 7n, hash: H, expiry: lock.expiry, payer: 'hub' as const };
    await a.commit([
      { kind: 'channel', record: { ...record(X, payer, 2n), locks: [upstream] } },
      { kind: 'route', route: { ...route, lock: upstream } },
      { kind: 'outbox', entry: { ...entry, lock } },
    ]);
    expect(await a.outbox!.lockInFlight(H, payee)).toBe(true);
    expect(await a.outbox!.lockInFlight(P, payee)).toBe(false);
    // Per payee: a route on the hash toward another payee is not blocked by this one.
    expect(await a.outbox!.lockInFlight(H, payer)).toBe(false);
    const open = (await b.outbox!.scan([Y])).deliver;
    expect(open.map((r) => [r.paymentId, r.lock, r.preimage])).toEqual([[P, lock, undefined]]);
    // The payer's side sees it waiting, without a preimage; a payer's lock is not the hub's: nothing is marked.
    expect((await a.outbox!.scan([X])).conditional.map((x) => [x.row.status, x.route.lock?.hash])).toEqual([
      ['pending', H],
    ]);
    // The payee countersigned the hub's lock: that commit marks the row locked, and it is no longer to deliver.
    expect(await b.outbox!.take(P, 1n)).toBeDefined();
    await b.commit([{ kind: 'channel', record: record(Y, payee, 1n, P) }]); // the lock's proposal, outstanding
    await b.commit([{ kind: 'channel', record: { ...record(Y, payee, 2n), locks: [downstream] } }]);
    expect(await row(url)).toMatchObject({ status: 'locked', settled: false });
    expect((await b.outbox!.scan([Y])).deliver).toEqual([]);
    // A proposal delivering the payment on the payee channel again is refused by the store.
    const again = await b.commit([{ kind: 'channel', record: record(Y, payee, 2n, P) }]).catch((e: unknown) => e);
    expect(refusedFor(again)).toEqual(new Set([Y]));
    // Another payee's claim on the same hash (its preimage and its claim stored) is not this route's: not marked.
    await b.commit([
      { kind: 'meta', key: `preimage/${H}`, value: preimage },
      { kind: 'meta', key: claimedKey(H, payer), value: preimage },
    ]);
    expect(await row(url)).toMatchObject({ status: 'locked', settled: false });
    // The payee showed the preimage: stored with its channel state, the same commit marks the row claimed.
    await b.commit([
      { kind: 'channel', record: { ...record(Y, payee, 2n), locks: [downstream] } },
      { kind: 'meta', key: `preimage/${H}`, value: preimage },
      { kind: 'meta', key: claimedKey(H, payee), value: preimage },
    ]);
    expect(await row(url)).toMatchObject({ status: 'claimed', settled: false });
    const waiting = (await a.outbox!.scan([X])).conditional;
    expect(waiting.map((x) => [x.row.status, x.row.preimage])).toEqual([['claimed', preimage]]);
    expect((await a.outbox!.scan([X])).answered).toEqual([]); // never refunded by a credit
    // The payer's side claimed upstream and recorded the outcome: settled; the hash is free again.
    await a.commit([
      { kind: 'channel', record: record(X, payer, 3n) },
      { kind: 'route', route: { ...route, lock: upstream, status: 'delivered' } },
    ]);
    expect(await row(url)).toMatchObject({ status: 'claimed', settled: true });
    expect(await a.outbox!.lockInFlight(H, payee)).toBe(false);
    expect((await a.outbox!.scan([X])).conditional).toEqual([]);
    await close();
  });

  it('a claimed route whose payer channel no process holds: every process finds it unguarded, one at a time holds the turn to reveal its preimage, none once it is settled', async () => {
    const { url, a, b, c, close } = await cluster();
    const H = hex32(0x7ea1);
    const preimage = hex32(0x5eed2);
    const lock = { hash: H, expiry: 1_900_000_000n };
    const upstream = { amount: 7n, hash: H, expiry: 1_900_000_003n, payer: 'device' as const };
    const downstream = { amount: 7n, hash: H, expiry: lock.expiry, payer: 'hub' as const };
    await a.commit([
      { kind: 'channel', record: { ...record(X, payer, 2n), locks: [upstream] } },
      { kind: 'route', route: { ...route, lock: upstream } },
      { kind: 'outbox', entry: { ...entry, lock } },
    ]);
    expect(await b.outbox!.take(P, 1n)).toBeDefined();
    await b.commit([{ kind: 'channel', record: { ...record(Y, payee, 2n), locks: [downstream] } }]);
    await b.commit([
      { kind: 'channel', record: { ...record(Y, payee, 2n), locks: [downstream] } },
      { kind: 'meta', key: `preimage/${H}`, value: preimage },
      { kind: 'meta', key: claimedKey(H, payee), value: preimage },
    ]);
    expect(await row(url)).toMatchObject({ status: 'claimed', settled: false });
    // The payer channel's holder claims upstream and guards it: nobody else has to.
    expect(await c.outbox!.unguarded()).toEqual([]);
    // The payer went away: its channel's lease is released, and every process finds the route unguarded.
    await a.leases!.release([X]);
    for (const s of [a, b, c])
      expect((await s.outbox!.unguarded()).map((x) => [x.row.paymentId, x.row.preimage, x.route.lock])).toEqual([
        [P, preimage, upstream],
      ]);
    // One turn to reveal at a time: renewed by its holder, refused to the others.
    expect(await b.outbox!.revealTurn(P, H, 300)).toBe('mine');
    expect(await c.outbox!.revealTurn(P, H, 300)).toBe('elsewhere');
    expect(await b.outbox!.revealTurn(P, H, 300)).toBe('mine');
    expect(await a.outbox!.revealTurn(P, H, 300)).toBe('elsewhere');
    // Its holder died: the turn lapses, and the next process to ask takes it.
    await new Promise((r) => setTimeout(r, 400));
    expect(await c.outbox!.revealTurn(P, H, 300)).toBe('mine');
    expect(await b.outbox!.revealTurn(P, H, 300)).toBe('elsewhere');
    // Mined: given up (its row gone); only the holder's own ask deletes it.
    await b.outbox!.revealDone(H);
    const turns = async () => {
      const q = new pg.Client({ connectionString: url });
      await q.connect();
      try {
        return (await q.query(`SELECT owner FROM trickle_leases WHERE channel_id LIKE 'reveal/%'`)).rows;
      } finally {
        await q.end();
      }
    };
    expect(await turns()).toEqual([{ owner: c.leases!.owner }]);
    await c.outbox!.revealDone(H);
    expect(await turns()).toEqual([]);
    // The payer came back and took the hub's claim (its route's outcome written): nothing to guard or reveal.
    await a.leases!.acquire(X, payer, 0);
    await a.commit([
      { kind: 'channel', record: record(X, payer, 3n) },
      { kind: 'route', route: { ...route, lock: upstream, status: 'delivered' } },
    ]);
    await a.leases!.release([X]);
    expect(await c.outbox!.unguarded()).toEqual([]);
    expect(await c.outbox!.revealTurn(P, H, 300)).toBe('settled');
    expect(await turns()).toEqual([]);
    await close();
  });

  it('only a cluster store takes outbox rows', async () => {
    const url = await server.createDatabase();
    const single = openPostgresStore({ url });
    expect(single.outbox).toBeUndefined();
    await expect(single.commit([{ kind: 'outbox', entry }])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await single.close();
  });
});
