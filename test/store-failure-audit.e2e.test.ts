import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { hashPreimage } from '@trickle/protocol/locks';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import type { HubStore, StoreWrite } from '@trickle/hub/store/types';
import type { Bytes32, ChannelId } from '@trickle/protocol/types';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';
import { outcomeCode } from './helpers/hub-world.js';
import { flakyDeviceStore, flakyHubStore } from './helpers/flaky-store.js';

/**
 * A routed payment's route record is written after the credit that settles it (to the payee, or the refund to the
 * payer). That write failing must neither take the hub down (an unhandled rejection ends `trickle-hub`), nor pay
 * the credit again: the route's record is written once the store works again.
 */
/** What a payee's `onConditionalPayment` listener is handed (only its claim is used here). */
type ConditionalPayment = { claim(preimage: Bytes32): Promise<unknown> };

const routeFinish = (writes: readonly StoreWrite[], status: 'delivered' | 'refunded') =>
  writes.some((x) => x.kind === 'route' && x.route.status === status);

describe('a routed payment whose finishing route write fails', () => {
  let w: World;
  const arm = {
    status: undefined as 'delivered' | 'refunded' | undefined,
    failures: 0,
    failed: 0,
    payee: undefined as ChannelId | undefined,
  };
  const unhandled: unknown[] = [];
  const onUnhandled = (e: unknown) => unhandled.push(e);
  let store: HubStore;
  beforeAll(async () => {
    w = await createWorld();
    store = flakyHubStore(openLmdbStore({ path: join(w.dir, 'flaky-hub') }), (writes) => {
      // The payee's channel refuses every write while `payee` is set: its credit fails STORE_FAILURE (refunded).
      if (arm.payee && writes.some((x) => x.kind === 'channel' && x.record.channelId === arm.payee)) return true;
      if (!arm.status || !routeFinish(writes, arm.status) || arm.failed >= arm.failures) return false;
      arm.failed++;
      return true;
    });
    await w.startHub({ more: { store } });
  });
  afterAll(async () => w?.close());
  beforeEach(() => {
    unhandled.length = 0;
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(() => {
    process.off('unhandledRejection', onUnhandled);
  });

  it('delivered: no unhandled rejection, the payee is credited once, the route is recorded delivered and the payer gets its receipt', async () => {
    const payer = await w.client(2);
    const payee = await w.client(3);
    const pch = await payer.openChannel({ token: w.token, deposit: 1_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ech.channelId, 100_000n);
    await pch.pay(1_000n, { to: payee.address }); // a first route, to warm up

    Object.assign(arm, { status: 'delivered', failures: 2, failed: 0 });
    const paying = pch.pay(500n, { to: payee.address }).then(
      (r) => r,
      (e: unknown) => e,
    );
    await waitFor(() => arm.failed >= 1, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(unhandled).toEqual([]); // before the fix: the failed write, unhandled (it ends `trickle-hub`)
    const receipt = await paying;
    expect(receipt).toMatchObject({ paymentId: expect.any(String) }); // before the fix: TIMEOUT, no receipt
    expect(arm.failed).toBe(2);
    expect(ech.latest.state.paidByHub).toBe(1_500n);
    expect(w.hub!.channels.get(ech.channelId)!.latest.state.paidByHub).toBe(1_500n);
    expect(w.hub!.channels.get(pch.channelId)!.latest.state.paidByDevice).toBe(1_500n);
    Object.assign(arm, { status: undefined });
    await pch.pay(1n, { to: payee.address }); // the channels work on
    expect(ech.latest.state.paidByHub).toBe(1_501n);
  });

  it('a conditional route: its payer’s lock claimed, the failed "delivered" write is retried until the route is recorded', async () => {
    const payer = await w.client(10);
    const payee = await w.client(11);
    const pch = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await w.hubDeposit(ech.channelId, 100_000n);
    const key = `0x${randomBytes(32).toString('hex')}` as Bytes32;
    ech.onConditionalPayment((p) => void (p as ConditionalPayment).claim(key));
    Object.assign(arm, { status: 'delivered', failures: 2, failed: 0 });
    const handle = pch.pay(400n, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 300 } });
    await expect(handle.result).resolves.toEqual({ status: 'claimed', preimage: key });
    await waitFor(() => arm.failed >= 2, 10_000);
    let pending = true;
    for (const until = Date.now() + 10_000; pending && Date.now() < until;) {
      pending = (await store.loadPendingRoutes()).some((r) => r.lock?.hash === hashPreimage(key));
      if (pending) await new Promise((r) => setTimeout(r, 50));
    }
    expect(pending).toBe(false); // before the fix: logged once and left pending until a restart
    expect(unhandled).toEqual([]);
    expect(w.hub!.channels.get(pch.channelId)!.latest.state.paidByDevice).toBe(400n);
    Object.assign(arm, { status: undefined });
  });

  it('refunded: the payer is refunded once, not once per failed attempt of the route write', async () => {
    const payer = await w.client(4);
    const payee = await w.client(5);
    const pch = await payer.openChannel({ token: w.token, deposit: 1_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ech.channelId, 100_000n);
    await w.hubDeposit(pch.channelId, 100_000n);

    // The payee's credit fails STORE_FAILURE (its channel's writes fail): the hub refunds the payer; the route's
    // "refunded" write fails twice after the refund landed.
    Object.assign(arm, { status: 'refunded', failures: 2, failed: 0, payee: ech.channelId });
    const paying = pch.pay(700n, { to: payee.address }).then(
      (r) => r,
      (e: unknown) => e,
    );
    await waitFor(() => arm.failed >= 2, 15_000);
    await paying;
    arm.payee = undefined;
    await waitFor(() => !w.hub!.channels.isFrozen(ech.channelId), 10_000);
    await new Promise((r) => setTimeout(r, 1_500)); // any retry of the refund would have landed by now
    expect(unhandled).toEqual([]);
    const hubView = w.hub!.channels.get(pch.channelId)!.latest.state;
    expect(hubView.paidByDevice).toBe(700n);
    expect(hubView.paidByHub).toBe(700n); // refunded once (before the fix: 1,400 — once per attempt)
    expect(w.hub!.channels.get(ech.channelId)!.latest.state.paidByHub).toBe(0n);
    Object.assign(arm, { status: undefined });
    await pch.pay(1n, { to: payee.address }); // the channels work on
    expect(ech.latest.state.paidByHub).toBe(1n);
  });
});

/**
 * A hashlocked route whose payee's claim the hub cannot commit, and a payee whose own store refuses the claim's
 * preimage: nothing moves on either channel until the claim is durable on both sides, then the payee is paid and
 * the payer charged exactly once.
 */
describe('a conditional route whose claim a store refuses', () => {
  let w: World;
  const failing = new Set<ChannelId>();
  beforeAll(async () => {
    w = await createWorld();
    const store = flakyHubStore(openLmdbStore({ path: join(w.dir, 'flaky-hub-locks') }), failing);
    await w.startHub({ more: { store }, limits: { lockMarginSeconds: 1 } });
  });
  afterAll(async () => w?.close());

  const newKey = () => `0x${randomBytes(32).toString('hex')}` as Bytes32;

  /** A payer's lock routed to a payee, offered to it and held by the hub toward it. */
  const lockedToPayee = async (
    payer: Awaited<ReturnType<World['client']>>,
    payee: Awaited<ReturnType<World['client']>>,
    amount: bigint,
  ) => {
    const ach = await payer.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    const bch = await payee.openChannel({ token: w.token, deposit: 1_000_000n, challengeDuration: 2n });
    await w.hubDeposit(bch.channelId, 1_000_000n);
    const key = newKey();
    let offered: ConditionalPayment | undefined;
    bch.onConditionalPayment((p) => (offered = p));
    const handle = ach.pay(amount, { to: payee.address, lock: { hash: hashPreimage(key), expiresIn: 60 } });
    await handle.locked;
    await waitFor(() => offered !== undefined && (w.hub!.channels.get(bch.channelId)!.locks ?? []).length === 1);
    return { ach, bch, key, handle, offered: offered! };
  };

  it('the hub’s commit of the claim fails: STORE_FAILURE to the payee, nothing moves; after the thaw the claim pays once', async () => {
    const payer = await w.client(6);
    const payee = await w.client(7);
    const { ach, bch, key, handle, offered } = await lockedToPayee(payer, payee, 800n);

    failing.add(bch.channelId);
    expect(await outcomeCode(offered.claim(key))).toBe('STORE_FAILURE');
    await new Promise((r) => setTimeout(r, 300));
    expect(w.hub!.channels.get(bch.channelId)!.latest.state).toMatchObject({ paidByHub: 0n, lockedByHub: 800n });
    expect(w.hub!.channels.get(ach.channelId)!.latest.state).toMatchObject({ paidByDevice: 0n, lockedByDevice: 800n });

    failing.delete(bch.channelId);
    await waitFor(() => !w.hub!.channels.isFrozen(bch.channelId), 10_000);
    // The device resyncs the claim it stored (or is asked again): either way it lands once.
    const again = await outcomeCode(offered.claim(key));
    expect(['resolved', 'UNKNOWN_LOCK']).toContain(again);
    await expect(handle.result).resolves.toEqual({ status: 'claimed', preimage: key });
    await waitFor(() => w.hub!.channels.get(ach.channelId)!.latest.state.paidByDevice === 800n, 10_000);
    await waitFor(() => bch.latest.state.paidByHub === 800n, 10_000);
    // The payee countersigns the hub's claim state before the hub commits it (its ack is in flight): wait for both.
    await waitFor(() => w.hub!.channels.get(bch.channelId)!.latest.state.paidByHub === 800n, 10_000);
    expect(w.hub!.channels.get(bch.channelId)!.latest.state).toMatchObject({ paidByHub: 800n, lockedByHub: 0n });
    expect(w.hub!.channels.get(ach.channelId)!.latest.state).toMatchObject({ paidByDevice: 800n, lockedByDevice: 0n });
    await ach.pay(3n, { to: payee.address });
    expect(bch.latest.state.paidByHub).toBe(803n);
  });

  it('the payee’s store refuses the preimage: claim() is STORE_FAILURE, nothing is shown to the hub; it claims once the store works', async () => {
    const { store, failing } = flakyDeviceStore(join(w.dir, 'flaky-payee'));
    const payer = await w.client(8);
    const payee = await w.client(9, { store });
    const { ach, bch, key, handle, offered } = await lockedToPayee(payer, payee, 900n);

    failing.on = true;
    expect(await outcomeCode(offered.claim(key))).toBe('STORE_FAILURE');
    await new Promise((r) => setTimeout(r, 300));
    expect(w.hub!.channels.get(bch.channelId)!.latest.state).toMatchObject({ paidByHub: 0n, lockedByHub: 900n });
    expect(w.hub!.channels.get(ach.channelId)!.latest.state).toMatchObject({ paidByDevice: 0n, lockedByDevice: 900n });
    expect(await store.load(bch.channelId)).toBeDefined();

    failing.on = false;
    await waitFor(() => !bch.frozen, 10_000);
    expect(await outcomeCode(offered.claim(key))).toBe('resolved');
    await expect(handle.result).resolves.toEqual({ status: 'claimed', preimage: key });
    await waitFor(() => w.hub!.channels.get(ach.channelId)!.latest.state.paidByDevice === 900n, 10_000);
    expect(bch.latest.state).toMatchObject({ paidByHub: 900n, lockedByHub: 0n });
    // claim() resolves when the payee countersigns the hub's claim state; the hub commits it when that ack arrives.
    await waitFor(() => w.hub!.channels.get(bch.channelId)!.latest.state.paidByHub === 900n, 10_000);
    expect(w.hub!.channels.get(bch.channelId)!.latest.state).toMatchObject({ paidByHub: 900n, lockedByHub: 0n });
  });
});
