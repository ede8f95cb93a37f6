import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { open as openLmdb } from 'lmdb';
import { openLmdbStore } from '@trickle/hub/store/lmdb';
import type { Hub } from '@trickle/hub';
import { createWorld, type World } from './helpers/harness.js';
import { waitFor } from './helpers/wait.js';

const delivered = async (hub: Hub) =>
  (await hub.metrics.routes.get()).values.find((v) => v.labels['result'] === 'delivered')?.value ?? 0;
/** Poll an asynchronous condition (a metric's value) until it holds, for at most 10 s. */
async function until(cond: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + 10_000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
const prunedCount = async (hub: Hub) => (await hub.metrics.routesPruned.get()).values[0]?.value ?? 0;

/**
 * A real hub on LMDB with its clock injected: routed payments that finished are deleted (route record, credit
 * markers) once the clock passes the retention window; a route still pending keeps its record.
 */
describe('route retention', () => {
  let w: World;
  beforeAll(async () => {
    w = await createWorld();
  });
  afterAll(async () => w?.close());

  it('deletes finished routes past the window, keeps a pending one, and the hub restarts on what is left', async () => {
    const storePath = join(w.dir, 'hub-retention');
    let now = Date.now();
    const routeRetention = { hours: 1, everyMs: 20, now: () => now };
    const hub = await w.startHub({ storePath, more: { routeRetention } });
    const payer = await w.client(2);
    const payee = await w.client(3);
    // This payee never countersigns a credit: its route stays pending.
    const holder = await w.client(4, { creditGuard: () => new Promise<void>(() => {}) });
    const pch = await payer.openChannel({ token: w.token, deposit: 5_000_000n });
    const ech = await payee.openChannel({ token: w.token, deposit: 1_000_000n });
    const hch = await holder.openChannel({ token: w.token, deposit: 1_000_000n });
    await w.hubDeposit(ech.channelId, 2_000_000n);
    await w.hubDeposit(hch.channelId, 2_000_000n);
    const first = await pch.pay(1_000n, { to: payee.address });
    const second = await pch.pay(2_000n, { to: payee.address });
    // Both finished (their outcome written) before the clock moves: `pay` resolves on the payer's own state.
    await until(async () => (await delivered(hub)) === 2);
    // Answered only once the restarted hub has delivered it: kept, and its outcome checked at the end.
    const held = pch.pay(3_000n, { to: holder.address });
    await waitFor(() => hub.channels.get(hch.channelId)?.outgoing !== undefined); // pending, durable

    // Past the window (the pruner runs every 20 ms), the two finished routes go; the pending one does not.
    expect(await prunedCount(hub)).toBe(0);
    now += 61 * 60_000;
    await until(async () => (await prunedCount(hub)) >= 2);
    const pendingId = hub.channels.get(hch.channelId)!.outgoing!.paymentId!;
    await hub.close();
    w.hub = undefined;

    // Read beside the store: only the pending route's record is left, and no marker of the pruned payments.
    const env = openLmdb({ path: storePath, readOnly: true });
    const routeIds = [...env.openDB<Buffer, string>({ name: 'routes', encoding: 'binary' }).getKeys()];
    await env.close();
    expect(routeIds).toEqual([pendingId]);
    const store = openLmdbStore({ path: storePath });
    const markers = (await store.loadMetaPrefix('credited/')).map((e) => e.key);
    expect(markers.filter((k) => k.includes(first.paymentId!) || k.includes(second.paymentId!))).toEqual([]);
    expect((await store.loadPendingRoutes()).map((r) => r.paymentId)).toEqual([pendingId]);
    await store.close();

    // The restarted hub resumes the pending route and delivers it once the payee countersigns.
    // Same port: the payer's client reconnects by itself.
    const again = await w.startHub({ storePath, more: { routeRetention, port: hub.port } });
    await holder.disconnect();
    await w.client(4);
    await waitFor(() => again.channels.get(hch.channelId)!.latest.state.paidByHub >= 3_000n, 10_000);
    expect(again.channels.get(hch.channelId)!.latest.state.paidByHub).toBe(3_000n);
    // The payer's payment resolves with the id of the route the pruner kept.
    await expect(held).resolves.toMatchObject({ paymentId: pendingId, amount: 3_000n });
  });
});
