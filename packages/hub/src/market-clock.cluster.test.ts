// The market clocks of two cluster processes on one real PostgreSQL database: orders placed through either go into
// the shared state in batched placements (one transaction carries every order that arrived meanwhile), each checked
// on its own (a bad one is refused, the others of its batch placed), with arrival numbers unique across the cluster;
// the round-lease holder clears every order of the round, whichever process took it; the other process cannot.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashOrder } from '@trickle/market';
import { stateDigest, trickleDomain } from '@trickle/protocol/eip712';
import { isTrickleError } from '@trickle/protocol/errors';
import { stringifyJson } from '@trickle/protocol/json';
import type { Message } from '@trickle/protocol/codec';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId, State } from '@trickle/protocol/types';
import { escrowKey, type EscrowRecord } from './channels.js';
import { fencedChannels } from './leases.js';
import { createCommitter } from './committer.js';
import { MarketClock, type MarketClockDeps } from './market-clock.js';
import { openPostgresStore, type PostgresStore } from './store/postgres.js';
import { refusedChannels } from './store/types.js';
import { channelIdOf, TEST_PARTIES, testRecord } from './store/records.fixture.js';
import { adjudicator, device, hubKey, sep, testTable } from './table.fixture.js';
import { hubChannelRecord } from '../../../test/helpers/hub-channel.mjs';
import { sql, startPostgres, type TestPostgres } from '../../../test/helpers/postgres.mjs';

let server: TestPostgres;
beforeAll(async () => {
  server = await startPostgres();
});
afterAll(async () => {
  await server?.close();
});

