import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPreimage, lockOutcome } from '@trickle/protocol/locks';
import { Adjudicator } from '@trickle/chain/adjudicator';
import { balanceOf } from '@trickle/chain/erc20';
import type { Bytes32, ChannelId, State } from '@trickle/protocol/types';
import type { Hub } from '@trickle/hub/hub';
import { TrickleError } from '@trickle/protocol/errors';
import { fileChannelStore, type ChannelStore, type DeviceChannelRecord } from '@trickle/client/store';
import type { ClientChannel, ConditionalSettlement } from '@trickle/client/channel';
import { readmeRegion } from './helpers/readme-region.js';
import { createWorld, type World } from './helpers/harness.js';
import { leaveRunning, waitFor } from './helpers/wait.js';

/** These tests run locks of seconds (to see them expire): their devices take locks that short (`minLockSeconds`). */
const SHORT_LOCKS = { minLockSeconds: 0 };

/**
 * Conditional transfers routed through a real hub on a real chain (EDR): device A locks toward the hub with expiry
 * T, the hub locks toward B with T − Δ (Δ = challenge duration 2 s + margin 1 s here), B claims with the preimage,
 * the hub claims from A with it. Every outcome is checked to the base unit on both channels.
 */
const CHALLENGE = 2n;
const limits = { lockMarginSeconds: 1 };
const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

/** Channels of A (paying) and B (paid, with a hub deposit) on the running hub. */
async function pair(w: World, a: number, b: number) {
  const payer = await w.client(a);
  const payee = await w.client(b);
  const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
  const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
  await w.hubDeposit(bch.channelId, 1_000_000n);
  return { payer, payee, ach, bch };
}
const state = (hub: Hub, id: ChannelId) => hub.channels.get(id)!.latest.state;
const locksOf = (hub: Hub, id: ChannelId) => hub.channels.get(id)!.locks ?? [];

/**
 * A seller (with a hub deposit) whose credit guard refuses a conditional payment below its price of 1,000 before its
 * device holds the lock; `refused` lists the locks it refused.
 */
async function sellerAt(w: World, index: number) {
  const refused: { amount: bigint; hash: Bytes32 }[] = [];
  const seller = await w.client(index, {
    creditGuard: ({ lock }) => {
      if (lock && lock.amount < 1_000n) {
        refused.push({ amount: lock.amount, hash: lock.hash });
        throw new TrickleError('INVALID_ARGUMENT', 'below the price of this offer');
      }
    },
  });
  const sch = await seller.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
  await w.hubDeposit(sch.channelId, 1_000_000n);
  return { seller, sch, refused };
}

/**
 * A buyer's conditional payment, sent again while the hub still refuses it as blocked by another route on its hash
 * to the payee (INVALID_ARGUMENT: a refused route frees it once its refusal is recorded); a refused payment leaves
 * the buyer's channel as it was. @returns the accepted payment's handle
 */
