import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage } from '@trickle/protocol/locks';
import { Adjudicator } from '@trickle/chain/adjudicator';
import type { Bytes32, ChannelId } from '@trickle/protocol/types';
import type { Hub } from '@trickle/hub/hub';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * A routed lock (A → hub → B, Δ = challenge 2 s + margin 1 s) whose payer is away when B claims, and a hub that is
 * down through A's expiry after its guard revealed the preimage on-chain.
 */
const CHALLENGE = 2n;
const limits = { lockMarginSeconds: 1 };
const SHORT_LOCKS = { minLockSeconds: 0 }; // locks of seconds, to see them expire
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;
const state = (hub: Hub, id: ChannelId) => hub.channels.get(id)!.latest.state;
const locksOf = (hub: Hub, id: ChannelId) => hub.channels.get(id)!.locks ?? [];

async function pair(w: World, a: number, b: number) {
  const payer = await w.client(a);
  const payee = await w.client(b);
  const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
  const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
  await w.hubDeposit(bch.channelId, 1_000_000n);
  return { payer, payee, ach, bch };
}

describe('the hub down through the payer’s expiry, after it revealed the preimage on-chain', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4, client: SHORT_LOCKS });
  });
  afterAll(async () => w?.close());

  // Before: the restarted hub's claim of A's lock was refused LOCK_EXPIRED (past the expiry), so nothing stood against
  // A taking the lock back, which the hub countersigned — although the hub had paid B and the adjudicator gives the
  // lock to the hub (its preimage on-chain by the expiry).
  it('restarted after the expiry, the hub keeps its claim: A’s return of the lock is refused and A pays once', async () => {
    const storePath = join(w.dir, 'hub-down-through-expiry');
    const hub = await w.startHub({ storePath, limits });
    const { payer, payee, ach, bch } = await pair(w, 2, 3);
    const key = newKey();
    const hash = hashPreimage(key);
    let claim: (() => Promise<unknown>) | undefined;
    bch.onConditionalPayment((p) => {
      claim = () => p.claim(key);
    });
    // The lock expires by the chain's clock, which runs ahead of the wall clock on this busy EDR chain: leave room.
    const ahead = Number((await w.chain.provider.getBlock('latest'))!.timestamp) - Math.floor(Date.now() / 1000);
    const handle = ach.pay(555n, { to: payee.address, lock: { hash, expiresIn: Math.max(ahead, 0) + 8 } });
    await handle.locked;
    const expiry = locksOf(hub, ach.channelId)[0]!.expiry;
    await waitFor(() => claim !== undefined);
    // A is away, so the hub's claim is not taken: its guard reveals the preimage on-chain 1 s (its margin) before A's
    // lock expires.
    await payer.disconnect();
    await claim!();
    const reader = new Adjudicator(w.adjudicator, w.chain.provider);
    let revealedAt = 0n;
    const end = Date.now() + 60_000;
    while (revealedAt === 0n && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 100));
      revealedAt = await reader.revealedAt(hash);
    }
    expect(revealedAt).toBeGreaterThan(0n);
    expect(revealedAt).toBeLessThanOrEqual(expiry);
    await payee.disconnect();
    await hub.close();
    w.hub = undefined;

    // Past A's expiry by the wall clock (both the hub and A go by it), the hub restarts and A comes back: A proposes
    // taking its lock back, the hub refuses (LOCK_CLAIMED) and shows its claim, which A takes (on-chain in time).
    await waitFor(() => Date.now() / 1000 > Number(expiry) + 1, 60_000);
    const restarted = await w.startHub({ storePath, limits });
    const again = await w.client(2);
    await waitFor(() => state(restarted, ach.channelId).lockedByDevice === 0n, 15_000);
    expect(state(restarted, ach.channelId)).toMatchObject({ paidByDevice: 555n, lockedByDevice: 0n, paidByHub: 0n });
    await waitFor(() => again.channel(ach.channelId)!.latest.state.paidByDevice === 555n);
    expect(again.channel(ach.channelId)!.balance()).toMatchObject({ paid: 555n, settled: 1_000_000n - 555n });
    expect(state(restarted, bch.channelId)).toMatchObject({ paidByHub: 555n, lockedByHub: 0n });
    await again.disconnect();
    await restarted.close();
    w.hub = undefined;
  }, 150_000);
});