const domain = trickleDomain(31337n, '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address);
const hub = nobleSigner(`0x${'11'.repeat(32)}`);
const devices = Array.from({ length: 6 }, (_, i) =>
  nobleSigner(`0x${(i + 2).toString(16).padStart(2, '0').repeat(32)}`),
);
const id = (n: number) => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;
const token = `0x${'7e'.repeat(20)}` as Address;
const channelOf = (d: number) => `0x${(1000 + d).toString(16).padStart(64, '0')}` as ChannelId;

/** A cluster process's market clock on `store`, taking bids only (their channel is their escrow's). */
function clusterClock(store: PostgresStore, log: (msg: string) => void, o: { maxRoundOrders?: number }): MarketClock {
  const deps: MarketClockDeps = {
    channels: undefined as never, // bids only: the channel table is not consulted
    committer: undefined as never,
    store,
    signer: hub,
    verifier: nobleVerifier,
    domain,
    send: () => true,
    broadcast: () => undefined,
    credit: () => Promise.reject(new Error('no channel is held in this test')),
    onRound: () => undefined,
    log,
    cluster: { rounds: store.market!, holds: () => false },
  };
  return new MarketClock(deps, { token, ...o });
}

describe('market clocks of two cluster processes on one database', () => {
  let url: string;
  let stores: PostgresStore[];
  let clocks: MarketClock[];
  const logs: string[] = [];
  beforeAll(async () => {
    url = await server.createDatabase();
    stores = [0, 1].map(() => openPostgresStore({ url, cluster: { leaseMs: 2000 } }));
    clocks = stores.map((store) => clusterClock(store, (msg) => logs.push(msg), {}));
    for (const c of clocks) await c.restore();
  });
  afterAll(async () => {
    for (const s of stores ?? []) await s.close();
  });

  /** A device's escrow as its channel's holder stores it with the escrow payment. */
  const escrow = (d: number, orderId: Bytes32, amount: bigint) => {
    const e: EscrowRecord = {
      orderId,
      device: devices[d]!.address,
      channelId: channelOf(d),
      amount,
    } as EscrowRecord;
    return stores[0]!.commit([{ kind: 'meta', key: escrowKey(orderId), value: stringifyJson(e) }]);
  };
  const bid = (d: number, orderId: Bytes32, round: bigint, quantity = 2n, price = 100n) => {
    const order = { id: orderId, market: 'kwh', side: 'bid' as const, quantity, price, round };
    const sig = devices[d]!.signDigest(hashOrder(domain, { ...order, participant: devices[d]!.address }));
    return { t: 'order', id: 1, order, sig } as Extract<Message, { t: 'order' }>;
  };

  it('places orders from both processes in batches, each checked on its own; the leader clears them all once', async () => {
    const round = await stores[0]!.market!.openRound();
    for (let n = 1; n <= 24; n++) await escrow(n % 6, id(n), 200n);
    // 24 bids at once through two processes, plus, in the same batches: a duplicate of one of them, a bid for a
    // round already past, and a bid without its escrow. Each is refused on its own; the others are placed.
    const placing = Array.from({ length: 24 }, (_, k) => {
      const n = k + 1;
      return clocks[n % 2]!.place(devices[n % 6]!.address, bid(n % 6, id(n), round));
    });
    const dup = clocks[1]!.place(devices[3]!.address, bid(3, id(3), round)); // in the same batch as the first id 3
    const past = clocks[0]!.place(devices[2]!.address, bid(2, id(2), round - 1n));
    const unpaid = clocks[1]!.place(devices[3]!.address, bid(3, id(99), round));
    const settled = await Promise.allSettled([...placing, dup, past, unpaid]);
    const accepted = settled
      .filter((s) => s.status === 'fulfilled')
      .map((s) => (s as PromiseFulfilledResult<Message>).value);
    const refused = settled.filter((s) => s.status === 'rejected').map((s) => (s as PromiseRejectedResult).reason);
    expect(accepted).toHaveLength(24);
    expect(refused).toHaveLength(3);
    for (const e of refused) expect(isTrickleError(e) && e.code).toBe('BAD_ORDER');
    const arrivals = accepted.map((m) => (m as Extract<Message, { t: 'accepted' }>).arrival);
    expect(new Set(arrivals).size).toBe(24);
    expect([...arrivals].sort((a, b) => Number(a - b))).toEqual(Array.from({ length: 24 }, (_, i) => BigInt(i + 1)));

    // The process without the round lease cannot clear; the one holding it clears every order of both.
    expect(await stores[0]!.market!.lead()).toBe(true);
    const refusedClear = await clocks[1]!.closeRound().catch((e: unknown) => e);
    expect(fencedChannels(refusedClear)?.has('market/round')).toBe(true);
    const record = await clocks[0]!.closeRound();
    expect(record.round).toBe(round);
    const stored = JSON.parse((await stores[1]!.getMeta(`market/clearing/${round.toString().padStart(20, '0')}`))!) as {
      orders: { id: string }[];
      refunds: { orderId: string }[];
    };
    expect(stored.orders.map((o) => o.id).sort()).toEqual(Array.from({ length: 24 }, (_, k) => id(k + 1)).sort());
    // Nobody sold: every bid's whole escrow comes back in the round's credits, and nothing else is refunded.
    expect(record.credits.reduce((a, c) => a + c.amount, 0n)).toBe(24n * 200n);
    expect(stored.refunds).toEqual([]);
    expect(await stores[0]!.loadMetaPrefix('market/order/')).toEqual([]);
    expect(await stores[0]!.loadMetaPrefix('market/escrow/')).toEqual([]);
    expect(await stores[1]!.market!.openRound()).toBe(round + 1n);
    // An order for the round just cleared is refused by either process.
    await escrow(4, id(50), 200n);
    await expect(clocks[1]!.place(devices[4]!.address, bid(4, id(50), round))).rejects.toMatchObject({
      code: 'BAD_ORDER',
      details: { round: round + 1n },
    });
    await stores[0]!.market!.resign();
  });

  it('one escrow cannot back the same bid id in the open round and the next, through either process (BAD_ORDER)', async () => {
    // Before, the duplicate check looked at the order's own round only: both were placed, nothing filled them, and
    // each round refunded the whole escrow (200 paid, 400 credited).
    const round = await stores[0]!.market!.openRound();
    await escrow(5, id(60), 200n);
    await expect(clocks[0]!.place(devices[5]!.address, bid(5, id(60), round))).resolves.toMatchObject({
      t: 'accepted',
    });
    await expect(clocks[1]!.place(devices[5]!.address, bid(5, id(60), round + 1n))).rejects.toMatchObject({
      code: 'BAD_ORDER',
    });
    // The other way round, and both in one batch: one is placed, the other refused.
    await escrow(5, id(61), 200n);
    await expect(clocks[1]!.place(devices[5]!.address, bid(5, id(61), round + 1n))).resolves.toMatchObject({
      t: 'accepted',
    });
    await expect(clocks[0]!.place(devices[5]!.address, bid(5, id(61), round))).rejects.toMatchObject({
      code: 'BAD_ORDER',
    });
    await escrow(5, id(62), 200n);
    const both = await Promise.allSettled([
      clocks[0]!.place(devices[5]!.address, bid(5, id(62), round)),
      clocks[0]!.place(devices[5]!.address, bid(5, id(62), round + 1n)),
    ]);
    expect(both.map((b) => b.status).sort()).toEqual(['fulfilled', 'rejected']);
    const orders = await stores[0]!.loadMetaPrefix('market/order/');
    expect(orders.filter(({ key }) => key.endsWith(id(60)))).toHaveLength(1);
    expect(orders.filter(({ key }) => key.endsWith(id(61)))).toHaveLength(1);
    expect(orders.filter(({ key }) => key.endsWith(id(62)))).toHaveLength(1);
  });
});

describe('maxRoundOrders holds across the cluster: the database counts every process’s orders and escrows', () => {
  let url: string;
  let stores: PostgresStore[];
  let clocks: MarketClock[];
  const B = 3;
  beforeAll(async () => {
    url = await server.createDatabase();
    stores = [0, 1].map(() => openPostgresStore({ url, cluster: { leaseMs: 2000 } }));
    clocks = stores.map((store) => clusterClock(store, () => undefined, { maxRoundOrders: B }));
    for (const c of clocks) await c.restore();
  });
  afterAll(async () => {
    for (const s of stores ?? []) await s.close();
  });

  const escrowOf = (d: number, orderId: Bytes32) =>
    ({ orderId, device: devices[d]!.address, channelId: channelOf(d), amount: 200n }) as EscrowRecord;
  /** An escrow payment through process `p`: checked there, then stored with the payment and handed to the clock. */
  const payEscrow = async (p: number, d: number, orderId: Bytes32) => {
    await clocks[p]!.checkEscrow(orderId, token);
    const e = escrowOf(d, orderId);
    await stores[p]!.commit([{ kind: 'meta', key: escrowKey(orderId), value: stringifyJson(e) }]);
    clocks[p]!.onEscrow(e);
  };
  const bid = (d: number, orderId: Bytes32, round: bigint) => {
    const order = { id: orderId, market: 'kwh', side: 'bid' as const, quantity: 2n, price: 100n, round };
    const sig = devices[d]!.signDigest(hashOrder(domain, { ...order, participant: devices[d]!.address }));
    return { t: 'order', id: 1, order, sig } as Extract<Message, { t: 'order' }>;
  };
  const escrowIds = async () =>
    (await stores[0]!.loadMetaPrefix('market/escrow/')).map((e) => e.key.slice('market/escrow/'.length)).sort();
  const orderIds = async () => (await stores[0]!.loadMetaPrefix('market/order/')).map((e) => e.key.slice(-66)).sort();
  const counted = async () =>
    Object.fromEntries(
      (await sql<{ round: string; entries: string }>(url, 'SELECT round, entries FROM trickle_market_entries')).map(
        (r) => [r.round, Number(r.entries)],
      ),
    );

  it('two processes with bound B take B entries of a round between them, orders and escrows; the rest LIMIT_EXCEEDED, nothing stored', async () => {
    const round = await stores[0]!.market!.openRound();
    // Escrows through both processes fill the open round (before, each process counted its own: 2 + 1 of 3).
    await payEscrow(0, 0, id(1));
    await payEscrow(1, 1, id(2));
    // Checked through process 1 while there is room (the check is a read); process 0 takes the last room first.
    await clocks[1]!.checkEscrow(id(5), token);
    await payEscrow(0, 2, id(3));
    const refused = await payEscrow(1, 3, id(4)).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'LIMIT_EXCEEDED', details: { round, max: B, refused: 'escrow' } });
    // The escrow checked before is refused at its commit, for its channel, with the check's code (a refusal, not a
    // store failure or a lost lease); sent again, at its check.
    const late = await stores[1]!
      .commit([{ kind: 'meta', key: escrowKey(id(5)), value: stringifyJson(escrowOf(3, id(5))) }])
      .catch((e: unknown) => e);
    expect(refusedChannels(late)).toEqual(new Set([channelOf(3)]));
    expect(fencedChannels(late)).toBeUndefined();
    expect(late).toMatchObject({
      code: 'LIMIT_EXCEEDED',
      details: { round, max: B, entries: B, refused: 'escrow' },
    });
    await expect(clocks[1]!.checkEscrow(id(5), token)).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(await escrowIds()).toEqual([id(1), id(2), id(3)]);
    expect(await counted()).toEqual({ [String(round)]: B });

    // A bid of the next round moves its escrow's entry there: room for one more escrow in the open round.
    await expect(clocks[1]!.place(devices[0]!.address, bid(0, id(1), round + 1n))).resolves.toMatchObject({
      t: 'accepted',
    });
    await payEscrow(0, 4, id(6));
    await expect(payEscrow(1, 5, id(7))).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    // Bids of the next round through either process: two more fit (3 of 3), the third is refused before it is stored.
    await expect(clocks[0]!.place(devices[1]!.address, bid(1, id(2), round + 1n))).resolves.toMatchObject({
      t: 'accepted',
    });
    await expect(clocks[1]!.place(devices[2]!.address, bid(2, id(3), round + 1n))).resolves.toMatchObject({
      t: 'accepted',
    });
    await expect(clocks[0]!.place(devices[4]!.address, bid(4, id(6), round + 1n))).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      details: { round: round + 1n, max: B, refused: 'order' },
    });
    expect(await orderIds()).toEqual([id(1), id(2), id(3)]);
    expect(await counted()).toEqual({ [String(round)]: 1, [String(round + 1n)]: B });

    // The open round refunds the escrow no bid uses; the next holds its three bids, and is full once it opens.
    expect(await stores[0]!.market!.lead()).toBe(true);
    await clocks[0]!.closeRound();
    const stored = JSON.parse((await stores[0]!.getMeta(`market/clearing/${round.toString().padStart(20, '0')}`))!) as {
      orders: unknown[];
      refunds: { orderId: string }[];
    };
    expect(stored.orders).toEqual([]);
    expect(stored.refunds.map((x) => x.orderId)).toEqual([id(6)]);
    expect(await counted()).toEqual({ [String(round + 1n)]: B });
    await expect(payEscrow(1, 5, id(8))).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      details: { round: round + 1n },
    });
    await clocks[0]!.closeRound();
    const next = JSON.parse(
      (await stores[0]!.getMeta(`market/clearing/${(round + 1n).toString().padStart(20, '0')}`))!,
    ) as { orders: { id: string }[] };
    expect(next.orders.map((o) => o.id).sort()).toEqual([id(1), id(2), id(3)]);
    await stores[0]!.market!.resign();
  });

  it('escrow commits of two processes racing for the last room: exactly B land, the rest are refused with nothing stored', async () => {
    const round = await stores[0]!.market!.openRound();
    expect(await counted()).toEqual({});
    // Past the check (each one alone had room): 2 × 8 commits at once, the processes' commits interleaved.
    const tries = Array.from({ length: 16 }, (_, k) => {
      const orderId = id(100 + k);
      return stores[k % 2]!.commit([
        { kind: 'meta', key: escrowKey(orderId), value: stringifyJson(escrowOf(k % 6, orderId)) },
      ]);
    });
    const settled = await Promise.allSettled(tries);
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(B);
    for (const s of settled)
      if (s.status === 'rejected') {
        expect(s.reason).toMatchObject({ code: 'LIMIT_EXCEEDED' });
        expect(refusedChannels(s.reason)?.size).toBe(1);
      }
    expect(await escrowIds()).toHaveLength(B);
    expect(await counted()).toEqual({ [String(round)]: B });
  });

  it('through the group committer, a full round refuses the writer whose escrow does not fit, and the others of its commit land', async () => {
    const round = await stores[0]!.market!.openRound();
    expect(await counted()).toEqual({ [String(round)]: B });
    // Clear the round (its escrows refunded), so the next has all its room; two escrows less than the bound elsewhere.
    expect(await stores[0]!.market!.lead()).toBe(true);
    await clocks[0]!.closeRound();
    await stores[0]!.market!.resign();
    for (let k = 0; k < B - 1; k++)
      await stores[1]!.commit([
        { kind: 'meta', key: escrowKey(id(300 + k)), value: stringifyJson(escrowOf(k, id(300 + k))) },
      ]);
    // Process 0 holds two channels; each pays an escrow in the same turn: one group commit with both.
    const leases = stores[0]!.leases!;
    const committer = createCommitter(stores[0]!, undefined, leases);
    const ids = [channelIdOf(0x9001), channelIdOf(0x9002)];
    for (const c of ids) await leases.acquire(c, TEST_PARTIES.device, 0);
    const pay = (c: ChannelId, orderId: Bytes32) =>
      committer.write([
        {
          kind: 'meta',
          key: escrowKey(orderId),
          value: stringifyJson({ ...escrowOf(0, orderId), channelId: c }),
        },
        { kind: 'channel', record: testRecord(c, 2n) },
      ]);
    const [first, second] = await Promise.allSettled([pay(ids[0]!, id(310)), pay(ids[1]!, id(311))]);
    expect(first.status).toBe('fulfilled');
    expect(second.status === 'rejected' && refusedChannels(second.reason)).toEqual(new Set([ids[1]]));
    expect(second.status === 'rejected' && second.reason).toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect((await stores[0]!.loadChannel!(ids[0]!))?.latest.state.version).toBe(2n);
    expect(await stores[0]!.loadChannel!(ids[1]!)).toBeUndefined();
    expect(await stores[0]!.getMeta(escrowKey(id(311)))).toBeUndefined();
    expect(await counted()).toEqual({ [String(round + 1n)]: B });
    await leases.release(ids);
  });

  it('the count outlives its processes, and a round counted by no one yet is counted from what is stored', async () => {
    const round = await stores[0]!.market!.openRound();
    // Both processes go; a new one counts on from the database.
    for (const s of stores) await s.close();
    stores = [openPostgresStore({ url, cluster: { leaseMs: 2000 } })];
    clocks = [clusterClock(stores[0]!, () => undefined, { maxRoundOrders: B })];
    await clocks[0]!.restore();
    await expect(payEscrow(0, 0, id(200))).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED', details: { round } });
    // As a hub from before the count left it (schema 4): no count of the open round. The first commit that needs
    // one makes it from the stored escrows (B), and refuses.
    await sql(url, 'DELETE FROM trickle_market_entries');
    const refused = await stores[0]!
      .commit([{ kind: 'meta', key: escrowKey(id(201)), value: stringifyJson(escrowOf(1, id(201))) }])
      .catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'LIMIT_EXCEEDED', details: { entries: B } });
    expect(refusedChannels(refused)).toEqual(new Set([channelOf(1)]));
    expect(await escrowIds()).toHaveLength(B);
    // Cleared (every escrow refunded), the next round takes B again.
    expect(await stores[0]!.market!.lead()).toBe(true);
    await clocks[0]!.closeRound();
    for (let k = 0; k < B; k++) await payEscrow(0, k, id(210 + k));
    await expect(payEscrow(0, 5, id(220))).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(await counted()).toEqual({ [String(round + 1n)]: B });
    await stores[0]!.market!.resign();
  });
});