async function buyOnce<H extends { locked: Promise<unknown>; result: Promise<unknown> }>(
  pay: () => H,
): Promise<{ handle: H }> {
  for (let attempt = 1; ; attempt++) {
    const handle = pay();
    try {
      await handle.locked;
      return { handle }; // not the handle itself: it is a thenable
    } catch (e) {
      const code = (e as { code?: string }).code;
      leaveRunning(handle.result, code ?? ''); // refused as `locked` was
      if (code !== 'INVALID_ARGUMENT' || attempt >= 100) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

describe('conditional transfers through the hub', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ client: SHORT_LOCKS });
  });
  afterAll(async () => w?.close());

  it('happy path: B claims with the preimage, the hub claims from A; both channels move exactly the amount', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-happy'), limits });
    const { payee, ach, bch } = await pair(w, 2, 3);
    const key = newKey();
    const offered: { amount: bigint; expiresAt: bigint; hash: Bytes32 }[] = [];
    const first = bch.onConditionalPayment((p) => {
      offered.push({ amount: p.amount, expiresAt: p.expiresAt, hash: p.hash });
      first();
      void p.claim(key);
    });
    const handle = ach.pay(700n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await expect(handle.locked).resolves.toMatchObject({ amount: 700n, paidByDevice: 0n });
    await expect(handle).resolves.toEqual({ status: 'claimed', preimage: key });
    // B was offered the lock with the hub's earlier expiry: T − (challenge 2 s + margin 1 s).
    expect(offered).toEqual([{ amount: 700n, expiresAt: handle.expiresAt - 3n, hash: hashPreimage(key) }]);
    await waitFor(() => state(hub, bch.channelId).paidByHub === 700n && bch.latest.state.paidByHub === 700n);
    expect(state(hub, ach.channelId)).toMatchObject({
      paidByDevice: 700n,
      paidByHub: 0n,
      lockedByDevice: 0n,
      lockedByHub: 0n,
    });
    expect(state(hub, bch.channelId)).toMatchObject({
      paidByDevice: 0n,
      paidByHub: 700n,
      lockedByDevice: 0n,
      lockedByHub: 0n,
    });
    expect(ach.balance()).toMatchObject({ paid: 700n, received: 0n, settled: 1_000_000n - 700n });
    expect(bch.balance()).toMatchObject({ paid: 0n, received: 700n, settled: 1_000_000n + 700n });
    expect(ach.locks).toEqual([]);
    expect(bch.locks).toEqual([]);
    // A wrong preimage is refused (BAD_PREIMAGE), and nothing moves.
    const key2 = newKey();
    const stuck: Promise<unknown>[] = [];
    const unsubscribe = bch.onConditionalPayment((p) =>
      stuck.push(p.claim(newKey()).catch((e: { code: string }) => e.code)),
    );
    const h2 = ach.pay(5n, { to: payee.address, lock: { hash: hashPreimage(key2), expiresIn: 60 } });
    await h2.locked;
    await waitFor(() => stuck.length === 1);
    expect(await stuck[0]).toBe('BAD_PREIMAGE');
    await waitFor(() => state(hub, bch.channelId).lockedByHub === 5n); // B's countersignature of the lock reached the hub
    expect(state(hub, bch.channelId)).toMatchObject({ paidByHub: 700n, lockedByHub: 5n });
    unsubscribe();
    // A lock that leaves the hub too little time is refused up front.
    const short = ach.pay(5n, { to: payee.address, lock: { hash: hashPreimage(newKey()), expiresIn: 3 } });
    await expect(short.locked).rejects.toMatchObject({ code: 'EXPIRY_TOO_SHORT' });
    await expect(short.result).rejects.toMatchObject({ code: 'EXPIRY_TOO_SHORT' });
    await hub.close();
    w.hub = undefined;
  });

  it('B offline after the hub locked: the locks expire on both channels and A is refunded exactly', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-offline'), limits });
    const { payer, payee, ach, bch } = await pair(w, 4, 5);
    const key = newKey();
    let seen = false;
    bch.onConditionalPayment(() => {
      seen = true; // B never claims, and goes offline
    });
    const handle = ach.pay(900n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 7 } });
    await handle.locked;
    await waitFor(() => seen && locksOf(hub, bch.channelId).length === 1);
    await payee.disconnect();
    await expect(handle.result).resolves.toEqual({ status: 'refunded' });
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 0n, paidByHub: 0n, lockedByDevice: 0n });
    expect(ach.balance()).toMatchObject({ paid: 0n, settled: 1_000_000n });
    // B comes back: the hub takes its own lock back (B countersigns, past the expiry); B received nothing.
    const back = await w.client(5);
    await waitFor(() => locksOf(hub, bch.channelId).length === 0, 10_000);
    expect(state(hub, bch.channelId)).toMatchObject({ paidByHub: 0n, lockedByHub: 0n });
    await waitFor(() => back.channel(bch.channelId)!.latest.state.lockedByHub === 0n);
    expect(back.channel(bch.channelId)!.balance()).toMatchObject({ received: 0n, settled: 1_000_000n });
    await payer.disconnect();
    await hub.close();
    w.hub = undefined;
  });

  it('A disconnects after locking: B is paid, and the hub claims from A when A is back', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-a-away'), limits });
    const { payer, payee, ach, bch } = await pair(w, 6, 7);
    const key = newKey();
    let claim: (() => Promise<unknown>) | undefined;
    bch.onConditionalPayment((p) => {
      claim = () => p.claim(key);
    });
    const handle = ach.pay(1_234n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await handle.locked;
    await waitFor(() => claim !== undefined);
    await payer.disconnect();
    await claim!();
    expect(bch.balance().received).toBe(1_234n);
    // The hub holds the preimage and A's lock, and cannot claim yet.
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 0n, lockedByDevice: 1_234n });
    const again = await w.client(6);
    await waitFor(() => state(hub, ach.channelId).paidByDevice === 1_234n, 10_000);
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 1_234n, lockedByDevice: 0n, paidByHub: 0n });
    await waitFor(() => again.channel(ach.channelId)!.latest.state.paidByDevice === 1_234n);
    expect(again.channel(ach.channelId)!.balance()).toMatchObject({ paid: 1_234n, settled: 1_000_000n - 1_234n });
    expect(state(hub, bch.channelId)).toMatchObject({ paidByHub: 1_234n, lockedByHub: 0n });
    // Both close cooperatively on-chain: the wallets get exactly their deposit less / plus the payment.
    const wallet = async (i: number) => balanceOf(w.chain.provider, w.token, w.chain.addresses[i]!);
    const [a0, b0] = [await wallet(6), await wallet(7)];
    await again.close(ach.channelId);
    await payee.close(bch.channelId);
    expect((await wallet(6)) - a0).toBe(1_000_000n - 1_234n);
    expect((await wallet(7)) - b0).toBe(1_000_000n + 1_234n);
    await payee.disconnect();
    await hub.close();
    w.hub = undefined;
  });

  it('the hub restarts after B claimed and before it claimed from A: A still pays exactly once', async () => {
    const storePath = join(w.dir, 'hub-restart-locks');
    const hub = await w.startHub({ storePath, limits });
    const { payer, payee, ach, bch } = await pair(w, 8, 9);
    const key = newKey();
    let claim: (() => Promise<unknown>) | undefined;
    bch.onConditionalPayment((p) => {
      claim = () => p.claim(key);
    });
    const handle = ach.pay(4_321n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await handle.locked;
    await waitFor(() => claim !== undefined);
    // A is away, so the hub cannot claim from it before it stops; B's claim lands and the preimage is durable.
    await payer.disconnect();
    await claim!();
    await waitFor(() => state(hub, bch.channelId).paidByHub === 4_321n); // B's countersignature is durable at the hub
    await payee.disconnect();
    await hub.close();

    const restarted = await w.startHub({ storePath, limits });
    expect(state(restarted, ach.channelId)).toMatchObject({ paidByDevice: 0n, lockedByDevice: 4_321n });
    const again = await w.client(8);
    await waitFor(() => state(restarted, ach.channelId).paidByDevice === 4_321n, 10_000);
    await new Promise((r) => setTimeout(r, 300)); // a second claim would have landed by now
    expect(state(restarted, ach.channelId)).toMatchObject({ paidByDevice: 4_321n, lockedByDevice: 0n, paidByHub: 0n });
    expect(state(restarted, bch.channelId)).toMatchObject({ paidByHub: 4_321n, lockedByHub: 0n });
    await waitFor(() => again.channel(ach.channelId)!.latest.state.paidByDevice === 4_321n);
    expect(again.channel(ach.channelId)!.balance()).toMatchObject({ paid: 4_321n, settled: 1_000_000n - 4_321n });
    await restarted.close();
    w.hub = undefined;
  });
  it('B gives the lock back before its expiry: the hub gives A’s lock back at once, nothing moves, and the hash is free for a new route B claims', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-give-back'), limits });
    const { payer, payee, ach, bch } = await pair(w, 10, 11);
    const key = newKey();
    const hash = hashPreimage(key);
    const given: Promise<State>[] = [];
    const stop = bch.onConditionalPayment((p) => given.push(p.giveBack().then((s) => s.state)));
    const handle = ach.pay(800n, { to: payee.address, lock: { hash, expiresIn: 600 } });
    await handle.locked;
    // Refunded long before its expiry (600 s): the payee gave the hub's lock back, so the hub gave A's back.
    await expect(handle.result).resolves.toEqual({ status: 'refunded' });
    expect(BigInt(Math.floor(Date.now() / 1000))).toBeLessThan(handle.expiresAt - 500n);
    await expect(given[0]).resolves.toMatchObject({ paidByHub: 0n, lockedByHub: 0n });
    await waitFor(() => state(hub, ach.channelId).lockedByDevice === 0n, 10_000);
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 0n, paidByHub: 0n, lockedByDevice: 0n });
    expect(state(hub, bch.channelId)).toMatchObject({ paidByDevice: 0n, paidByHub: 0n, lockedByHub: 0n });
    expect([ach.locks, bch.locks]).toEqual([[], []]);
    expect(ach.balance()).toMatchObject({ paid: 0n, settled: 1_000_000n });
    // Gone from B's channel: a claim now is UNKNOWN_LOCK, as is giving back a lock B does not hold.
    await expect(bch.claim(hash, key)).rejects.toMatchObject({ code: 'UNKNOWN_LOCK' });
    await expect(bch.giveBack(hashPreimage(newKey()))).rejects.toMatchObject({ code: 'UNKNOWN_LOCK' });
    stop();
    // The route is over: a new one to B on the same hash is accepted, and B claims it this time; A pays it once.
    bch.onConditionalPayment((p) => void p.claim(key));
    const again = ach.pay(800n, { to: payee.address, lock: { hash, expiresIn: 600 } });
    await expect(again.result).resolves.toEqual({ status: 'claimed', preimage: key });
    await waitFor(() => state(hub, ach.channelId).paidByDevice === 800n && bch.latest.state.paidByHub === 800n);
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 800n, lockedByDevice: 0n, paidByHub: 0n });
    expect(ach.balance()).toMatchObject({ paid: 800n, settled: 1_000_000n - 800n });
    await Promise.all([payer, payee].map((c) => c.disconnect()));
    await hub.close();
    w.hub = undefined;
  });
});

