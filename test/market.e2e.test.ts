import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { MarketClock } from '@trickle/hub/market-clock';
import { deployToken } from '@trickle/chain/deploy';
import { mintTestToken } from '@trickle/chain/erc20';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import type { PublishedClearing } from '@trickle/market';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { freePort } from './helpers/hub-process.js';

/**
 * Several market rounds on a real hub with several devices: each participant's channel counters change by
 * exactly its net for the round, with one channel update per participant per round; a credit that does not
 * match the clearing is refused.
 */
describe('smart market end to end', () => {
  let w: World;
  const clients: TrickleClient[] = [];
  const channels: ClientChannel[] = [];
  beforeAll(async () => {
    w = await createWorld();
    // Rounds are closed by the test (closeRound) for determinism; the timer would close them every 60 s.
    await w.startHub({ market: { roundMs: 60_000, feeBps: 0n } });
    for (const i of [2, 3, 4, 5]) {
      const c = await w.client(i);
      clients.push(c);
      const ch = await c.openChannel({ token: w.token, deposit: 50_000_000n });
      channels.push(ch);
      await w.hubDeposit(ch.channelId, 20_000_000n);
    }
  });
  afterAll(async () => w?.close());

  it('clears rounds and moves exactly the nets through the channels', async () => {
    const [b1, b2, s1, s2] = clients as [TrickleClient, TrickleClient, TrickleClient, TrickleClient];
    const [cb1, cb2, cs1, cs2] = channels as [ClientChannel, ClientChannel, ClientChannel, ClientChannel];
    const seen = new Map<bigint, PublishedClearing>();
    b1.market.onClearing((p) => seen.set(p.record.round, p));
    for (let round = 0; round < 3; round++) {
      await b1.market.ready();
      const r = b1.market.round;
      const before = channels.map((ch) => ({
        paid: ch.latest.state.paidByDevice,
        received: ch.latest.state.paidByHub,
        version: ch.latest.state.version,
      }));
      // buyers: 10 kWh at ≤ 130k, 5 kWh at ≤ 125k; sellers: 8 kWh at ≥ 110k, 10 kWh at ≥ 120k (price in USDT base units)
      await Promise.all([
        b1.market.submitOrder(cb1, {
          market: 'kwh',
          side: 'bid',
          quantity: 10n,
          price: 130_000n + BigInt(round),
          round: r,
        }),
        b2.market.submitOrder(cb2, { market: 'kwh', side: 'bid', quantity: 5n, price: 125_000n, round: r }),
        s1.market.submitOrder(cs1, { market: 'kwh', side: 'ask', quantity: 8n, price: 110_000n, round: r }),
        s2.market.submitOrder(cs2, { market: 'kwh', side: 'ask', quantity: 10n, price: 120_000n, round: r }),
      ]);
      const cleared = await w.hub!.market!.closeRound();
      expect(cleared.round).toBe(r);
      await waitFor(() => b1.market.round === r + 1n);
      // escrow + one credit per participant: wait for every channel to reach this round
      await waitFor(() => channels.every((ch) => ch.latest.state.round >= r), 10_000).catch((e) => {
        throw new Error(`round ${r}: channel rounds ${channels.map((ch) => ch.latest.state.round).join(',')}; ${e}`);
      });
      const published = seen.get(r) ?? b1.market.clearing(r)!;
      expect(published).toBeDefined();
      const record = published.record;
      const kwh = record.markets.find((m) => m.market === 'kwh')!;
      expect(kwh.volume).toBe(15n);
      expect(kwh.price).not.toBeNull();
      expect(kwh.price! >= 120_000n && kwh.price! <= 125_000n).toBe(true);
      for (const [i, ch] of channels.entries()) {
        const net = record.nets.find((n) => n.participant === clients[i]!.address)!.net;
        const s = ch.latest.state;
        expect(s.paidByHub - before[i]!.received - (s.paidByDevice - before[i]!.paid)).toBe(net);
        // buyers: escrow update + credit update = 2 versions; sellers: one credit update
        expect(s.version - before[i]!.version).toBe(i < 2 ? 2n : 1n);
      }
      expect(record.nets.reduce((a, n) => a + n.net, 0n)).toBe(0n);
      // conservation across the hub: what the participants gained in their channels sums to zero (no fee)
      const moved = channels.reduce(
        (a, ch, i) =>
          a + (ch.latest.state.paidByHub - before[i]!.received) - (ch.latest.state.paidByDevice - before[i]!.paid),
        0n,
      );
      expect(moved).toBe(0n);
    }
  });

  it('a round credit that does not match the clearing is refused with BAD_CLEARING', async () => {
    const c = clients[0]!;
    const ch = channels[0]!;
    const r = c.market.round;
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 1n, price: 1n, round: r });
    await w.hub!.market!.closeRound();
    await waitFor(() => ch.latest.state.round >= r, 10_000);
    const before = ch.latest.state;
    // the hub (misbehaving) tries to net the same round again with a bogus amount at a later round number
    await expect(w.hub!.credit(ch.channelId, 777n, { round: r + 1000n })).rejects.toMatchObject({
      code: 'BAD_CLEARING',
    });
    // Refused once the device countersigned the hub's next state, which moves nothing: the bogus credit is void.
    expect({ ...ch.latest.state, version: 0n }).toEqual({ ...before, version: 0n });
    expect(ch.latest.state.version).toBeGreaterThan(before.version);
  });

  it('an order with a bad signature or without its escrow is refused; an escrow without an order comes back', async () => {
    const c = clients[1]!;
    const ch = channels[1]!;
    const r = c.market.round;
    const order = {
      id: ('0x' + '09'.repeat(32)) as never,
      market: 'kwh',
      side: 'bid' as const,
      quantity: 2n,
      price: 100n,
      round: r,
    };
    await expect(c.request((id) => ({ t: 'order', id, order, sig: new Uint8Array(65).fill(1) }))).rejects.toMatchObject(
      { code: 'BAD_SIGNATURE' },
    );
    const { hashOrder } = await import('@trickle/market');
    const { trickleDomain } = await import('@trickle/protocol/eip712');
    const { nobleSigner } = await import('@trickle/protocol/signer');
    const sig = nobleSigner(w.chain.accounts[3]!).signDigest(
      hashOrder(trickleDomain(w.chain.chainId, w.adjudicator), { ...order, participant: c.address }),
    );
    await expect(c.request((id) => ({ t: 'order', id, order, sig }))).rejects.toMatchObject({ code: 'BAD_ORDER' });
    // an escrow paid for an order that is never placed is refunded in the next round's credit
    const before = ch.latest.state;
    await ch.pay(4_321n, { escrowFor: ('0x' + '0a'.repeat(32)) as never });
    // a second escrow under the same id would overwrite the first's record (kept by the hub): refused, nothing moves
    const paid = ch.latest.state;
    await expect(ch.pay(99n, { escrowFor: ('0x' + '0a'.repeat(32)) as never })).rejects.toMatchObject({
      code: 'BAD_ORDER',
    });
    expect(ch.latest.state).toEqual(paid);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state).toEqual(paid);
    await w.hub!.market!.closeRound();
    await waitFor(() => ch.latest.state.round >= r);
    expect(ch.latest.state.paidByDevice - before.paidByDevice).toBe(4_321n);
    expect(ch.latest.state.paidByHub - before.paidByHub).toBe(4_321n);
  });

  it('a cooperative close waits for the round that owes the channel its escrow back (PENDING_CREDITS)', async () => {
    const c = clients[3]!;
    const ch = channels[3]!;
    const r = c.market.round;
    const before = ch.latest.state;
    await c.market.submitOrder(ch, { market: 'kwh', side: 'bid', quantity: 3n, price: 1_000n, round: r }); // nobody sells
    expect(ch.latest.state.paidByDevice - before.paidByDevice).toBe(3_000n); // the escrow
    const closing = c.close(ch.channelId, { timeoutMs: 10_000 });
    await new Promise((res) => setTimeout(res, 400)); // the hub refuses the final state meanwhile
    await w.hub!.market!.closeRound();
    const result = await closing;
    expect(result.mode).toBe('cooperative');
    // the unfilled bid's escrow came back in the round's credit before the final state: nothing stranded
    expect(result.state.state.isFinal).toBe(true);
    expect(result.state.state.round).toBe(r);
    expect(result.state.state.paidByHub - before.paidByHub).toBe(3_000n);
    expect(result.state.state.paidByDevice - before.paidByDevice).toBe(3_000n);
  });
});

