import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { clearRound, hashOrder, type Order, type PublishedClearing } from '@trickle/market';
import type { Message } from '@trickle/protocol/codec';
import { TrickleError } from '@trickle/protocol/errors';
import { toHex } from '@trickle/protocol/hex';
import type { Signer } from '@trickle/protocol/signer';
import type { Bytes32 } from '@trickle/protocol/types';
import type { ClientChannel } from './channel.js';
import type { MarketSession } from './market.js';
import { fileMarketOrders, MARKET_ORDERS_FILE } from './market-orders-file.js';
import { memoryMarketOrders, type DeviceMarketOrder, type MarketOrderStore } from './market-orders.js';
import { ROUND, checkCredit, device, deviceMarket, domain, other, sendClearing } from './market.fixture.js';
import { fileChannelStore } from './store.js';

/**
 * The device's market orders and escrows, kept in its store until a round settles them (spec §7): after a restart
 * the device still refuses a round that leaves out an order the hub accepted, and it reports (`onError`) an escrow
 * the hub never pays back. The hub is played by this test (real keys, real clearing); the channel only records the
 * escrow payments it is asked for.
 */
const signedBy = (o: Order, key: Signer) => {
  const { arrival: _a, ...terms } = o;
  return { ...o, sig: toHex(key.signDigest(hashOrder(domain, terms))) };
};
const rival = (round: bigint, arrival: bigint): Order => ({
  id: `0x${'0b'.repeat(32)}` as Bytes32,
  participant: other.address,
  market: 'kwh',
  side: 'bid',
  quantity: 1n,
  price: 90n,
  round,
  arrival,
});

/** The hub publishes the clearing of `orders` in `round` with `refunds`, and returns the device's credit. */
function publish(
  market: MarketSession,
  round: bigint,
  orders: Order[],
  refunds: PublishedClearing['refunds'] = [],
): bigint {
  const signed = orders.map((o) => signedBy(o, o.participant === device.address ? device : other));
  const published: PublishedClearing = { record: clearRound(round, orders), orders: signed, feeBps: 0n, refunds };
  sendClearing(market, published, round);
  return [...published.record.credits, ...refunds]
    .filter((c) => c.participant === device.address)
    .reduce((s, c) => s + c.amount, 0n);
}

/** A device session on `store` whose hub answers each order with `answer` (a reply frame, or an error it throws). */
function deviceSession(store: MarketOrderStore | undefined, answer: (m: Order) => Message | Error) {
  const sent: Order[] = [];
  const errors: TrickleError[] = [];
  const market = deviceMarket((order) => {
    sent.push(order);
    return answer(order);
  }, store);
  market.onError((e) => errors.push(e));
  market.onFrame({ t: 'round', id: 0, round: ROUND, feeBps: 0n });
  const paid: bigint[] = [];
  const channel = { pay: async (amount: bigint) => void paid.push(amount) } as unknown as ClientChannel;
  return { market, sent, errors, paid, channel };
}

const accept = (): Message => ({ t: 'accepted', id: 0, arrival: 7n });
const refuse = () => new TrickleError('BAD_ORDER', 'refused by the hub');
const noAnswer = () => new TrickleError('TIMEOUT', 'no reply to order within 10000 ms');
/** Let the writes the session started without waiting for them run. */
const writes = () => new Promise((r) => setTimeout(r, 0));
const ask = { market: 'kwh', side: 'ask' as const, quantity: 2n, price: 100n };
const bid = { market: 'kwh', side: 'bid' as const, quantity: 2n, price: 100n };

