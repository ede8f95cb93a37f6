import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PaymentReceipt } from '@trickle/client/channel';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

// The client steps the plain pay() calls of one turn as one engine intent (one ref, their sum) and counts a channel's
// affordability down per payment: these tests hold what a caller sees of that — its own receipt, the order of a
// turn around a routed payment, and refusals exactly where the deposit runs out — on a real hub and chain.
describe('plain payments of one turn, grouped', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
    await w.startHub();
  });
  afterAll(async () => w?.close());

  it('gives every caller its own receipt, and keeps the turn in order around a routed payment', async () => {
    const a = await w.client(2);
    const b = await w.client(3);
    const cha = await a.openChannel({ token: w.token, deposit: 10_000_000n });
    const chb = await b.openChannel({ token: w.token, deposit: 1_000_000n });
    const { Adjudicator } = await import('@trickle/chain/adjudicator');
    const { approve } = await import('@trickle/chain/erc20');
    const hubWallet = w.chain.wallet(1);
    await approve(hubWallet, w.token, w.adjudicator, 1_000_000n);
    await new Adjudicator(w.adjudicator, hubWallet).deposit(chb.channelId, 1_000_000n);
    await waitFor(() => w.hub!.channels.get(chb.channelId)!.funding.hub === 1_000_000n);

    // One turn: equal and different amounts.
    const one = [cha.pay(5n), cha.pay(7n), cha.pay(5n), cha.pay(5n)];
    expect(cha.pendingPayments).toBe(4);
    // Equal payments of one turn share one promise (nothing of their own for the collector while they are pending);
    // another amount has its own.
    expect(one[2]).toBe(one[0]);
    expect(one[3]).toBe(one[0]);
    expect(one[1]).not.toBe(one[0]);
    const r1 = await Promise.all(one);
    expect(r1.map((r) => r.amount)).toEqual([5n, 7n, 5n, 5n]);
    expect(new Set(r1.map((r) => r.version)).size).toBe(1); // one state holds the turn
    for (const r of r1) expect(r.paidByDevice).toBe(22n);
    expect(r1.every((r) => r.paymentId === undefined)).toBe(true);
    expect(Object.isFrozen(r1[0])).toBe(true); // a receipt shared by equal payments cannot be changed by one caller
    expect(cha.pendingPayments).toBe(0);

    // One turn with a routed payment in the middle: the payments before it, it, and those after it are three states
    // in that order (a routed payment is a barrier), never the later plain ones merged into the earlier group.
    const before = cha.pay(3n);
    const routed = cha.pay(4n, { to: b.address });
    const after = [cha.pay(6n), cha.pay(6n)];
    const [rb, rr, ...ra] = (await Promise.all([before, routed, ...after])) as PaymentReceipt[];
    expect(ra[0]!.version).toBe(rb!.version + 2n); // the routed payment's own state lies between them
    expect(ra[0]!.version).toBe(ra[1]!.version);
    expect(rb!.paidByDevice).toBe(25n);
    expect(rr!.amount).toBe(4n);
    expect(rr!.paymentId).toBeDefined();
    expect(ra[1]!.paidByDevice).toBe(41n);
    expect(w.hub!.channels.get(cha.channelId)!.latest.state.paidByDevice).toBe(41n);
    await waitFor(() => chb.latest.state.paidByHub === 4n);
  });

  it('refuses exactly the payments the deposit cannot cover, counted per payment, and pays the rest once', async () => {
    const c = await w.client(4);
    const ch = await c.openChannel({ token: w.token, deposit: 1_000n });
    const first = Array.from({ length: 9 }, () => ch.pay(100n));
    const tooBig = ch.pay(150n); // 900 asked so far: 100 left
    const last = ch.pay(100n);
    const beyond = [ch.pay(1n), ch.pay(100n)];
    await expect(tooBig).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS', details: { available: 100n } });
    for (const p of beyond) await expect(p).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    const receipts = await Promise.all([...first, last]);
    expect(receipts.map((r) => r.amount)).toEqual(Array(10).fill(100n));
    expect(ch.latest.state.paidByDevice).toBe(1_000n);
    expect(w.hub!.channels.get(ch.channelId)!.latest.state.paidByDevice).toBe(1_000n);
    expect(ch.balance().available).toBe(0n);
    await expect(ch.pay(1n)).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    expect(ch.pendingPayments).toBe(0);
  });
});