describe('market rounds in the store', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 20 });
  });
  afterAll(async () => w?.close());

  /** A buyer and a seller with channels, the hub funded to pay the seller, both ready for the open round. */
  const traders = async (buyerIndex: number, sellerIndex: number, sellerOptions?: Parameters<World['client']>[1]) => {
    const buyer = await w.client(buyerIndex);
    const seller = await w.client(sellerIndex, sellerOptions);
    const bch = await buyer.openChannel({ token: w.token, deposit: 1_000_000n });
    const sch = await seller.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(sch.channelId, 500_000n);
    await buyer.market.ready();
    await seller.market.ready();
    /** A bid and an ask that match at `price` for `quantity`, in the open round; returns the round. */
    const match = async (quantity: bigint, price: bigint) => {
      const round = buyer.market.round;
      await buyer.market.submitOrder(bch, { market: 'kwh', side: 'bid', quantity, price, round });
      await seller.market.submitOrder(sch, { market: 'kwh', side: 'ask', quantity, price, round });
      return round;
    };
    return { buyer, seller, bch, sch, match };
  };

  it('a round nobody took part in stores no clearing; the round number still moves on across a restart', async () => {
    const storePath = join(w.dir, 'market-store');
    await w.startHub({ storePath, market: { roundMs: 60_000 } });
    const seller = await w.client(2);
    const ch = await seller.openChannel({ token: w.token, deposit: 1_000_000n });
    await seller.market.ready();
    const r = seller.market.round;
    await seller.market.submitOrder(ch, { market: 'kwh', side: 'ask', quantity: 1n, price: 5n, round: r }); // nobody buys
    await w.hub!.market!.closeRound();
    for (let k = 0; k < 3; k++) await w.hub!.market!.closeRound(); // empty rounds
    seller.disconnect();
    await w.hub!.close();
    w.hub = undefined;

    const store = openLmdbStore({ path: storePath });
    try {
      expect(
        (await store.loadMetaPrefix('market/clearing/')).map((e) => BigInt(e.key.slice(e.key.lastIndexOf('/') + 1))),
      ).toEqual([r]);
      expect(await store.getMeta('market/round')).toBe(String(r + 4n));
    } finally {
      await store.close();
    }
    const hub = await w.startHub({ storePath, market: { roundMs: 60_000 } });
    expect(hub.market!.round).toBe(r + 4n);
  });
  it('a round credit outstanding when the hub stopped lands once after the restart, not twice', async () => {
    const storePath = join(w.dir, 'market-restart');
    const market = { roundMs: 60_000, keepClearings: 0 }; // landed clearings are deleted at the next round
    await w.startHub({ storePath, market });
    // The seller is connected but never countersigns a credit: the hub stops with its round credit outstanding.
    const { seller, sch, match } = await traders(3, 4, { creditGuard: () => new Promise<void>(() => {}) });
    const r = await match(2n, 100n);
    const before = w.hub!.channels.get(sch.channelId)!.latest.state;
    await w.hub!.market!.closeRound();
    await waitFor(() => w.hub!.channels.get(sch.channelId)?.outgoing !== undefined); // signed and durable, never answered
    await w.hub!.market!.closeRound();
    await new Promise((res) => setTimeout(res, 100));
    expect(w.hub!.market!.storedClearings).toEqual([r]); // not every credit landed: kept, whatever keepClearings says
    await w.hub!.close();
    await seller.disconnect();

    const hub = await w.startHub({ storePath, market });
    expect(hub.market!.storedClearings).toEqual([r]);
    await w.client(4); // the seller is back
    await waitFor(() => hub.channels.get(sch.channelId)!.latest.state.round >= r, 10_000);
    await hub.market!.closeRound();
    await new Promise((res) => setTimeout(res, 500)); // a second credit would have landed by now
    const after = hub.channels.get(sch.channelId)!;
    expect(after.latest.state.paidByHub - before.paidByHub).toBe(200n);
    expect(after.outgoing).toBeUndefined();
    await waitFor(() => hub.market!.storedClearings.length === 0); // every credit landed: deleted
  });

  it('landed clearing records beyond the kept rounds are deleted', async () => {
    await w.startHub({ storePath: join(w.dir, 'market-prune'), market: { roundMs: 60_000, keepClearings: 1 } });
    const { buyer, bch, sch, match } = await traders(8, 9);
    const rounds: bigint[] = [];
    for (let k = 0; k < 3; k++) {
      const r = await match(1n, 10n);
      rounds.push(r);
      await w.hub!.market!.closeRound();
      await waitFor(() => bch.latest.state.round >= r && sch.latest.state.round >= r, 10_000);
      await waitFor(() => buyer.market.round > r);
    }
    await w.hub!.market!.closeRound(); // an empty round: stores nothing, prunes what is old enough
    await waitFor(() => w.hub!.market!.storedClearings.length === 1);
    expect(w.hub!.market!.storedClearings).toEqual([rounds[2]]);
    expect(() => new MarketClock({} as never, { token: w.token, keepClearings: -1 })).toThrow(/keepClearings/);
  });
  it('the market settles in its token only: an escrow or an ask on a channel in another token is refused', async () => {
    // Before, the hub took a bid's escrow on a channel in any token (the attacker's own, worthless) and paid the
    // seller the round's proceeds in the market's token from the hub's deposit: 2 × 100 of real money for junk.
    await w.startHub({ storePath: join(w.dir, 'market-token'), market: { roundMs: 60_000 } });
    const junk = await deployToken(w.chain.wallet(0), 'usdt');
    await mintTestToken(w.chain.wallet(0), junk.address, w.chain.addresses[10]!, 1_000_000n);
    const attacker = await w.client(10);
    const jch = await attacker.openChannel({ token: junk.address, deposit: 1_000_000n });
    const seller = await w.client(11);
    const sch = await seller.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(sch.channelId, 500_000n);
    await attacker.market.ready();
    const round = attacker.market.round;
    const bid = { market: 'kwh', side: 'bid' as const, quantity: 2n, price: 100n, round };
    await expect(attacker.market.submitOrder(jch, bid)).rejects.toMatchObject({ code: 'BAD_ORDER' });
    expect(jch.latest.state.paidByDevice).toBe(0n); // the escrow payment was refused: nothing moved
    await expect(attacker.market.submitOrder(jch, { ...bid, side: 'ask', price: 1n })).rejects.toMatchObject({
      code: 'BAD_ORDER',
    });
    await seller.market.submitOrder(sch, { market: 'kwh', side: 'ask', quantity: 2n, price: 50n, round });
    const cleared = await w.hub!.market!.closeRound();
    expect(cleared.round).toBe(round);
    expect(cleared.markets).toEqual([{ market: 'kwh', price: null, volume: 0n, fills: [] }]);
    await waitFor(() => w.hub!.channels.get(sch.channelId)!.latest.state.round >= round, 10_000);
    expect(w.hub!.channels.get(sch.channelId)!.latest.state.paidByHub).toBe(0n);
    expect(w.hub!.channels.get(jch.channelId)!.latest.state.paidByDevice).toBe(0n);
  });

  it('a bid for the next round still being written when the round closes keeps its escrow for that round: refunded once', async () => {
    // Before, closing round r refunded the escrow of a bid for r + 1 whose placement was still being written (it was
    // in no round's list yet), and round r + 1 cleared the bid and refunded its escrow again: the device got E twice.
    await w.startHub({ storePath: join(w.dir, 'market-boundary'), market: { roundMs: 60_000 } });
    const buyer = await w.client(5);
    const ch = await buyer.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ch.channelId, 500_000n);
    await buyer.market.ready();
    const r = buyer.market.round;
    const { hashOrder } = await import('@trickle/market');
    const { trickleDomain } = await import('@trickle/protocol/eip712');
    const { nobleSigner } = await import('@trickle/protocol/signer');
    const order = {
      id: ('0x' + '5b'.repeat(32)) as never,
      market: 'kwh',
      side: 'bid' as const,
      quantity: 3n,
      price: 700n,
      round: r + 1n,
    };
    const before = ch.latest.state;
    await ch.pay(2_100n, { escrowFor: order.id });
    const sig = nobleSigner(w.chain.accounts[5]!).signDigest(
      hashOrder(trickleDomain(w.chain.chainId, w.adjudicator), { ...order, participant: buyer.address }),
    );
    const market = w.hub!.market!;
    // The placement runs up to its write, then round r closes while the write is under way.
    const placing = market.place(buyer.address, { t: 'order', id: 1, order, sig });
    const closing = market.closeRound();
    expect(await placing).toMatchObject({ t: 'accepted' });
    const first = await closing;
    expect(first.round).toBe(r);
    await market.closeRound(); // round r + 1: the bid finds no seller, its escrow comes back
    await waitFor(() => ch.latest.state.round >= r + 1n, 10_000);
    await new Promise((res) => setTimeout(res, 300)); // a second refund would have landed by now
    expect(ch.latest.state.paidByDevice - before.paidByDevice).toBe(2_100n);
    expect(ch.latest.state.paidByHub - before.paidByHub).toBe(2_100n);
  });

  it('a hub restarted with a higher fee clears the orders taken under the lower one at that fee', async () => {
    // The devices stay connected through the restart (same port) and check the clearing against the fee announced
    // when they placed their orders. Before, the restarted hub cleared them at its new fee: the seller refused the
    // credit (BAD_CLEARING) and its proceeds never landed.
    const storePath = join(w.dir, 'market-fee');
    const port = await freePort();
    await w.startHub({ storePath, market: { roundMs: 60_000, feeBps: 0n }, more: { port } });
    const { seller, sch, match } = await traders(12, 13);
    const r = await match(2n, 100n);
    const before = sch.latest.state;
    await w.hub!.close();
    const hub = await w.startHub({ storePath, market: { roundMs: 60_000, feeBps: 5_000n }, more: { port } });
    await waitFor(() => hub.channels.get(sch.channelId) !== undefined && seller.market.feeBps === 5_000n, 10_000);
    const cleared = await hub.market!.closeRound();
    expect([cleared.round, cleared.fee]).toEqual([r, 0n]);
    await waitFor(() => sch.latest.state.round >= r, 10_000);
    expect(sch.latest.state.paidByHub - before.paidByHub).toBe(200n);
  });

  /** A round of 300 orders (150 bids and 150 asks crossing): its published clearing is about 150 KB. */
  const bigRound = async (buyerIndex: number, sellerIndex: number, storePath: string, port: number) => {
    // 150 orders from each of two devices: above the default bound per participant (100)
    await w.startHub({ storePath, market: { roundMs: 60_000, maxParticipantOrders: 150 }, more: { port } });
    const t = await traders(buyerIndex, sellerIndex);
    const round = t.buyer.market.round;
    const placing: Promise<unknown>[] = [];
    for (let k = 0; k < 150; k++) {
      placing.push(t.buyer.market.submitOrder(t.bch, { market: 'kwh', side: 'bid', quantity: 1n, price: 10n, round }));
      placing.push(t.seller.market.submitOrder(t.sch, { market: 'kwh', side: 'ask', quantity: 1n, price: 10n, round }));
    }
    await Promise.all(placing);
    return { ...t, round, before: t.sch.latest.state };
  };

  it('a round whose clearing record is larger than a frame fails neither its clearing nor a restart', async () => {
    // A blob holds at most 60 KiB (WIRE_LIMITS.maxBlobBytes). Before, closeRound threw INVALID_ARGUMENT encoding the
    // record for the first participant, after the round was committed, and again wherever the frame was sent later.
    // The record now goes in parts (see the next test); one needing more than MAX_CLEARING_PARTS stays owed (kept).
    const storePath = join(w.dir, 'market-big');
    const port = await freePort();
    const { bch, sch, round, before } = await bigRound(14, 15, storePath, port);
    const cleared = await w.hub!.market!.closeRound();
    expect([cleared.round, cleared.markets[0]!.volume]).toEqual([round, 150n]);
    expect(w.hub!.market!.storedClearings).toContain(round);
    await w.hub!.close();
    const hub = await w.startHub({ storePath, market: { roundMs: 60_000 }, more: { port } });
    expect(hub.market!.storedClearings).toContain(round);
    await waitFor(() => hub.channels.get(bch.channelId) !== undefined, 10_000);
    await bch.pay(1n); // the channel serves on
    // the seller's proceeds land once, whether before the restart or re-sent (in parts) after it
    await waitFor(() => sch.latest.state.round >= round, 10_000);
    await new Promise((res) => setTimeout(res, 300)); // a second credit would have landed by now
    expect(sch.latest.state.paidByHub - before.paidByHub).toBe(1_500n);
  });

  // Before, the record (about 150 KB) travelled as one frame of at most 64 KiB: it never reached its participants,
  // whose credits stayed owed. It now goes in parts (splitClearing), which the device reassembles and verifies.
  it('a round of 300 orders: its clearing record reaches every participant and every credit lands', async () => {
    const { buyer, seller, sch, bch, round, before } = await bigRound(
      16,
      17,
      join(w.dir, 'market-big-2'),
      await freePort(),
    );
    await w.hub!.market!.closeRound();
    await waitFor(() => sch.latest.state.round >= round && bch.latest.state.round >= round, 5_000);
    expect(sch.latest.state.paidByHub - before.paidByHub).toBe(1_500n);
    for (const c of [buyer, seller]) expect(c.market.clearing(round)?.orders).toHaveLength(300);
  });

  it('a round takes at most maxRoundOrders orders and escrows: one more is refused (LIMIT_EXCEEDED), its escrow not taken; the round clears and publishes', async () => {
    // Before, nothing bounded a round: past about 3,000 (worst case) to 7,500 orders its clearing record needed more
    // than 64 parts, was never published, and every escrow and proceeds of the round stayed owed for ever.
    await w.startHub({ storePath: join(w.dir, 'market-full'), market: { roundMs: 60_000, maxRoundOrders: 3 } });
    const { buyer, seller, bch, sch } = await traders(18, 19);
    const round = buyer.market.round;
    const bid = { market: 'kwh', side: 'bid' as const, quantity: 1n, price: 100n, round };
    const ask = { market: 'kwh', side: 'ask' as const, quantity: 2n, price: 50n, round };
    await buyer.market.submitOrder(bch, bid);
    await buyer.market.submitOrder(bch, bid);
    await seller.market.submitOrder(sch, ask);
    const paid = bch.latest.state;
    expect(paid.paidByDevice).toBe(200n);
    // The 4th: the bid's escrow payment is refused, nothing moves on either side; the ask is refused.
    await expect(buyer.market.submitOrder(bch, bid)).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(bch.latest.state).toEqual(paid);
    expect(w.hub!.channels.get(bch.channelId)!.latest.state).toEqual(paid);
    await expect(seller.market.submitOrder(sch, ask)).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' });
    expect(w.hub!.market!.owes(sch.channelId)).toBe(true); // the first ask only

    const cleared = await w.hub!.market!.closeRound();
    expect([cleared.round, cleared.markets[0]!.volume]).toEqual([round, 2n]);
    await waitFor(() => sch.latest.state.round >= round && bch.latest.state.round >= round, 10_000);
    for (const c of [buyer, seller]) expect(c.market.clearing(round)?.orders).toHaveLength(3);
    const price = cleared.markets[0]!.price!;
    expect(price).toBe(75n); // the floor of the crossing interval's midpoint, [50, 100]
    expect(sch.latest.state.paidByHub).toBe(2n * price); // the seller's proceeds landed
    expect(bch.latest.state.paidByHub).toBe(2n * (100n - price)); // what each bid's escrow paid above the price
    // The next round has room again.
    await waitFor(() => buyer.market.round === round + 1n);
    await expect(buyer.market.submitOrder(bch, { ...bid, round: round + 1n })).resolves.toBeDefined();
  });

  it('a participant offline when its round closes gets the clearing record and its credit when it reconnects', async () => {
    await w.startHub({ storePath: join(w.dir, 'market-offline'), market: { roundMs: 60_000 } });
    const { seller, sch, match } = await traders(6, 7);
    const r = await match(3n, 50n);
    await seller.disconnect();
    const before = w.hub!.channels.get(sch.channelId)!.latest.state;
    await w.hub!.market!.closeRound();
    await new Promise((res) => setTimeout(res, 300));
    expect(w.hub!.channels.get(sch.channelId)!.latest.state).toEqual(before); // nothing can land while it is away

    const back = await w.client(7);
    await waitFor(() => w.hub!.channels.get(sch.channelId)!.latest.state.round >= r, 10_000);
    expect(w.hub!.channels.get(sch.channelId)!.latest.state.paidByHub - before.paidByHub).toBe(150n);
    expect(back.market.clearing(r)?.record.round).toBe(r);
  });
});
