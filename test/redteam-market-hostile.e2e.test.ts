import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import {
  clearRound,
  hashOrder,
  publishedClearingDigest,
  verifyPublished,
  type Order,
  type OrderTerms,
  type PublishedClearing,
} from '@trickle/market';
import type { Message } from '@trickle/protocol/codec';
import { trickleDomain } from '@trickle/protocol/eip712';
import { parseJson } from '@trickle/protocol/json';
import { nobleSigner, nobleVerifier } from '@trickle/protocol/signer';
import type { Address, Bytes32 } from '@trickle/protocol/types';
import type { ClientChannel } from '@trickle/client/channel';
import type { TrickleClient } from '@trickle/client/client';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * Red team of the smart market (spec §7) as a trader and an auditor would attack it, on a real hub and chain: orders
 * signed for another domain, for a closed or a far round, replayed, on someone else's escrow; a device on both sides
 * of its own market; the fee's dust; an escrow above its bid's worst case; and a third party auditing the published
 * clearing from the frame alone (verifyPublished), forged records refused. Every amount is checked on the channels:
 * what buyers pay equals what sellers receive plus the fee, to the base unit.
 */
describe('red team: hostile market orders against a real hub', () => {
  let w: World;
  const traders: { c: TrickleClient; ch: ClientChannel }[] = [];
  const id = (b: string) => `0x${b.repeat(32)}` as Bytes32;

  beforeAll(async () => {
    w = await createWorld({ accounts: 10 });
    // Rounds are closed by the test (closeRound), the timer would close them every 60 s.
    await w.startHub({ storePath: join(w.dir, 'redteam-market'), market: { roundMs: 60_000, feeBps: 33n } });
    for (const i of [2, 3, 4, 5]) {
      const c = await w.client(i);
      const ch = await c.openChannel({ token: w.token, deposit: 100_000_000n });
      await w.hubDeposit(ch.channelId, 50_000_000n);
      await c.market.ready();
      traders.push({ c, ch });
    }
  });
  afterAll(async () => w?.close());

  const sign = (index: number, terms: OrderTerms, domain = trickleDomain(w.chain.chainId, w.adjudicator)) =>
    nobleSigner(w.chain.accounts[index]!).signDigest(hashOrder(domain, terms));
  const send = (c: TrickleClient, order: Omit<OrderTerms, 'participant'>, sig: Uint8Array) =>
    c.request((rid) => ({ t: 'order', id: rid, order, sig }) as Message);
  const state = (ch: ClientChannel) => w.hub!.channels.get(ch.channelId)!.latest.state;
  const landed = (ch: ClientChannel, r: bigint) => waitFor(() => state(ch).round >= r, 10_000);

  it('an order signed for another chain or adjudicator, for a closed round or two rounds ahead is BAD_ORDER; nothing is placed', async () => {
    const { c, ch } = traders[0]!;
    const r = w.hub!.market!.round;
    const before = state(ch);
    const terms = { id: id('b1'), market: 'kwh', side: 'ask' as const, quantity: 1n, price: 1n, round: r };
    const full = { ...terms, participant: c.address };
    const otherChain = trickleDomain(w.chain.chainId + 1n, w.adjudicator);
    const otherAdjudicator = trickleDomain(w.chain.chainId, w.chain.addresses[0]! as Address);
    for (const domain of [otherChain, otherAdjudicator])
      await expect(send(c, terms, sign(2, full, domain))).rejects.toMatchObject({ code: 'BAD_ORDER' });
    // Signed right, but for the round before the open one (closed) and for two rounds ahead.
    for (const round of [r - 1n, r + 2n]) {
      const t = { ...terms, round };
      await expect(send(c, t, sign(2, { ...t, participant: c.address }))).rejects.toMatchObject({ code: 'BAD_ORDER' });
    }
    // The hub's own key signing in the device's name is not the device either.
    const forged = nobleSigner(w.hubKey).signDigest(hashOrder(trickleDomain(w.chain.chainId, w.adjudicator), full));
    await expect(send(c, terms, forged)).rejects.toMatchObject({ code: 'BAD_ORDER' });
    const record = await w.hub!.market!.closeRound();
    expect(record.round).toBe(r);
    expect(record.markets).toEqual([]); // none of them made it into the round
    expect(record.credits).toEqual([]);
    expect(state(ch)).toEqual(before);
  });

  it('a replayed order frame is a duplicate; its id is placed once across the open round and the next', async () => {
    const [{ c, ch }, { c: s, ch: sch }] = traders as [(typeof traders)[0], (typeof traders)[0]];
    const r = w.hub!.market!.round;
    const terms = { id: id('c1'), market: 'kwh', side: 'bid' as const, quantity: 2n, price: 500n, round: r };
    await ch.pay(1_000n, { escrowFor: terms.id });
    const sig = sign(2, { ...terms, participant: c.address });
    await expect(send(c, terms, sig)).resolves.toMatchObject({ t: 'accepted' });
    await expect(send(c, terms, sig)).rejects.toMatchObject({ code: 'BAD_ORDER' }); // the same frame again
    const next = { ...terms, round: r + 1n }; // the same id signed anew for the next round
    await expect(send(c, next, sign(2, { ...next, participant: c.address }))).rejects.toMatchObject({
      code: 'BAD_ORDER',
    });
    await s.market.submitOrder(sch, { market: 'kwh', side: 'ask', quantity: 5n, price: 400n, round: r });
    const b0 = state(ch);
    const s0 = state(sch);
    const record = await w.hub!.market!.closeRound();
    expect(record.markets[0]!.fills.filter((f) => f.orderId === terms.id)).toHaveLength(1);
    // Partial ask at 400: the price is the ask's limit; the buyer gets back 2 × (500 − 400), the seller 800 less fee.
    expect(record.markets[0]!.price).toBe(400n);
    await landed(ch, r);
    await landed(sch, r);
    expect(state(ch).paidByHub - b0.paidByHub).toBe(200n);
    expect(state(sch).paidByHub - s0.paidByHub).toBe(800n - (800n * 33n) / 10_000n);
    // And the replay in the round now open (a round later than signed) is refused as well: its round is signed.
    await expect(send(c, terms, sig)).rejects.toMatchObject({ code: 'BAD_ORDER' });
  });

  it("a bid on another device's escrow is refused; an ask under its id gets nothing of it: the payer is refunded it once", async () => {
    const [{ c: a, ch: ach }, { c: b, ch: bch }] = traders as [(typeof traders)[0], (typeof traders)[0]];
    const r = w.hub!.market!.round;
    const a0 = state(ach);
    const b0 = state(bch);
    const x = id('d1');
    await ach.pay(700n, { escrowFor: x });
    const bid = { id: x, market: 'kwh', side: 'bid' as const, quantity: 7n, price: 100n, round: r };
    await expect(send(b, bid, sign(3, { ...bid, participant: b.address }))).rejects.toMatchObject({
      code: 'BAD_ORDER',
    });
    const ask = { ...bid, side: 'ask' as const, price: 1n };
    await expect(send(b, ask, sign(3, { ...ask, participant: b.address }))).resolves.toMatchObject({ t: 'accepted' });
    // A's own bid under its escrow is now a duplicate id: its escrow comes back with the round.
    await expect(send(a, bid, sign(2, { ...bid, participant: a.address }))).rejects.toMatchObject({
      code: 'BAD_ORDER',
    });
    await w.hub!.market!.closeRound();
    await landed(ach, r);
    await landed(bch, r);
    expect(state(ach).paidByDevice - a0.paidByDevice).toBe(700n);
    expect(state(ach).paidByHub - a0.paidByHub).toBe(700n);
    expect(state(bch).paidByHub - b0.paidByHub).toBe(0n);
    // Not again the next round.
    const r2 = w.hub!.market!.round;
    await traders[0]!.c.market.submitOrder(ach, { market: 'kwh', side: 'ask', quantity: 1n, price: 9n, round: r2 });
    await w.hub!.market!.closeRound();
    await landed(ach, r2);
    expect(state(ach).paidByHub - a0.paidByHub).toBe(700n);
  });

  it('a device on both sides of its own market, an escrow above its worst case and the fee dust: money is conserved exactly', async () => {
    const r = w.hub!.market!.round;
    const [t0, t1, t2, t3] = traders as [
      (typeof traders)[0],
      (typeof traders)[0],
      (typeof traders)[0],
      (typeof traders)[0],
    ];
    const before = traders.map((t) => state(t.ch));
    // t0 crosses itself: bid 5 @ 1,000,003 and ask 3 @ 999,999 (6-decimal units).
    await t0.c.market.submitOrder(t0.ch, { market: 'kwh', side: 'bid', quantity: 5n, price: 1_000_003n, round: r });
    await t0.c.market.submitOrder(t0.ch, { market: 'kwh', side: 'ask', quantity: 3n, price: 999_999n, round: r });
    // t1 pays 1,000 more escrow than its bid needs, by hand.
    const over = { id: id('e1'), market: 'kwh', side: 'bid' as const, quantity: 3n, price: 1_000_001n, round: r };
    await t1.ch.pay(3_000_003n + 1_000n, { escrowFor: over.id });
    await expect(send(t1.c, over, sign(3, { ...over, participant: t1.c.address }))).resolves.toMatchObject({
      t: 'accepted',
    });
    await t2.c.market.submitOrder(t2.ch, { market: 'kwh', side: 'ask', quantity: 4n, price: 1_000_000n, round: r });
    await t3.c.market.submitOrder(t3.ch, { market: 'kwh', side: 'ask', quantity: 7n, price: 1_000_002n, round: r });
    const record = await w.hub!.market!.closeRound();
    for (const t of traders) await landed(t.ch, r);
    const m = record.markets[0]!;
    // Bids 5 @ 1,000,003 (t0) and 3 @ 1,000,001 (t1); asks 3 @ 999,999 (t0), 4 @ 1,000,000 (t2), 7 @ 1,000,002 (t3):
    // 7 units trade, t1's bid partly, so the price is its limit (the first rejected unit's), 1,000,001.
    expect(m.volume).toBe(7n);
    expect(m.price).toBe(1_000_001n);
    // Every channel moved by exactly its credit; the escrow above the worst case came back.
    const moved = traders.map((t, k) => state(t.ch).paidByHub - before[k]!.paidByHub);
    const paid = traders.map((t, k) => state(t.ch).paidByDevice - before[k]!.paidByDevice);
    const credit = (a: Address) => record.credits.find((x) => x.participant === a)?.amount ?? 0n;
    expect(moved).toEqual([credit(t0.c.address), credit(t1.c.address) + 1_000n, credit(t2.c.address), 0n]);
    expect(paid).toEqual([5n * 1_000_003n, 3_000_003n + 1_000n, 0n, 0n]);
    // Σ paid by devices = Σ paid back by the hub + the fee, to the base unit: nothing created, nothing lost.
    const sum = (xs: bigint[]) => xs.reduce((x, y) => x + y, 0n);
    expect(sum(paid)).toBe(sum(moved) + record.fee);
    const fills = m.fills;
    expect(sum(fills.filter((f) => f.side === 'bid').map((f) => f.amount))).toBe(
      sum(fills.filter((f) => f.side === 'ask').map((f) => f.amount)),
    );
    expect(record.fee).toBe(sum(fills.filter((f) => f.side === 'ask').map((f) => (f.amount * 33n) / 10_000n)));
    expect(record.fee).toBeGreaterThan(0n);
  });

  it('orders at the value bound: 2^128 − 1 is taken and clears exactly, 2^128 is BAD_ORDER at the hub', async () => {
    const [t0, t1] = traders as [(typeof traders)[0], (typeof traders)[0]];
    const r = w.hub!.market!.round;
    const MAX = (1n << 128n) - 1n;
    const ask = (b: string, quantity: bigint, price: bigint) => ({
      id: id(b),
      market: 'big',
      side: 'ask' as const,
      quantity,
      price,
      round: r,
    });
    // Sent by hand: the client refuses the too-large one itself, before the hub sees it.
    for (const o of [ask('f1', 1n << 128n, 1n), ask('f2', 1n, 1n << 128n), ask('f3', 1n << 64n, 1n << 64n)])
      await expect(send(t1.c, o, sign(3, { ...o, participant: t1.c.address }))).rejects.toMatchObject({
        code: 'BAD_ORDER',
      });
    for (const o of [ask('f4', MAX, 1n), ask('f5', 1n, MAX)])
      await expect(send(t1.c, o, sign(3, { ...o, participant: t1.c.address }))).resolves.toMatchObject({
        t: 'accepted',
      });
    const b0 = state(t0.ch);
    const s0 = state(t1.ch);
    await t0.c.market.submitOrder(t0.ch, { market: 'big', side: 'bid', quantity: 3n, price: 10n, round: r });
    const record = await w.hub!.market!.closeRound();
    const m = record.markets.find((x) => x.market === 'big')!;
    // 3 units of the huge ask, partly filled: the price is its limit, 1.
    expect([m.price, m.volume]).toEqual([1n, 3n]);
    expect(m.fills.find((f) => f.side === 'ask')).toMatchObject({ orderId: id('f4'), quantity: 3n, amount: 3n });
    await landed(t0.ch, r);
    await landed(t1.ch, r);
    expect(state(t0.ch).paidByDevice - b0.paidByDevice).toBe(30n);
    expect(state(t0.ch).paidByHub - b0.paidByHub).toBe(27n);
    expect(state(t1.ch).paidByHub - s0.paidByHub).toBe(3n); // 3 × 33 bps is 0: no fee
  });

  it('a third party audits the published clearing from the frame alone (verifyPublished); every forgery is refused', async () => {
    const [t0, t1] = traders as [(typeof traders)[0], (typeof traders)[0]];
    const r = w.hub!.market!.round;
    const frames: Extract<Message, { t: 'clearing' }>[] = [];
    const off = t0.c.onMessage((m) => {
      if (m.t === 'clearing' && m.round === r) frames.push(m);
    });
    await t0.c.market.submitOrder(t0.ch, { market: 'kwh', side: 'bid', quantity: 4n, price: 2_000n, round: r });
    await t1.c.market.submitOrder(t1.ch, { market: 'kwh', side: 'ask', quantity: 4n, price: 1_000n, round: r });
    await w.hub!.market!.closeRound();
    await waitFor(() => frames.length > 0, 10_000);
    off();
    const frame = frames[0]!;
    const published = parseJson<PublishedClearing>(new TextDecoder().decode(frame.record));
    const domain = trickleDomain(w.chain.chainId, w.adjudicator);
    const hub = nobleSigner(w.hubKey).address;
    const audit = { domain, hub, verifier: nobleVerifier, maxFeeBps: 33n };
    expect(() => verifyPublished(published, r, frame.sig, audit)).not.toThrow();
    const refused = (p: PublishedClearing, round = r, sig = frame.sig, o = audit) =>
      expect(() => verifyPublished(p, round, sig, o)).toThrow(expect.objectContaining({ code: 'BAD_CLEARING' }));
    // The record presented for another round, under another hub, on another chain, at a fee above the announced one.
    refused({ ...published, record: { ...published.record, round: r + 1n } }, r + 1n);
    refused(published, r, frame.sig, { ...audit, hub: w.chain.addresses[2]! as Address });
    refused(published, r, frame.sig, { ...audit, domain: trickleDomain(w.chain.chainId + 1n, w.adjudicator) });
    refused(published, r, frame.sig, { ...audit, maxFeeBps: 32n });
    // A cheaper fee claimed for the same signed record: the record is then not the clearing at that fee.
    refused({ ...published, feeBps: 0n });
    // An order's arrival moved (its digest is in the signed record), or its price changed (its signature fails).
    const orders = published.orders;
    refused({ ...published, orders: orders.map((o, k) => (k === 0 ? { ...o, arrival: o.arrival + 100n } : o)) });
    refused({ ...published, orders: orders.map((o, k) => (k === 0 ? { ...o, price: o.price + 1n } : o)) });
    // A whole new clearing of altered orders, honestly recomputed, re-signed by someone who is not the hub.
    const altered: Order[] = orders.map(({ sig: _s, ...o }) => (o.side === 'ask' ? { ...o, quantity: 1n } : o));
    const forgedRecord = clearRound(r, altered, { feeBps: 33n });
    const forgedSig = nobleSigner(w.chain.accounts[3]!).signDigest(
      publishedClearingDigest(domain, r, { record: forgedRecord, refunds: published.refunds }),
    );
    refused({ ...published, record: forgedRecord }, r, forgedSig);
    // An order dropped from the published list: the signed record is no longer its clearing.
    refused({ ...published, orders: orders.slice(1) });
    // A refund added by a relay (or one the hub listed taken out): the hub's signature covers the refunds too.
    const extra = { participant: t0.c.address, orderId: id('e1'), amount: 1n };
    refused({ ...published, refunds: [...published.refunds, extra] });
  });
});
