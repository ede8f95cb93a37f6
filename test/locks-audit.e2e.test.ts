import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { Bytes32 } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { leaveRunning, waitFor } from './helpers/wait.js';

/** Audit of conditional routes (protocol-spec §5, routed conditional transfers). */
const CHALLENGE = 2n;
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

describe('conditional routes: audit', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
  });
  afterAll(async () => w?.close());

  it('a payee channel full of pending locks refuses a new conditional route up front (TOO_MANY_LOCKS): nothing is locked on the payer’s channel', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-full'), limits: { lockMarginSeconds: 1, maxLocks: 2 } });
    const payer = await w.client(2);
    const griefer = await w.client(4);
    const payee = await w.client(3);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const gch = await griefer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    // The griefer fills the payee's channel with the hub's locks (1 unit each, never claimed).
    for (let i = 0; i < 2; i++) {
      const h = gch.pay(1n, { to: payee.address, lock: { hash: hashPreimage(newKey()), expiresIn: 600 } });
      await h.locked;
      leaveRunning(h.result, 'DISCONNECTED'); // never claimed: still locked when its client disconnects
    }
    await waitFor(() => (hub.channels.get(bch.channelId)!.locks ?? []).length === 2 && bch.locks.length === 2);
    // The buyer's lock could never be forwarded: it is refused before anything is locked on its channel.
    const h = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(newKey()), expiresIn: 600 } });
    await expect(h.locked).rejects.toMatchObject({ code: 'TOO_MANY_LOCKS' });
    await expect(h.result).rejects.toMatchObject({ code: 'TOO_MANY_LOCKS' });
    expect(ach.locks).toEqual([]);
    expect(hub.channels.get(ach.channelId)!.latest.state).toMatchObject({ lockedByDevice: 0n, paidByDevice: 0n });
    await hub.close();
    w.hub = undefined;
  });

  it('two payers racing for a payee channel’s last lock slot: one route is forwarded, the other refused TOO_MANY_LOCKS up front — no payer is left locked toward a lock that was never placed', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-race'), limits: { lockMarginSeconds: 1, maxLocks: 2 } });
    const [p1, p2, griefer, payee] = await Promise.all([w.client(5), w.client(7), w.client(4), w.client(8)]);
    const open = (d: typeof p1) => d.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const [c1, c2, gch, bch] = [await open(p1), await open(p2), await open(griefer), await open(payee)];
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const g = gch.pay(1n, { to: payee.address, lock: { hash: hashPreimage(newKey()), expiresIn: 600 } });
    await g.locked;
    leaveRunning(g.result, 'DISCONNECTED'); // never claimed: still locked when its client disconnects
    await waitFor(() => (hub.channels.get(bch.channelId)!.locks ?? []).length === 1 && bch.locks.length === 1);
    // One slot left; two payers ask for it in the same instant, many times over (each round frees the slot again by
    // letting the winner's payee claim).
    for (let round = 0; round < 5; round++) {
      const keys = [newKey(), newKey()];
      const hs = [c1, c2].map((c, i) =>
        c.pay(100n, { to: payee.address, lock: { hash: hashPreimage(keys[i]!), expiresIn: 600 } }),
      );
      const outcomes = await Promise.allSettled(hs.map((h) => h.locked));
      const won = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [i] : []));
      const lost = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [i] : []));
      expect(won.length, `round ${round}`).toBe(1);
      for (const i of lost) {
        expect((outcomes[i] as PromiseRejectedResult).reason).toMatchObject({ code: 'TOO_MANY_LOCKS' });
        await expect(hs[i]!.result).rejects.toMatchObject({ code: 'TOO_MANY_LOCKS' });
        expect([c1, c2][i]!.locks).toEqual([]);
      }
      // The winner's lock reaches the payee, which claims it with the key it was sold: the slot is free again.
      const i = won[0]!;
      await waitFor(() => bch.locks.length === 2, 20_000);
      await bch.claim(hashPreimage(keys[i]!), keys[i]!);
      await expect(hs[i]!.result).resolves.toBeDefined();
      await waitFor(() => bch.locks.length === 1 && [c1, c2][i]!.locks.length === 0, 20_000);
    }
    await Promise.all([p1, p2, griefer, payee].map((d) => d.disconnect()));
    await hub.close();
    w.hub = undefined;
  });

  it('two routes on one hash, the preimage revealed on-chain: the payee that never knew it is paid its lock, as settlement would, not left to let it expire back to the hub while the hub claims its payer', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-revealed'), limits: { lockMarginSeconds: 1 } });
    const [a1, b, a2, c] = await Promise.all([w.client(5), w.client(6), w.client(7), w.client(8)]);
    const open = (d: typeof a1) => d.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const [a1ch, bch, a2ch, cch] = [await open(a1), await open(b), await open(a2), await open(c)];
    await w.hubDeposit(bch.channelId, 1_000_000n);
    await w.hubDeposit(cch.channelId, 1_000_000n);
    // A data offer's hash is public: B sells its key, and A2 locks a payment to C on the same hash. C never knew the key.
    const key = newKey();
    const hash = hashPreimage(key);
    const toB = a1ch.pay(300n, { to: b.address, lock: { hash, expiresIn: 600 } });
    const toC = a2ch.pay(500n, { to: c.address, lock: { hash, expiresIn: 600 } });
    await Promise.all([toB.locked, toC.locked]);
    await waitFor(() => bch.locks.length === 1 && cch.locks.length === 1, 20_000);
    // The key is revealed on-chain (by B, or anyone who has it): settlement would pay every lock on the hash now.
    await new Adjudicator(w.adjudicator, w.chain.wallet(9)).reveal(key);
    // The hub claims both payers' locks with it, and pays both payees theirs: C too, which could not claim it.
    await waitFor(() => hub.channels.get(a2ch.channelId)!.latest.state.paidByDevice === 500n, 30_000);
    await waitFor(() => hub.channels.get(cch.channelId)!.latest.state.paidByHub === 500n, 30_000);
    await waitFor(() => cch.latest.state.paidByHub === 500n && cch.locks.length === 0, 20_000);
    await waitFor(() => bch.latest.state.paidByHub === 300n && bch.locks.length === 0, 20_000);
    expect(hub.channels.get(cch.channelId)!.locks ?? []).toEqual([]);
    await expect(toC.result).resolves.toBeDefined();
    await expect(toB.result).resolves.toBeDefined();
    await Promise.all([a1, b, a2, c].map((d) => d.disconnect()));
    await hub.close();
    w.hub = undefined;
  });
});
