// A single hub's market clock with a small round bound (maxRoundOrders), on a real LMDB store: an order or escrow that
// would take the open round's clearing record past the bound is refused with LIMIT_EXCEEDED before anything is stored
// (the escrow check runs before the engine takes the payment), the count survives a restart (it is derived from the
// stored orders and escrows), and the full round still clears and publishes its record to every participant.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { hashOrder, joinClearing, type PublishedClearing } from '@trickle/market';
import { trickleDomain } from '@trickle/protocol/eip712';
import { TrickleError } from '@trickle/protocol/errors';
import { parseJson, stringifyJson } from '@trickle/protocol/json';
import type { Message, MessageOf } from '@trickle/protocol/codec';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import type { Address, Bytes32, ChannelId } from '@trickle/protocol/types';
import { escrowKey, type ChannelTable, type EscrowRecord } from './channels.js';
import { createCommitter } from './committer.js';
import { MarketClock, type MarketClockDeps } from './market-clock.js';
import { openLmdbStore } from './store/lmdb.js';
import type { HubStore } from './store/types.js';

const dir = mkdtempSync(join(tmpdir(), 'trickle-market-clock-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const token = `0x${'7e'.repeat(20)}` as Address;
const domain = trickleDomain(31337n, '0x5FbDB2315678afecb367f032d93F642f64180aa3' as Address);
const hub = nobleSigner(`0x${'11'.repeat(32)}`);
const devices = Array.from({ length: 8 }, (_, i) =>
  nobleSigner(`0x${(i + 2).toString(16).padStart(2, '0').repeat(32)}`),
);
const id = (n: number) => `0x${n.toString(16).padStart(64, '0')}` as Bytes32;
const channelOf = (d: number) => `0x${(1000 + d).toString(16).padStart(64, '0')}` as ChannelId;

/** One open channel in the market's token per device, at round 0 (no round credit landed yet). */
const channels = {
  get: (channelId: ChannelId) => {
    const d = Number(BigInt(channelId) - 1000n);
    if (!(d >= 0 && d < devices.length)) return undefined;
    return { status: 'open', params: { token }, latest: { state: { round: 0n, isFinal: false } } };
  },
  channelsOf: (device: Address) => {
    const d = devices.findIndex((s) => s.address === device);
    return d < 0 ? [] : [channelOf(d)];
  },
} as unknown as ChannelTable;

/** The market clock's dependencies over `store` for these channels, with `over` replacing any of them. */
function marketDeps(
  store: HubStore,
  committer: ReturnType<typeof createCommitter>,
  over: Partial<MarketClockDeps>,
): MarketClockDeps {
  return {
    channels,
    committer,
    store,
    signer: hub,
    verifier: nobleVerifier,
    domain,
    send: () => true,
    broadcast: () => undefined,
    credit: () => new Promise(() => {}),
    onRound: () => undefined,
    log: () => undefined,
    ...over,
  };
}

describe('a round never takes more orders and escrows than maxRoundOrders', () => {
  const sent: { device: Address; msg: Message }[] = [];
  const credits: { channelId: ChannelId; amount: bigint; round: bigint | undefined }[] = [];
  let store: HubStore;
  let clock: MarketClock;

  const open = async (o: { path?: string; maxParticipantOrders?: number } = {}) => {
    store = openLmdbStore({ path: o.path ?? dir });
    const committer = createCommitter(store);
    const deps = marketDeps(store, committer, {
      send: (device, msg) => (sent.push({ device, msg }), true),
      credit: (channelId, amount, meta) => {
        credits.push({ channelId, amount, round: meta.round });
        return new Promise(() => {}); // never acked here: the record and the credit request are what is checked
      },
    });
    clock = new MarketClock(deps, { token, maxRoundOrders: 5, maxParticipantOrders: o.maxParticipantOrders });
    await clock.restore();
    return committer;
  };

  /** A device's escrow payment as the channel table takes it: checked first, then made durable with the update. */
  const payEscrow = async (committer: ReturnType<typeof createCommitter>, d: number, orderId: Bytes32) => {
    await clock.checkEscrow(orderId, token);
    const e: EscrowRecord = { orderId, device: devices[d]!.address, channelId: channelOf(d), amount: 200n };
    await committer.write([{ kind: 'meta', key: escrowKey(orderId), value: stringifyJson(e) }]);
    clock.onEscrow(e);
  };
  const order = (d: number, orderId: Bytes32, side: 'bid' | 'ask', round: bigint) => {
    const terms = { id: orderId, market: 'kwh', side, quantity: 2n, price: 100n, round };
    const sig = devices[d]!.signDigest(hashOrder(domain, { ...terms, participant: devices[d]!.address }));
    return { t: 'order', id: 1, order: terms, sig } as Extract<Message, { t: 'order' }>;
  };

  it('refuses the 6th (escrow or order) with LIMIT_EXCEEDED, stores nothing for it, keeps counting after a restart, clears and publishes the 5', async () => {
    let committer = await open();
    const round = clock.round;
    // Three bids (escrow, then order) and one ask: 4 entries. A bid's escrow and its order share one entry.
    for (const d of [0, 1, 2]) {
      await payEscrow(committer, d, id(d + 1));
      await expect(clock.place(devices[d]!.address, order(d, id(d + 1), 'bid', round))).resolves.toMatchObject({
        t: 'accepted',
      });
    }
    await expect(clock.place(devices[3]!.address, order(3, id(4), 'ask', round))).resolves.toMatchObject({
      t: 'accepted',
    });
    // An escrow paid without its order yet: the 5th entry (the round refunds it if no order comes).
    await payEscrow(committer, 4, id(5));

    // The 6th: an escrow payment is refused before the engine takes it; an ask is refused before it is stored.
    await expect(Promise.resolve().then(() => clock.checkEscrow(id(6), token))).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      details: { round, max: 5, refused: 'escrow' },
    });
    await expect(clock.place(devices[5]!.address, order(5, id(7), 'ask', round))).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      details: { round, max: 5, refused: 'order' },
    });
    // The bid of the escrow already counted still goes in: its id is one of the 5.
    await expect(clock.place(devices[4]!.address, order(4, id(5), 'bid', round))).resolves.toMatchObject({
      t: 'accepted',
    });
    expect((await store.loadMetaPrefix('market/order/')).length).toBe(5);
    expect((await store.loadMetaPrefix('market/escrow/')).length).toBe(4);
    // The next round has its own room: an ask for it is taken.
    await expect(clock.place(devices[6]!.address, order(6, id(8), 'ask', round + 1n))).resolves.toMatchObject({
      t: 'accepted',
    });

    // A restart mid-round: the count comes back from the stored orders and escrows.
    await store.close();
    committer = await open();
    expect(clock.round).toBe(round);
    await expect(Promise.resolve().then(() => clock.checkEscrow(id(6), token))).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
    });
    await expect(clock.place(devices[5]!.address, order(5, id(7), 'ask', round))).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
    });

    // The round clears with its 5 orders, and its record goes to every participant before its credit.
    const record = await clock.closeRound();
    expect(record.round).toBe(round);
    const frames = sent.filter((s) => s.msg.t === 'clearing');
    const participants = new Set(frames.map((f) => f.device));
    expect(participants).toEqual(new Set([0, 1, 2, 3, 4].map((d) => devices[d]!.address)));
    const { record: bytes } = joinClearing(undefined, frames[0]!.msg as MessageOf<'clearing'>);
    const published = parseJson<PublishedClearing>(new TextDecoder().decode(bytes));
    expect(published.orders.map((o) => o.id).sort()).toEqual([1, 2, 3, 4, 5].map(id));
    expect(published.refunds).toEqual([]);
    expect(new Set(credits.map((c) => c.channelId))).toEqual(new Set([0, 1, 2, 3, 4].map(channelOf)));
    expect(credits.every((c) => c.round === round)).toBe(true);

    // The round now open holds the ask placed ahead for it: an escrow is taken there again.
    await expect(Promise.resolve().then(() => clock.checkEscrow(id(6), token))).resolves.toBeUndefined();
    await store.close();
  });

  it('refuses a participant its 3rd order of a round (maxParticipantOrders 2) while others still place theirs', async () => {
    await open({ path: join(dir, 'per-participant'), maxParticipantOrders: 2 });
    const round = clock.round;
    for (const n of [11, 12])
      await expect(clock.place(devices[0]!.address, order(0, id(n), 'ask', round))).resolves.toMatchObject({
        t: 'accepted',
      });
    await expect(clock.place(devices[0]!.address, order(0, id(13), 'ask', round))).rejects.toMatchObject({
      code: 'LIMIT_EXCEEDED',
      details: { round, max: 2, refused: 'participant' },
    });
    expect((await store.loadMetaPrefix('market/order/')).length).toBe(2);
    // Another device, and the same device in the next round, have their own room.
    await expect(clock.place(devices[1]!.address, order(1, id(14), 'ask', round))).resolves.toMatchObject({
      t: 'accepted',
    });
    await expect(clock.place(devices[0]!.address, order(0, id(15), 'ask', round + 1n))).resolves.toMatchObject({
      t: 'accepted',
    });
    await store.close();
  });
});