/** In a world of its own: the chain's clock runs ahead of the wall clock by the blocks mined before, so this waits less. */
describe('conditional transfers: a payer that stays away', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4, client: SHORT_LOCKS });
  });
  afterAll(async () => w?.close());

  it('A stays away past its expiry after B was paid: the hub reveals the preimage on-chain in time and refuses the lock’s return; A back takes the hub’s claim (revealed in time) and the lock leaves both sides, paid once', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-a-gone'), limits });
    const { payer, payee, ach, bch } = await pair(w, 2, 3);
    const key = newKey();
    bch.onConditionalPayment((p) => void p.claim(key));
    // The lock expires by the chain's clock, which runs ahead of the wall clock on this busy EDR chain: leave room.
    const ahead = Number((await w.chain.provider.getBlock('latest'))!.timestamp) - Math.floor(Date.now() / 1000);
    const handle = ach.pay(2_000n, {
      to: payee.address,
      lock: { hash: hashPreimage(key), expiresIn: Math.max(ahead, 0) + 8 },
    });
    await handle.locked;
    await payer.disconnect(); // A is gone before the hub can claim
    await waitFor(() => state(hub, bch.channelId).paidByHub === 2_000n); // B was paid
    const lock = locksOf(hub, ach.channelId)[0]!;
    const adjudicator = new Adjudicator(w.adjudicator, w.chain.provider);
    await waitFor(() => Date.now() / 1000 > Number(lock.expiry) + 1, 60_000);
    const revealedAt = await adjudicator.revealedAt(lock.hash);
    expect(revealedAt).toBeGreaterThan(0n);
    expect(revealedAt).toBeLessThanOrEqual(lock.expiry);
    expect(lockOutcome(lock, revealedAt, lock.expiry + 1n)).toBe('payee');
    // A comes back after the expiry: the hub refuses the lock's return (LOCK_CLAIMED) and shows its claim again; A
    // finds the preimage on-chain by the expiry (the lock is the hub's at settlement anyway) and takes the claim, so the
    // lock leaves both channels off-chain — before, it stayed pending on both sides until a force close.
    const back = await w.client(2);
    await waitFor(() => locksOf(hub, ach.channelId).length === 0, 30_000);
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 2_000n, lockedByDevice: 0n });
    await waitFor(() => back.channel(ach.channelId)!.locks.length === 0, 30_000);
    expect(back.channel(ach.channelId)!.latest.state).toEqual(state(hub, ach.channelId));
    await payee.disconnect();
    await hub.close();
    w.hub = undefined;
  }, 120_000);
});