describe('MarketSession: the orders it keeps across a restart', () => {
  it('refuses, after a restart, a round credit whose record leaves out an order the hub accepted', async () => {
    const store = memoryMarketOrders();
    const before = deviceSession(store, accept);
    const placed = await before.market.submitOrder(before.channel, ask);
    await writes();
    // The device restarts: a new session on the same store. Before, the accepted ask was known in memory only, and the
    // new session accepted a record without it (credit 0: the hub kept the sale for itself).
    const after = deviceSession(store, accept);
    await after.market.restore();
    expect(after.market.pending()).toMatchObject([{ id: placed.id, arrival: 7n, settleBy: ROUND }]);
    const credit = publish(after.market, ROUND, [rival(ROUND, 3n)]);
    expect(() => checkCredit(after.market, credit)).toThrow(expect.objectContaining({ code: 'BAD_CLEARING' }));
    // The honest record (the ask in it, unchanged) passes, and settles it: forgotten in the store too.
    const honest = publish(after.market, ROUND, [rival(ROUND, 3n), { ...placed, ...ask, participant: device.address }]);
    expect(() => checkCredit(after.market, honest)).not.toThrow();
    await writes();
    expect(await store.loadOrders()).toEqual([]);
    expect(after.errors).toEqual([]);
  });

  it('reports, after a restart, an escrow the hub never paid back once it credits a later round', async () => {
    const store = memoryMarketOrders();
    const before = deviceSession(store, noAnswer);
    await expect(before.market.submitOrder(before.channel, bid)).rejects.toMatchObject({ code: 'TIMEOUT' });
    expect(before.paid).toEqual([200n]);
    const [escrow] = await store.loadOrders();
    // No answer: the order may be placed or not; either way the escrow comes back by the round after it was paid.
    expect(escrow).toMatchObject({ escrow: 200n, settleBy: ROUND + 1n });
    expect([escrow!.refused, escrow!.arrival]).toEqual([undefined, undefined]);
    const after = deviceSession(store, accept);
    await after.market.restore();
    // Round ROUND + 1 credits the device for nothing of its own (the escrow may still be refunded up to it) …
    const nothing = publish(after.market, ROUND + 1n, [rival(ROUND + 1n, 3n)]);
    expect(() => checkCredit(after.market, nothing, ROUND + 1n)).not.toThrow();
    expect([after.errors, after.market.pending().length]).toEqual([[], 1]);
    after.market.onFrame({ t: 'round', id: 0, round: ROUND + 2n, feeBps: 0n });
    const placed = await after.market.submitOrder(after.channel, ask);
    // … and round ROUND + 2 pays its new ask without the refund: the record that could have refunded it is past.
    const credit = publish(after.market, ROUND + 2n, [
      rival(ROUND + 2n, 3n),
      { ...placed, ...ask, participant: device.address },
    ]);
    expect(() => checkCredit(after.market, credit, ROUND + 2n)).not.toThrow();
    expect(after.errors).toEqual([
      expect.objectContaining({
        code: 'BAD_CLEARING',
        details: expect.objectContaining({ reason: 'left-out', orderId: escrow!.id, escrow: 200n }),
      }),
    ]);
    await writes();
    expect(await store.loadOrders()).toEqual([]);
  });

  it('settles a refused bid’s escrow by its refund, and reports one paid back short', async () => {
    for (const [refunded, short] of [
      [200n, false],
      [150n, true],
    ] as const) {
      const { market, channel, errors } = deviceSession(memoryMarketOrders(), refuse);
      await expect(market.submitOrder(channel, bid)).rejects.toMatchObject({ code: 'BAD_ORDER' });
      const [escrow] = market.pending();
      expect(escrow).toMatchObject({ escrow: 200n, refused: true });
      const credit = publish(
        market,
        ROUND,
        [rival(ROUND, 3n)],
        [{ participant: device.address, orderId: escrow!.id, amount: refunded }],
      );
      expect(() => checkCredit(market, credit)).not.toThrow(); // the credit is what the record says
      expect(market.pending()).toEqual([]);
      expect(errors).toEqual(
        short
          ? [
              expect.objectContaining({
                code: 'BAD_CLEARING',
                details: expect.objectContaining({ reason: 'refund-short', returned: 150n }),
              }),
            ]
          : [],
      );
    }
  });

  it('sends no order whose paid escrow it cannot keep (STORE_FAILURE)', async () => {
    const failing: MarketOrderStore = {
      loadOrders: async () => [],
      saveOrders: async () => {
        throw new Error('EIO');
      },
    };
    const { market, channel, sent, paid } = deviceSession(failing, accept);
    await expect(market.submitOrder(channel, bid)).rejects.toMatchObject({ code: 'STORE_FAILURE' });
    expect([paid, sent]).toEqual([[200n], []]);
    expect(market.pending()).toHaveLength(1); // still checked by this process
  });

  it('ignores a clearing frame whose refunds were altered after the hub signed them', async () => {
    const { market, channel } = deviceSession(memoryMarketOrders(), refuse);
    await expect(market.submitOrder(channel, bid)).rejects.toMatchObject({ code: 'BAD_ORDER' });
    const orders = [signedBy(rival(ROUND, 3n), other)];
    const signed: PublishedClearing = {
      record: clearRound(ROUND, [rival(ROUND, 3n)]),
      orders,
      feeBps: 0n,
      refunds: [],
    };
    // A relay adds the refund the hub left out: the device must not take the frame for the hub's word.
    const id = market.pending()[0]!.id;
    const altered = { ...signed, refunds: [{ participant: device.address, orderId: id, amount: 200n }] };
    sendClearing(market, altered, ROUND, signed);
    expect(market.clearing(ROUND)).toBeUndefined();
  });
});

describe('fileMarketOrders: the file store’s market orders', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  const order: DeviceMarketOrder = {
    id: `0x${'ab'.repeat(32)}` as Bytes32,
    round: 12n,
    market: 'kwh',
    side: 'bid',
    quantity: 3n,
    price: 1n << 100n,
    feeBps: 30n,
    escrow: 3n << 100n,
    settleBy: 13n,
    refused: true,
  };

  it('keeps them in <dir>/market.json across store objects, exactly; none before the first save', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'trickle-market-'));
    dirs.push(dir);
    const store = fileChannelStore(dir);
    expect(await store.market!.loadOrders()).toEqual([]);
    await store.market!.saveOrders([order, { ...order, id: `0x${'cd'.repeat(32)}` as Bytes32, arrival: 4n }]);
    const again = fileMarketOrders(dir);
    expect(await again.loadOrders()).toEqual([order, { ...order, id: `0x${'cd'.repeat(32)}`, arrival: 4n }]);
    await again.saveOrders([]);
    expect(await fileMarketOrders(dir).loadOrders()).toEqual([]);
    expect(await readFile(join(dir, MARKET_ORDERS_FILE), 'utf8')).toContain('"orders": []');
  });

  it('refuses a file that is not a list of orders (MALFORMED)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'trickle-market-'));
    dirs.push(dir);
    await writeFile(join(dir, MARKET_ORDERS_FILE), '{"orders":[{"id":"0x01"}]}');
    await expect(fileMarketOrders(dir).loadOrders()).rejects.toMatchObject({ code: 'MALFORMED' });
  });
});