// Spec §7: "A credit the hub owes is never dropped: a refused or undelivered one is retried with backoff, and re-sent
// after a hub restart until the channel's round shows it landed." A single hub's market clock whose device refuses
// its round credit (BAD_CLEARING, say: it lacked the record) keeps retrying it, and keeps the channel owing it, however
// many times it was refused — not only until a restart.
describe('§7 a round credit the device refuses is never dropped', () => {
  afterEach(() => vi.useRealTimers());

  it('is retried past 30 refusals, and the channel still owes it', async () => {
    const store = openLmdbStore({ path: mkdtempSync(join(dir, 'refused-')) });
    const committer = createCommitter(store);
    let attempts = 0;
    const refuse = () => {
      attempts++;
      return Promise.reject(new TrickleError('BAD_CLEARING', 'refused by the device'));
    };
    const clock = new MarketClock(marketDeps(store, committer, { credit: refuse }), { token });
    await clock.restore();
    const round = clock.round;
    // A bid's escrow is paid, and its order never placed: the round refunds the whole escrow as its credit.
    const orderId = id(900);
    await clock.checkEscrow(orderId, token, devices[0]!.address);
    const e: EscrowRecord = { orderId, device: devices[0]!.address, channelId: channelOf(0), amount: 300n };
    await committer.write([{ kind: 'meta', key: escrowKey(orderId), value: stringifyJson(e) }]);
    clock.onEscrow(e);

    await clock.closeRound();
    expect(clock.round).toBe(round + 1n);
    // The first refusal schedules its retry on the real clock; from the second on, the fake one runs them.
    await vi.waitFor(() => expect(attempts).toBeGreaterThanOrEqual(1));
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    await new Promise((r) => setImmediate(r));
    await vi.waitFor(() => expect(attempts).toBeGreaterThanOrEqual(2), { timeout: 2_000, interval: 20 });
    // Far more than 30 attempts' worth of backoff (each at most 10 s).
    for (let k = 0; k < 120; k++) await vi.advanceTimersByTimeAsync(10_000);
    expect(attempts).toBeGreaterThan(31);
    expect(clock.owes(channelOf(0))).toBe(true);
    vi.useRealTimers();
    await clock.stop();
    await store.close();
  });
});