/**
 * A buyer's client that goes (a crash, a restart, `disconnect()`) after its lock and before the seller's claim: the
 * hub claims the lock from the buyer's next client on the same store, which must then give the key the buyer paid for.
 */
describe('conditional transfers: the payer’s client is replaced after its lock', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 4, client: SHORT_LOCKS });
  });
  afterAll(async () => w?.close());

  it('A’s next client on the same store gives the preimage the hub claimed A’s lock with (written with the state paying the claim; after another restart too), tells the outcome of a lock no handle waits for, and learns nothing from a claim showing a wrong preimage', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-payer-back'), limits });
    const { payer, payee, ach, bch } = await pair(w, 2, 3);
    const sold = new Map<Bytes32, Bytes32>();
    const claims = new Map<Bytes32, () => Promise<unknown>>();
    bch.onConditionalPayment((p) => claims.set(p.hash, () => p.claim(sold.get(p.hash)!)));
    const lockFor = (amount: bigint, ch: ClientChannel) => {
      const key = newKey();
      sold.set(hashPreimage(key), key);
      return {
        key,
        hash: hashPreimage(key),
        handle: ch.pay(amount, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } }),
      };
    };

    // A locks and its client goes; B claims while A is away.
    const first = lockFor(1_500n, ach);
    await first.handle.locked;
    await waitFor(() => claims.has(first.hash));
    await payer.disconnect();
    await expect(first.handle.result).rejects.toMatchObject({
      code: 'DISCONNECTED',
      details: { hash: first.hash, inFlight: true },
    });
    await claims.get(first.hash)!();
    await waitFor(() => state(hub, bch.channelId).paidByHub === 1_500n);

    // A's next client (no hub restart): the hub claims A's lock from it, and it gives the key.
    const saved: DeviceChannelRecord[] = [];
    const files = fileChannelStore(join(w.dir, 'device-2'));
    const store: ChannelStore = { ...files, save: (r) => (saved.push(r), files.save(r)) };
    const again = await w.client(2, { store });
    const cha = again.channel(ach.channelId)!;
    await waitFor(() => cha.latest.state.paidByDevice === 1_500n, 10_000);
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 1_500n, lockedByDevice: 0n });
    expect(cha.preimageOf(first.hash)).toBe(first.key);
    // On disk before the state paying the claim could leave: every record from the one that signed it on holds it.
    const signedClaim = saved.filter((r) => r.signedVersion >= cha.latest.state.version);
    expect(signedClaim.length).toBeGreaterThan(0);
    for (const r of signedClaim) expect(r.paidPreimages).toContainEqual({ hash: first.hash, preimage: first.key });

    // A second lock, and this client goes too before B claims: the next one listens for the outcome.
    const second = lockFor(700n, cha);
    await second.handle.locked;
    await waitFor(() => claims.has(second.hash));
    await again.disconnect();
    await expect(second.handle.result).rejects.toMatchObject({ code: 'DISCONNECTED' });
    const client = await w.client(2);
    const [channelId, hash, keys] = [ach.channelId, first.hash, new Map<Bytes32, Bytes32>()];
    // #region readme-preimage-of
    const channel = client.channel(channelId)!;
    // The key of a lock the hub claimed while no client of this store ran, or whose handle got DISCONNECTED:
    const key = channel.preimageOf(hash);
    // And those of locks it claims from now on, with no handle waiting:
    channel.onConditionalOutcome((o) => {
      if (o.status === 'claimed') keys.set(o.hash, o.preimage);
    });
    // #endregion readme-preimage-of
    expect(key).toBe(first.key); // after another restart
    const outcomes: ConditionalSettlement[] = [];
    channel.onConditionalOutcome((o) => outcomes.push(o));
    await channel.resync();

    // A claim frame showing a preimage that is not the hash's: refused (BAD_PREIMAGE) as before, nothing learned,
    // stored or paid.
    channel.receive({
      t: 'claim',
      id: 0x7ffffff0,
      channelId: ach.channelId,
      unlock: { hash: second.hash, preimage: newKey() },
    });
    await channel.idle(5_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(channel.preimageOf(second.hash)).toBeUndefined();
    expect(channel.record.paidPreimages).toEqual([{ hash: first.hash, preimage: first.key }]);
    expect(channel.latest.state).toMatchObject({ paidByDevice: 1_500n, lockedByDevice: 700n });
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 1_500n, lockedByDevice: 700n });
    expect(channel.locks.map((l) => l.hash)).toEqual([second.hash]);
    expect(outcomes).toEqual([]);

    await claims.get(second.hash)!();
    await waitFor(() => outcomes.length > 0, 10_000);
    expect(outcomes).toEqual([
      expect.objectContaining({
        status: 'claimed',
        preimage: second.key,
        hash: second.hash,
        amount: 700n,
        channelId: ach.channelId,
      }),
    ]);
    expect(keys.get(second.hash)).toBe(second.key);
    expect(channel.preimageOf(second.hash)).toBe(second.key);
    expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 2_200n, lockedByDevice: 0n, paidByHub: 0n });
    expect(state(hub, bch.channelId)).toMatchObject({ paidByHub: 2_200n, lockedByHub: 0n });
    await payee.disconnect();
    await hub.close();
    w.hub = undefined;

    // packages/client/README.md shows this region word for word.
    const { region, blocks } = readmeRegion(import.meta.url, 'readme-preimage-of', 4);
    expect(blocks).toContain(region);
  });
});

