import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import { payForReceipt } from '@trickle/client';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

/**
 * A hub that crashed after a routed payment's credit to the payee was countersigned but before the route was
 * marked delivered does not pay the payee again on restart: the credit's marker is written with the state.
 */
describe('routed payment across a hub restart', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
  });
  afterAll(async () => w?.close());

  it('a delivered credit left "pending" by a crash is finished as delivered, not paid twice', async () => {
    const storePath = join(w.dir, 'hub-restart');
    await w.startHub({ storePath });
    const payer = await w.client(2);
    const payee = await w.client(3);
    const pch = await payer.openChannel({ token: w.token, deposit: 5_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ech.channelId, 2_000_000n);
    const receipt = await pch.pay(1_000n, { to: payee.address });
    payer.disconnect();
    payee.disconnect();
    await w.hub!.close();

    // Simulate the crash window: the route record still says pending.
    const store = openLmdbStore({ path: storePath });
    await store.commit([
      {
        kind: 'route',
        route: {
          paymentId: receipt.paymentId!,
          from: payer.address,
          to: payee.address,
          fromChannel: pch.channelId,
          amount: 1_000n,
          status: 'pending',
        },
      },
    ]);
    expect((await store.loadPendingRoutes()).length).toBe(1);
    await store.close();

    const hub = await w.startHub({ storePath });
    expect(hub.channels.get(ech.channelId)!.latest.state.paidByHub).toBe(1_000n);
    await hub.close();
    const after = openLmdbStore({ path: storePath });
    expect(await after.loadPendingRoutes()).toEqual([]);
    await after.close();
    w.hub = undefined;
  });
  it('a routed credit outstanding when the hub stopped is delivered once after the restart, not twice', async () => {
    const storePath = join(w.dir, 'hub-restart-outstanding');
    await w.startHub({ storePath });
    const payer = await w.client(4);
    // The payee is connected but never countersigns a credit: the hub stops with the routed credit outstanding.
    const payee = await w.client(5, { creditGuard: () => new Promise<void>(() => {}) });
    const pch = await payer.openChannel({ token: w.token, deposit: 5_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ech.channelId, 2_000_000n);
    // Never answered by this hub; the payer's disconnect answers it (checked below).
    const paying = pch.pay(1_000n, { to: payee.address }).then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await waitFor(() => w.hub!.channels.get(ech.channelId)?.outgoing !== undefined); // signed and durable, never answered
    await w.hub!.close();
    await payee.disconnect();
    await payer.disconnect();
    // It had left the device: the next connect's sync would show it paid.
    expect(await paying).toMatchObject({ code: 'DISCONNECTED', details: { inFlight: true } });

    const hub = await w.startHub({ storePath });
    await w.client(5); // the payee is back
    await waitFor(() => hub.channels.get(ech.channelId)!.latest.state.paidByHub >= 1_000n, 10_000);
    await new Promise((res) => setTimeout(res, 500)); // a second credit would have landed by now
    expect(hub.channels.get(ech.channelId)!.latest.state.paidByHub).toBe(1_000n);
    expect(hub.channels.get(ech.channelId)!.outgoing).toBeUndefined();
    await hub.close();
    w.hub = undefined;
    const store = openLmdbStore({ path: storePath });
    expect(await store.loadPendingRoutes()).toEqual([]);
    await store.close();
  });

  it('a routed credit outstanding on one of the payee’s two channels is delivered there after the restart, not again on the other', async () => {
    const storePath = join(w.dir, 'hub-restart-two-channels');
    await w.startHub({ storePath });
    const payer = await w.client(8);
    const payee = await w.client(9, { creditGuard: () => new Promise<void>(() => {}) });
    const pch = await payer.openChannel({ token: w.token, deposit: 5_000_000n });
    const x = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(x.channelId, 2_000_000n);
    // Paid on X, the payee's only channel then; held unanswered when the hub stops.
    const paying = pch.pay(1_000n, { to: payee.address }).then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await waitFor(() => w.hub!.channels.get(x.channelId)?.outgoing !== undefined);
    // A second channel Y with the same hub deposit: once the hub is back, Y has more room than X (whose proposal holds
    // 1,000 of it), so a route forwarded afresh would take Y.
    const y = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(y.channelId, 2_000_000n);
    await w.hub!.close();
    await payee.disconnect();
    await payer.disconnect();
    expect(await paying).toMatchObject({ code: 'DISCONNECTED' });

    const hub = await w.startHub({ storePath });
    await w.client(9);
    await waitFor(() => hub.channels.get(x.channelId)!.latest.state.paidByHub >= 1_000n, 10_000);
    await new Promise((res) => setTimeout(res, 500)); // a second credit would have landed by now
    expect(hub.channels.get(x.channelId)!.latest.state.paidByHub).toBe(1_000n);
    expect(hub.channels.get(y.channelId)!.latest.state.paidByHub).toBe(0n);
    expect(hub.channels.get(y.channelId)!.outgoing).toBeUndefined();
    await hub.close();
    w.hub = undefined;
  });

  it('a paid-for receipt whose route the hub finishes after a restart still comes, signed by the hub', async () => {
    const storePath = join(w.dir, 'hub-restart-receipt');
    const first = await w.startHub({ storePath });
    const payer = await w.client(6);
    // The payee holds the routed credit unanswered until the hub stops: the route is finished by the next hub.
    const payee = await w.client(7, { creditGuard: () => new Promise<void>(() => {}) });
    const pch = await payer.openChannel({ token: w.token, deposit: 5_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ech.channelId, 2_000_000n);
    const expiry = BigInt(Math.floor(Date.now() / 1000) + 600);
    const paying = payForReceipt(payer, pch, { to: payee.address, amount: 1_000n, resource: 'meter-9/kwh', expiry });
    await waitFor(() => first.channels.get(ech.channelId)?.outgoing !== undefined);
    await first.close();
    await payee.disconnect();

    // Same store, same port: the payer's client reconnects by itself; the payee comes back and countersigns.
    const hub = await w.startHub({ storePath, more: { port: first.port } });
    await w.client(7);
    const signed = await paying; // payForReceipt checks the hub's signature
    expect(signed.receipt).toMatchObject({
      payer: payer.address,
      payee: payee.address,
      token: w.token,
      amount: 1_000n,
      expiry,
    });
    expect(hub.channels.get(ech.channelId)!.latest.state.paidByHub).toBe(1_000n);
    await hub.close();
    w.hub = undefined;
  });
});