describe('an escrow payment that loses the round’s last room to another process is refused, not a store failure', () => {
  let url: string;
  let stores: PostgresStore[];
  let clocks: MarketClock[];
  const N = 2;
  beforeAll(async () => {
    url = await server.createDatabase();
    stores = [0, 1].map(() => openPostgresStore({ url, cluster: { leaseMs: 2000 } }));
    clocks = stores.map((store) => clusterClock(store, () => undefined, { maxRoundOrders: N }));
    for (const c of clocks) await c.restore();
  });
  afterAll(async () => {
    for (const s of stores ?? []) await s.close();
  });

  it('both checks pass, one commit takes the room: the other device gets LIMIT_EXCEEDED, its channel is not frozen and its next payment lands', async () => {
    const round = await stores[0]!.market!.openRound();
    // One entry of N taken already: room for one more escrow in the open round.
    await stores[1]!.commit([
      { kind: 'meta', key: escrowKey(id(400)), value: stringifyJson({ ...escrowOfRecord(id(400)) }) },
    ]);
    // Each process holds one channel of the device, in a channel table committing through its group committer.
    const records = ['0a', '0b'].map((salt) =>
      hubChannelRecord({ hub: hubKey.address, device: device.address, adjudicator, salt }),
    );
    const frames: Message[][] = [[], []];
    const outcomes: Record<string, number>[] = [{}, {}];
    // Both escrows pass their check (a read: one room left) before either commits, as when two processes take the
    // round's last room at once.
    let checked = 0;
    let bothChecked!: () => void;
    const gate = new Promise<void>((r) => (bothChecked = r));
    const tables = [0, 1].map((p) => {
      const leases = stores[p]!.leases!;
      return testTable(hubKey, stores[p]!, {
        committer: createCommitter(stores[p]!, undefined, leases),
        send: (_d, msg) => (frames[p]!.push(msg), true),
        onOutcome: (o, n = 1) => void (outcomes[p]![o] = (outcomes[p]![o] ?? 0) + n),
        checkEscrow: async (_device, orderId) => {
          await clocks[p]!.checkEscrow(orderId, token);
          if (++checked === 2) bothChecked();
          await gate;
        },
      });
    });
    for (const p of [0, 1]) {
      const r = records[p]!;
      await stores[p]!.leases!.acquire(r.channelId, device.address, 0);
      await stores[p]!.commit([{ kind: 'channel', record: r }]);
      tables[p]!.restore([r]);
    }
    const pay = (p: number, frame: number, version: bigint, paid: bigint, escrowFor?: Bytes32) => {
      const r = records[p]!;
      const state: State = { ...r.latest.state, version, paidByDevice: paid };
      tables[p]!.enqueue(device.address, r.channelId, {
        t: 'update',
        id: frame,
        state,
        sig: device.signDigest(stateDigest(sep, state)),
        escrowFor,
      });
    };
    const answer = (p: number, frame: number) =>
      expect
        .poll(() => frames[p]!.find((f) => (f.t === 'ack' || f.t === 'reject') && f.id === frame), { timeout: 10_000 })
        .toBeDefined()
        .then(() => frames[p]!.find((f) => (f.t === 'ack' || f.t === 'reject') && f.id === frame)!);

    pay(0, 1, 1n, 200n, id(401));
    pay(1, 1, 1n, 200n, id(402));
    const answers = [await answer(0, 1), await answer(1, 1)];
    const winner = answers.findIndex((a) => a.t === 'ack');
    expect(winner).toBeGreaterThanOrEqual(0);
    const loser = 1 - winner;
    // Before: STORE_FAILURE, and the channel frozen (~100 ms, until a probe write) as after any failed commit.
    expect(answers[loser]).toMatchObject({ t: 'reject', code: 'LIMIT_EXCEEDED' });
    expect(tables[loser]!.isFrozen(records[loser]!.channelId)).toBe(false);
    expect(frames[loser]!.filter((f) => f.t === 'error')).toEqual([]);
    expect(tables[loser]!.get(records[loser]!.channelId)!.latest.state.version).toBe(0n);
    expect(outcomes[loser]).toEqual({ LIMIT_EXCEEDED: 1 });
    // Nothing of the refused step stored: the winner's escrow is the round's last entry.
    expect((await stores[0]!.loadMetaPrefix('market/escrow/')).map((e) => e.key).sort()).toEqual(
      [id(400), id(401 + winner)].map(escrowKey).sort(),
    );
    expect((await stores[0]!.loadChannel!(records[loser]!.channelId))?.latest.state.version).toBe(0n);

    // The loser's next payment (no escrow) lands at once on the same channel.
    pay(loser, 2, 1n, 5n);
    expect(await answer(loser, 2)).toMatchObject({ t: 'ack' });
    expect(tables[loser]!.get(records[loser]!.channelId)!.latest.state).toMatchObject({
      version: 1n,
      paidByDevice: 5n,
    });
    expect((await stores[0]!.loadChannel!(records[loser]!.channelId))?.latest.state.paidByDevice).toBe(5n);
    // No store failure counted anywhere, and the round's count is the bound.
    expect(outcomes[loser]!['STORE_FAILURE']).toBeUndefined();
    expect(outcomes[winner]!['STORE_FAILURE']).toBeUndefined();
    expect(
      Object.fromEntries(
        (await sql<{ round: string; entries: string }>(url, 'SELECT round, entries FROM trickle_market_entries')).map(
          (r) => [r.round, Number(r.entries)],
        ),
      ),
    ).toEqual({ [String(round)]: N });
    for (const p of [0, 1]) await stores[p]!.leases!.release([records[p]!.channelId]);
  });

  /** An escrow stored by another process (its channel is none of this test's). */
  const escrowOfRecord = (orderId: Bytes32): EscrowRecord =>
    ({ orderId, device: devices[0]!.address, channelId: channelOf(0), amount: 200n }) as EscrowRecord;
});