describe('several conditional routes on one hash (a data offer’s, which anyone who saw the offer knows)', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld({ accounts: 16, client: SHORT_LOCKS });
  });
  afterAll(async () => w?.close());

  // A griefer locks 1 unit on an offer's hash toward the SELLER's own device. Were the seller to countersign that lock,
  // its channel (one lock per hash) and the hub's route for it would hold the hash against every buyer of the offer
  // from that seller until the lock's expiry (up to 14 days), and claiming it would sell the key for 1 unit. The
  // seller's credit guard sees the lock's terms and refuses it: the hub's route is dead, frees the hash for the seller,
  // and is never claimed upstream (its payer's lock goes back to the griefer at its expiry).
  it('a griefer’s 1-unit lock on an offer’s hash toward the seller itself does not block a buyer of that offer', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-one-hash-seller'), limits });
    const griefer = await w.client(10);
    const gch = await griefer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const { seller, sch, refused } = await sellerAt(w, 11);
    const payer = await w.client(12);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const key = newKey();
    const hash = hashPreimage(key);
    const offered: bigint[] = [];
    sch.onConditionalPayment((p) => {
      offered.push(p.amount);
      void p.claim(key);
    });
    try {
      const before = sch.latest.state;
      const grief = gch.pay(1n, { to: seller.address, lock: { hash, expiresIn: 30 } });
      await grief.locked;
      await waitFor(() => refused.length === 1, 30_000);
      expect(refused[0]).toMatchObject({ amount: 1n, hash });
      // Refused before the seller held it: its counters are as they were, on both sides (the hub's next state, which
      // the seller countersigned, is one version up and moves nothing: the refused lock is void with it).
      const counters = (s: State) => ({ ...s, version: 0n });
      await waitFor(() => state(hub, sch.channelId).version > before.version, 5_000);
      expect(counters(sch.latest.state)).toEqual(counters(before));
      expect(counters(state(hub, sch.channelId))).toEqual(counters(before));
      const { handle: bought } = await buyOnce(() =>
        ach.pay(1_000n, { to: seller.address, lock: { hash, expiresIn: 600 } }),
      );
      expect(await bought.result).toEqual({ status: 'claimed', preimage: key });
      expect(offered).toEqual([1_000n]);
      // The payer learns the outcome from the hub's proposal, before its countersignature (and the seller's, for the
      // seller's own channel) is back at the hub: the hub's states follow.
      await waitFor(
        () => state(hub, sch.channelId).paidByHub === 1_000n && state(hub, ach.channelId).paidByDevice === 1_000n,
        10_000,
      );
      expect(state(hub, sch.channelId)).toMatchObject({ paidByHub: 1_000n, lockedByHub: 0n });
      expect(state(hub, ach.channelId)).toMatchObject({ paidByDevice: 1_000n, lockedByDevice: 0n });
      // The hub knows the key now, and never claims the griefer's lock with it: it goes back to the griefer.
      await expect(grief.result).resolves.toEqual({ status: 'refunded' });
      expect(state(hub, gch.channelId)).toMatchObject({ paidByDevice: 0n, lockedByDevice: 0n, paidByHub: 0n });
      expect(gch.balance()).toMatchObject({ paid: 0n, settled: 1_000_000n });
    } finally {
      await Promise.all([griefer, payer, seller].map((c) => c.disconnect()));
      await hub.close();
      w.hub = undefined;
    }
  }, 180_000);

  it('the seller refused the griefer’s lock and claimed the buyer’s, and the hub restarts before claiming upstream: only the buyer’s lock is claimed', async () => {
    const storePath = join(w.dir, 'hub-one-hash-seller-restart');
    const hub = await w.startHub({ storePath, limits });
    const griefer = await w.client(13);
    const gch = await griefer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const { seller, sch, refused } = await sellerAt(w, 14);
    const payer = await w.client(15);
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: CHALLENGE });
    const key = newKey();
    const hash = hashPreimage(key);
    let claim: (() => Promise<unknown>) | undefined;
    sch.onConditionalPayment((p) => {
      claim = () => p.claim(key);
    });
    const grief = gch.pay(1n, { to: seller.address, lock: { hash, expiresIn: 30 } });
    await grief.locked;
    await waitFor(() => refused.length === 1, 30_000);
    // The route is dead: the hub gives the griefer's lock back at once, not at its expiry 30 s on.
    await expect(grief.result).resolves.toEqual({ status: 'refunded' });
    expect(BigInt(Math.floor(Date.now() / 1000))).toBeLessThan(grief.expiresAt - 10n);
    await waitFor(() => state(hub, gch.channelId).lockedByDevice === 0n, 10_000);
    const { handle: bought } = await buyOnce(() =>
      ach.pay(1_000n, { to: seller.address, lock: { hash, expiresIn: 600 } }),
    );
    await waitFor(() => claim !== undefined, 30_000);
    // Both payers away, so the hub cannot claim from either before it stops; the seller's claim is durable.
    await Promise.all([griefer.disconnect(), payer.disconnect()]);
    await claim!();
    await waitFor(() => state(hub, sch.channelId).paidByHub === 1_000n, 30_000);
    expect(state(hub, gch.channelId)).toMatchObject({ lockedByDevice: 0n, paidByDevice: 0n });
    await seller.disconnect();
    await hub.close();
    leaveRunning(bought.result, 'DISCONNECTED'); // its client is gone; the outcome is read from the hub below

    const restarted = await w.startHub({ storePath, limits });
    try {
      const grieferBack = await w.client(13);
      const payerBack = await w.client(15);
      // The buyer's lock is claimed with the seller's preimage, after the restart too.
      await waitFor(() => state(restarted, ach.channelId).paidByDevice === 1_000n, 30_000);
      await waitFor(() => payerBack.channel(ach.channelId)!.latest.state.paidByDevice === 1_000n, 30_000);
      expect(state(restarted, ach.channelId)).toMatchObject({ lockedByDevice: 0n, paidByHub: 0n });
      // The griefer's route is dead (the seller refused its lock): the hub, knowing the key from the seller's claim of
      // the buyer's route, never claims the griefer's lock — it gave it back before the restart.
      await waitFor(() => state(restarted, gch.channelId).lockedByDevice === 0n, 90_000);
      expect(state(restarted, gch.channelId)).toMatchObject({ paidByDevice: 0n, paidByHub: 0n });
      await waitFor(() => grieferBack.channel(gch.channelId)!.locks.length === 0, 30_000);
      expect(grieferBack.channel(gch.channelId)!.latest.state.paidByDevice).toBe(0n);
      expect(state(restarted, sch.channelId)).toMatchObject({ paidByHub: 1_000n, lockedByHub: 0n });
      await Promise.all([grieferBack, payerBack].map((c) => c.disconnect()));
    } finally {
      await restarted.close();
      w.hub = undefined;
    }
  }, 180_000);

  it('the buyer’s payee claims: the hub claims the buyer’s lock, not the griefer’s on the same hash, which goes back to the griefer (given back once the hub’s lock toward the griefer’s payee went back)', async () => {
    const hub = await w.startHub({ storePath: join(w.dir, 'hub-one-hash-online'), limits });
    const griefer = await pair(w, 6, 7);
    const buyer = await pair(w, 8, 9);
    const key = newKey();
    const hash = hashPreimage(key);
    buyer.bch.onConditionalPayment((p) => void p.claim(key));
    try {
      const grief = griefer.ach.pay(1n, { to: griefer.payee.address, lock: { hash, expiresIn: 20 } });
      await grief.locked;
      await waitFor(() => locksOf(hub, griefer.bch.channelId).length === 1, 30_000);
      await expect(
        buyer.ach.pay(1_000n, { to: buyer.payee.address, lock: { hash, expiresIn: 600 } }).result,
      ).resolves.toEqual({ status: 'claimed', preimage: key });
      // Claiming the griefer's lock too would sell it the key for 1 unit: it is taken back at its expiry instead.
      await expect(grief.result).resolves.toEqual({ status: 'refunded' });
      // The outcome reaches the payer with the hub's proposal, before the payer's countersignature is back at the hub.
      await waitFor(() => state(hub, buyer.ach.channelId).paidByDevice === 1_000n, 10_000);
      await waitFor(() => state(hub, griefer.ach.channelId).lockedByDevice === 0n, 10_000);
      expect(state(hub, griefer.ach.channelId)).toMatchObject({ paidByDevice: 0n, lockedByDevice: 0n });
      expect(state(hub, buyer.ach.channelId)).toMatchObject({ paidByDevice: 1_000n, lockedByDevice: 0n });
      expect(state(hub, griefer.bch.channelId).paidByHub).toBe(0n);
      expect(state(hub, buyer.bch.channelId).paidByHub).toBe(1_000n);
    } finally {
      await Promise.all([griefer.payer, griefer.payee, buyer.payer, buyer.payee].map((c) => c.disconnect()));
      await hub.close();
      w.hub = undefined;
    }
  }, 180_000);

  it('the buyer’s payee claims and the hub restarts before claiming upstream: only the buyer’s lock is claimed; the griefer’s lock toward its own device goes back to it at its expiry', async () => {
    const storePath = join(w.dir, 'hub-one-hash');
    const hub = await w.startHub({ storePath, limits });
    const griefer = await pair(w, 2, 3);
    const buyer = await pair(w, 4, 5);
    const key = newKey();
    const hash = hashPreimage(key);
    // The griefer's own device never learns the key, so it cannot claim the hub's lock toward it.
    let claim: (() => Promise<unknown>) | undefined;
    buyer.bch.onConditionalPayment((p) => {
      claim = () => p.claim(key);
    });
    const grief = griefer.ach.pay(1n, { to: griefer.payee.address, lock: { hash, expiresIn: 20 } });
    await grief.locked;
    await waitFor(() => locksOf(hub, griefer.bch.channelId).length === 1, 30_000);
    const bought = buyer.ach.pay(1_000n, { to: buyer.payee.address, lock: { hash, expiresIn: 600 } });
    await bought.locked;
    await waitFor(() => claim !== undefined, 30_000);
    // Both payers away, so the hub cannot claim from either before it stops; the buyer's payee's claim is durable.
    await Promise.all([griefer.payer.disconnect(), buyer.payer.disconnect()]);
    await claim!();
    await waitFor(() => state(hub, buyer.bch.channelId).paidByHub === 1_000n, 30_000);
    expect(locksOf(hub, griefer.bch.channelId)).toHaveLength(1); // the griefer's payee was not paid
    await Promise.all([griefer.payee.disconnect(), buyer.payee.disconnect()]);
    await hub.close();

    const restarted = await w.startHub({ storePath, limits });
    try {
      const grieferBack = await w.client(2);
      const buyerBack = await w.client(4);
      // The buyer's lock is claimed with its payee's preimage, after the restart too.
      await waitFor(() => state(restarted, buyer.ach.channelId).paidByDevice === 1_000n, 30_000);
      await waitFor(() => buyerBack.channel(buyer.ach.channelId)!.latest.state.paidByDevice === 1_000n, 30_000);
      expect(state(restarted, buyer.ach.channelId)).toMatchObject({ lockedByDevice: 0n, paidByHub: 0n });
      // The griefer's lock is not claimed (the hub knows the preimage, but not from the griefer's payee): it goes back
      // to the griefer at its expiry, and the griefer's payee is never paid.
      await waitFor(() => state(restarted, griefer.ach.channelId).lockedByDevice === 0n, 90_000);
      expect(state(restarted, griefer.ach.channelId)).toMatchObject({ paidByDevice: 0n, paidByHub: 0n });
      await waitFor(() => grieferBack.channel(griefer.ach.channelId)!.locks.length === 0, 30_000);
      expect(grieferBack.channel(griefer.ach.channelId)!.latest.state.paidByDevice).toBe(0n);
      expect(state(restarted, griefer.bch.channelId).paidByHub).toBe(0n);
    } finally {
      await restarted.close();
      w.hub = undefined;
    }
  }, 180_000);
});

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
